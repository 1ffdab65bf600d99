"""What a built wheel installs: the one ``runyard`` package, never a generic top-level name.

The repository keeps ``actors/``, ``web/`` and ``persistence/`` at its top level
and links them into ``runyard/`` with relative symlinks; these tests build a
real wheel from a copy of the tree (pip and the venv's setuptools, no network)
and check the build followed the links: every source file is in the wheel as
``runyard/<room>/...``, nothing else is at the top, the console script points
into ``runyard``, and the run-code child starts from the unpacked wheel alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import runyard

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("actors", "web", "persistence")
SOURCES = ("pyproject.toml", "README.md", "runyard", *ROOMS)
"""What the build reads; copied so that it writes build/ and *.egg-info elsewhere."""
DIST_INFO = f"runyard-{runyard.__version__}.dist-info"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    out = tmp_path_factory.mktemp("wheel")
    skip = shutil.ignore_patterns("__pycache__")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(ROOT / name, source / name)
    assert (source / "runyard" / "web").is_symlink()  # the copy keeps the links, as git does
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--wheel-dir", str(out), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    built = list(out.glob("runyard-*.whl"))
    assert len(built) == 1, built
    return zipfile.ZipFile(built[0])


def test_the_wheel_installs_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"runyard", DIST_INFO}
    assert wheel.read(f"{DIST_INFO}/top_level.txt").decode().split() == ["runyard"]


def test_every_source_file_is_in_the_wheel_under_runyard(wheel: zipfile.ZipFile) -> None:
    own = {f"runyard/{p.name}" for p in (ROOT / "runyard").glob("*.py")}
    expected = own | {
        f"runyard/{path.relative_to(ROOT).as_posix()}"
        for room in ROOMS
        for path in (ROOT / room).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    packaged = {name for name in wheel.namelist() if not name.startswith(DIST_INFO)}
    assert packaged == expected
    # Real files (the links were followed), the dashboard's static files included.
    index = (ROOT / "web" / "static" / "index.html").read_bytes()
    assert wheel.read("runyard/web/static/index.html") == index


def test_the_metadata_names_the_version_and_the_console_script(wheel: zipfile.ZipFile) -> None:
    metadata = wheel.read(f"{DIST_INFO}/METADATA").decode()
    assert f"\nVersion: {runyard.__version__}\n" in metadata
    scripts = wheel.read(f"{DIST_INFO}/entry_points.txt").decode()
    assert "runyard = runyard.web.cli:main" in scripts.splitlines()


def test_the_run_code_child_starts_from_the_unpacked_wheel(
    wheel: zipfile.ZipFile, tmp_path: Path
) -> None:
    wheel.extractall(tmp_path)
    # What agent.py computes in an install: the directory holding runyard/.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import runyard, runyard.actors.code.child as child\n"
        "from runyard.actors.code.agent import PACKAGE_ROOT\n"
        "print(runyard.__version__, child.__file__, PACKAGE_ROOT)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version, child_file, package_root = done.stdout.split()
    assert version == runyard.__version__
    assert Path(child_file) == tmp_path / "runyard" / "actors" / "code" / "child.py"
    assert Path(package_root) == tmp_path
