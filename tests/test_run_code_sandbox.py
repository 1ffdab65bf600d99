"""run-code under Landlock (runyard.actors.code.sandbox): what the child can no longer reach.

Real children through a real runtime (``tests.run_code_helpers``).  Each
probe in the submitted code returns the exception's type name (or "ok"), so
a failed expectation shows what actually happened.  The test process itself
is never restricted: only ``abi_version`` (a query) and ``rules`` (a list)
run here.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runyard.actors.code import agent as agent_module
from runyard.actors.code import sandbox
from runyard.actors.code.agent import PACKAGE_ROOT, CodeSettings
from tests.run_code_helpers import SETTINGS, code_runtime, of_type, run_code


def _abi() -> int:
    try:
        return sandbox.abi_version()
    except sandbox.Unavailable:
        return 0


ABI = _abi()
HAS_SHADOW = Path("/etc/shadow").exists()
needs_landlock = pytest.mark.skipif(ABI < 1, reason="this kernel has no Landlock")

PROBES = """
import os, subprocess, sys, threading

def probe(f):
    try:
        f()
    except BaseException as exc:
        return type(exc).__name__
    return "ok"

def read(path):
    return lambda: open(path, "rb").read()

async def run(input_dict, ctx):
    out = {name: probe(read(path)) for name, path in input_dict["files"].items()}
    out["kill_server"] = probe(lambda: os.kill(input_dict["server_pid"], 0))
    seen = {}
    t = threading.Thread(target=lambda: seen.update(r=probe(read(input_dict["files"]["repo"]))))
    t.start()
    t.join()
    out["thread_reads_repo"] = seen["r"]
    cat = subprocess.run(
        [sys.executable, "-c", "import sys; open(sys.argv[1]).read()", input_dict["files"]["repo"]],
        capture_output=True,
    )
    out["subprocess_reads_repo"] = "ok" if cat.returncode == 0 else "failed"
    return out
"""


def probe_input(tmp_path: Path) -> dict[str, Any]:
    data_dir = tmp_path / "runyard-data"
    data_dir.mkdir()
    (data_dir / "session.key").write_text("s3cret-session-key")
    return {
        "files": {
            "data_dir": str(data_dir / "session.key"),
            "repo": str(Path(PACKAGE_ROOT) / "pyproject.toml"),
            "repo_source": str(Path(PACKAGE_ROOT) / "actors" / "code" / "agent.py"),
            "server_environ": f"/proc/{os.getpid()}/environ",
            "server_mem": f"/proc/{os.getpid()}/mem",
            "shadow": "/etc/shadow",
        },
        "server_pid": os.getpid(),
    }


@pytest.mark.anyio
@needs_landlock
@pytest.mark.timeout(30)
async def test_the_child_cannot_reach_the_servers_files_environment_or_signals(
    tmp_path: Path,
) -> None:
    async with code_runtime() as runtime:
        record, events = await run_code(runtime, PROBES, probe_input(tmp_path))
        assert record.status == "success", record.error
        out = record.result
        assert isinstance(out, dict)
        assert out["data_dir"] == "PermissionError"
        assert out["repo"] == "PermissionError"
        assert out["repo_source"] == "PermissionError"
        assert out["server_environ"] == "PermissionError"
        assert out["server_mem"] == "PermissionError"
        if HAS_SHADOW:
            assert out["shadow"] == "PermissionError"
        # Threads and processes the code starts inherit the restriction.
        assert out["thread_reads_repo"] == "PermissionError"
        assert out["subprocess_reads_repo"] == "failed"
        if ABI >= 6:
            assert out["kill_server"] == "PermissionError"
        # Sandboxed by default, and a sandboxed run's trace gets no extra event.
        assert of_type(events, "sandbox") == []


@pytest.mark.anyio
@needs_landlock
@pytest.mark.timeout(30)
async def test_sandboxed_code_still_imports_writes_its_cwd_prints_and_logs() -> None:
    code = """
import asyncio, json, logging, os, ssl, subprocess, sys, tempfile

async def run(input_dict, ctx):
    import httpx  # a third-party package from site-packages, imported after the lock

    ssl.create_default_context()  # the CA bundle under /etc/ssl or /usr
    with open("notes.txt", "w") as f:
        f.write("kept")
    with tempfile.NamedTemporaryFile("w", delete=False) as tmp:  # TMPDIR is the cwd
        tmp.write("tmp")
    with open(os.devnull, "w") as null:
        null.write("discarded")
    child = subprocess.run(
        [sys.executable, "-c", "import json; print(json.dumps([1]))"],
        capture_output=True, text=True,
    )
    print("hello from the sandbox")
    logging.getLogger("agent").warning("still logging")
    ctx.emit("progress", pct=100)
    await asyncio.sleep(0)
    return {
        "httpx": bool(httpx.__version__),
        "notes": open("notes.txt").read(),
        "tmp_in_cwd": os.path.dirname(tmp.name) == os.getcwd(),
        "child": child.stdout.strip(),
        "own_proc": open("/proc/self/status").read().startswith("Name:"),
        "random": len(os.urandom(8)),
    }
"""

    async with code_runtime(CodeSettings(memory_mib=256, announce_sandbox=True)) as runtime:
        record, events = await run_code(runtime, code)
        assert record.status == "success", record.error
        assert record.result == {
            "httpx": True,
            "notes": "kept",
            "tmp_in_cwd": True,
            "child": "[1]",
            "own_proc": True,
            "random": 8,
        }
        assert [e.type for e in events] == ["sandbox", "stdout", "log", "progress", "done"]
        assert events[0].data == {"landlock": f"abi {ABI}"}
        assert events[1].data == {"stream": "stdout", "text": "hello from the sandbox\n"}
        assert events[2].data["message"] == "still logging"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_without_landlock_the_run_works_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agent_module, "_sandbox_noted", set())
    caplog.set_level(logging.INFO, logger="runyard.actors.code.agent")
    for sub in ("0", "1"):
        (tmp_path / sub).mkdir()

    async with code_runtime(CodeSettings(memory_mib=256, landlock="off")) as runtime:
        for i in range(2):
            record, events = await run_code(runtime, PROBES, probe_input(tmp_path / str(i)))
            assert record.status == "success", record.error
            assert isinstance(record.result, dict)
            assert record.result["repo"] == "ok"  # the gap Landlock closes
            assert events[0].type == "sandbox"
            assert events[0].data == {"landlock": "unavailable: turned off (CodeSettings.landlock)"}

    warnings = [r for r in caplog.records if "WITHOUT Landlock" in r.getMessage()]
    assert len(warnings) == 1  # once per server, not once per run
    assert warnings[0].levelno == logging.WARNING


@pytest.mark.timeout(10)
def test_an_unavailable_kernel_degrades_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_landlock(libc: object = None) -> int:
        raise sandbox.Unavailable("landlock_create_ruleset(version): the kernel has no Landlock")

    monkeypatch.setattr(sandbox, "abi_version", no_landlock)
    status = sandbox.apply("/nonexistent", ())
    assert status == "unavailable: landlock_create_ruleset(version): the kernel has no Landlock"


@pytest.mark.timeout(10)
def test_rules_never_grant_a_directory_holding_a_hidden_path(tmp_path: Path) -> None:
    prefix = os.path.realpath(sys.prefix)
    granted = dict(sandbox.rules(str(tmp_path), [PACKAGE_ROOT, os.path.join(prefix, "data")]))
    for path in granted:
        assert not sandbox._contains(path, os.path.realpath(PACKAGE_ROOT)), path
    assert prefix not in granted
    assert granted[os.path.realpath(tmp_path)] == -1  # the run's own directory: everything
    assert "/etc" not in granted  # only named files and directories of /etc
    assert "/" not in granted


@pytest.mark.timeout(10)
def test_rights_and_scopes_follow_the_abi() -> None:
    assert sandbox.fs_rights(1) == (1 << 13) - 1
    assert sandbox.fs_rights(2) & sandbox.REFER
    assert not sandbox.fs_rights(2) & sandbox.TRUNCATE
    assert sandbox.fs_rights(4) == sandbox.fs_rights(3)
    assert sandbox.fs_rights(7) == (1 << 16) - 1
    assert sandbox.scopes(5) == 0
    assert sandbox.scopes(6) == sandbox.SCOPE_SIGNAL | sandbox.SCOPE_ABSTRACT_UNIX_SOCKET


@pytest.mark.timeout(10)
def test_settings_default_to_landlock() -> None:
    assert SETTINGS.landlock == "auto"
    assert CodeSettings().announce_sandbox is False


PRELOAD_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void mark(void) {
    const char *path = getenv("RUNYARD_TEST_MARK");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) { fputs("loaded before the sandbox\n", f); fclose(f); }
}
"""


@pytest.fixture
def preload_library(tmp_path: Path) -> Path:
    """A shared library that, once loaded, writes ``$RUNYARD_TEST_MARK`` (built with ``cc``)."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the preload library")
    source = tmp_path / "mark.c"
    source.write_text(PRELOAD_C)
    library = tmp_path / "libmark.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    return library


@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool_size", [0, 2])
async def test_a_request_env_cannot_load_code_before_the_sandbox(
    tmp_path: Path, preload_library: Path, pool_size: int
) -> None:
    """``LD_PRELOAD`` in the request's env must not run code ahead of Landlock.

    The dynamic loader reads the environment a process is started with, so
    children start with a neutral one and take the run's env from the job,
    inside the already-running interpreter, pooled or not.
    """
    mark = tmp_path / "mark.txt"
    env = {"LD_PRELOAD": str(preload_library), "RUNYARD_TEST_MARK": str(mark)}
    code = "import os\nasync def run(input_dict, ctx):\n    return os.environ['LD_PRELOAD']\n"

    async with code_runtime(CodeSettings(memory_mib=256, pool_size=pool_size)) as runtime:
        record, _ = await run_code(runtime, code, env=env)
        assert record.status == "success", record.error
        assert record.result == str(preload_library)  # the code still sees its env

    assert not mark.exists(), "the preload library ran in the child before the sandbox"
