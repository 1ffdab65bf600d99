"""The shape of the code, checked: imports point one way and never go round.

docs/design.md draws the rooms: ``web -> persistence -> actors`` for imports.
These tests read every module's imports (top-level, function-level and
``TYPE_CHECKING``-only alike) and fail on an import cycle or an arrow that
points the wrong way, so the shape cannot erode one convenient import at a
time.  They also check the runtime's public face (``from runyard.actors import ...``)
and that the code only ever names its rooms through the one installed package,
``runyard`` (``runyard.actors``, never a bare ``actors``).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runyard
from runyard import actors
from runyard.actors.code import child
from runyard.actors.code.agent import PACKAGE_ROOT

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("actors", "persistence", "web")
"""The top-level folders, installed as ``runyard.<room>`` (runyard/ links them in)."""
FORBIDDEN = {
    "actors": {"web", "persistence"},
    "persistence": {"web"},
}
PYTHON_FOLDERS = (*ROOMS, "tests", "bench")
"""Everything that imports the rooms; the scripts of tests/ and bench/ included."""
BARE_MODULE_STRING = re.compile(r"(?:actors|web|persistence)(?:\.\w+)+(?::\w+)?")


def _room(module: str) -> str:
    """``runyard.web.app`` -> ``web``; ``runyard`` itself belongs to no room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    parts = ["runyard", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    modules = {_module_name(path): path for room in ROOMS for path in (ROOT / room).rglob("*.py")}
    modules["runyard"] = ROOT / "runyard" / "__init__.py"
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, resolved to the longest known module."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_type_only() -> None:
    assert _cycles(_graph()) == []


def test_imports_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _room(target) in FORBIDDEN.get(_room(module), set())
    ]
    assert wrong == []


def test_the_runtime_is_not_imported_through_its_own_facade() -> None:
    # Inside the package, `from runyard.actors import X` would tie every module to all the others.
    inside = [
        m
        for m, targets in _graph().items()
        if m.startswith("runyard.actors.") and "runyard.actors" in targets
    ]
    assert inside == []


def test_pykka_private_names_stay_in_the_asyncio_actor() -> None:
    users = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if ("pykka._" in text or "_ActorStop" in text) and name != "runyard.actors.asyncio_actor":
            users.append(name)
    assert users == []


@pytest.mark.parametrize("name", actors.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(actors, name)
    assert value is not None
    assert name in dir(actors)


def test_the_facade_is_lazy_and_refuses_unknown_names() -> None:
    with pytest.raises(AttributeError, match=r"'runyard\.actors' has no attribute 'Nope'"):
        _ = actors.Nope  # type: ignore[attr-defined]
    assert child.__name__ == "runyard.actors.code.child"


def test_one_package_holds_the_rooms() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", runyard.__version__)
    for room in ROOMS:
        module = importlib.import_module(f"runyard.{room}")
        # Through the runyard/ symlinks: never a second copy under a bare name.
        assert Path(module.__file__ or "").parent == ROOT / "runyard" / room
    assert (ROOT / "runyard" / "__init__.py").is_file()
    assert Path(PACKAGE_ROOT) == ROOT  # the directory holding runyard/


def _names_a_room(name: str) -> bool:
    """``web``, ``web.<module>``, ``web.<module>:<name>``: a bare room name (a real module's)."""
    room, _, rest = name.split(":")[0].partition(".")
    if room not in ROOMS:
        return False
    first = rest.split(".")[0]
    return not first or (ROOT / room / f"{first}.py").is_file() or (ROOT / room / first).is_dir()


def _bare_names(path: Path) -> list[str]:
    """Imports of a bare room name (``import web``, ``from actors.<module> import``) and
    strings naming a module by one (``"web.<module>:main"``), as ``path:line: name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if BARE_MODULE_STRING.fullmatch(node.value):
                names = [node.value]
        else:
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        found += [f"{where}: {name}" for name in names if _names_a_room(name)]
    return found


def test_nothing_names_a_room_without_runyard() -> None:
    # Only runyard is installed: `import web` would break in a wheel, or load a
    # second copy of a module (two registries, two sets of classes) from the tree.
    files = [path for folder in PYTHON_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    assert len(files) > 100
    bare = [hit for path in files for hit in _bare_names(path)]
    assert bare == []


@pytest.mark.timeout(30)
def test_the_run_code_bootstrap_imports_the_child_and_nothing_of_the_server() -> None:
    # The child's real bootstrap, ending with a list of what it loaded instead of main().
    assert "from runyard.actors.code.child import main" in child.BOOTSTRAP
    bootstrap = child.BOOTSTRAP.replace(
        "main(int(sys.argv[2]))\n", "print(' '.join(sorted(sys.modules)))\n"
    )
    assert bootstrap != child.BOOTSTRAP
    done = subprocess.run(
        [sys.executable, "-I", "-c", bootstrap, PACKAGE_ROOT, "0"],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "runyard.actors.code.child" in loaded
    server = {
        name
        for name in loaded
        if name.split(".")[0] in {*ROOMS, "pykka", "fastapi", "starlette", "aiocouch"}
        or name.startswith(("runyard.web", "runyard.persistence", "runyard.actors.runtime"))
    }
    assert server == set()


def test_only_the_web_layer_imports_the_metrics_library() -> None:
    # The runtime and the stores keep plain numbers; web/metrics.py turns them into metrics.
    wrong = []
    for name, path in _modules().items():
        if name.startswith("runyard.web."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            wrong += [f"{name} imports {t}" for t in targets if t.startswith("prometheus_client")]
    assert wrong == []
