"""run-code isolation: a stop reaches every process the code started; what it cannot see.

Real children through a real runtime (:func:`tests.run_code_helpers.code_runtime`).
The escaping code is what an attacker wrote: ``setsid()`` and a double fork,
so the grandchild is in no process group of the run; it then holds the
child's stdout/stderr.  Processes are found from outside by a marker in
their command line (inside a PID namespace the pids the code sees mean
nothing out here).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from runyard.actors.code import isolation
from runyard.actors.code.agent import PACKAGE_ROOT, CodeSettings
from runyard.actors.messages import StartRun, StopRun, Subscribe
from tests.run_code_helpers import code_runtime, marked_processes, next_event, of_type, run_code
from tests.runtime_helpers import ALICE, collect
from tests.waiting import wait_until, wait_until_async

ESCAPE = """
import os

async def run(input_dict, ctx):
    r, w = os.pipe()  # close-on-exec: EOF once the grandchild has exec'd
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep-{marker}", "600"])
        os._exit(0)
    os.close(w)
    os.wait()
    os.read(r, 1)
    print("escaped", flush=True)
    ctx.emit("escaped")
    await ctx.sleep(60)
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def escape_and_stop(runtime: Any, marker: str) -> str:
    started = await runtime.ask(StartRun(ALICE, "run-code", code=ESCAPE.format(marker=marker)))
    sub = await runtime.ask(Subscribe(ALICE, started.run_id))
    await next_event(sub, "escaped")
    assert len(marked_processes(marker)) == 1, "the detached grandchild runs"
    await runtime.ask(StopRun(ALICE, started.run_id))
    _, terminal = await collect(sub)
    return str(terminal.record.status)


@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("namespaces", ["auto", "off"])
async def test_a_detached_grandchild_dies_with_its_stopped_run_and_frees_the_fds(
    namespaces: str,
) -> None:
    """Both ways (PID namespace; the keeper's subreaper without one): nothing outlives the stop."""
    settings = CodeSettings(memory_mib=256, namespaces=namespaces)  # type: ignore[arg-type]
    marker = f"runyard-escape-{uuid.uuid4().hex}"
    async with code_runtime(settings) as runtime:
        await run_code(runtime, "async def run(input_dict, ctx):\n    return 1\n")  # warm up
        before = open_fds()
        for _ in range(5):
            assert await escape_and_stop(runtime, marker) == "stopped"
        await wait_until_async(
            lambda: not marked_processes(marker), timeout=10, what="every grandchild to die"
        )
        # The pool's replacement children hold their own pipes: allow those, not 5 runs' worth.
        await wait_until_async(
            lambda: open_fds() <= before + 2, timeout=10, what="the server's fds to come back"
        )


PROBE = """
import os, socket

def read(path):
    try:
        return open(path).read()
    except OSError as exc:
        return f"refused: {type(exc).__name__}"

def pids():
    try:
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return []

async def run(input_dict, ctx):
    try:
        socket.create_connection(("127.0.0.1", input_dict["port"]), timeout=2).close()
        reached = "yes"
    except OSError as exc:
        reached = f"no: {exc}"
    return {
        "tcp": read("/proc/net/tcp"),
        "unix": read("/proc/net/unix"),
        "mountinfo": read("/proc/self/mountinfo"),
        "pids": pids(),
        "reached": reached,
    }
"""


def listening_port() -> tuple[socket.socket, str]:
    """A listening socket of the server's namespace, and its port as /proc/net/tcp shows it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, f":{sock.getsockname()[1]:04X}"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_code_cannot_see_other_connections_or_the_mount_table() -> None:
    listener, _ = listening_port()
    with listener:
        async with code_runtime(CodeSettings(memory_mib=256, announce_sandbox=True)) as runtime:
            record, events = await run_code(runtime, PROBE, {"port": listener.getsockname()[1]})
    assert record.status == "success", record.error
    seen = record.result
    assert isinstance(seen, dict)
    for key in ("tcp", "unix", "mountinfo"):
        assert str(seen[key]).startswith("refused"), (key, str(seen[key])[:200])
    (report,) = of_type(events, "sandbox")
    assert report["namespaces"] == "pid mount"
    assert report["network"] == "on"
    assert seen["reached"] == "yes", "network on by default: agents call APIs"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_without_landlock_namespaces_still_hide_sockets_and_processes() -> None:
    """No Landlock and no network: /proc/net and /proc are the sandbox's own."""
    listener, port_hex = listening_port()
    settings = CodeSettings(memory_mib=256, landlock="off", network=False)
    with listener:
        async with code_runtime(settings) as runtime:
            record, events = await run_code(runtime, PROBE, {"port": listener.getsockname()[1]})
    assert record.status == "success", record.error
    seen = record.result
    assert isinstance(seen, dict)
    assert port_hex not in str(seen["tcp"]), "the server's listening socket is visible"
    assert str(seen["tcp"]).count("\n") == 1, seen["tcp"]  # the header line only
    assert os.getpid() not in seen["pids"]
    assert len(seen["pids"]) <= 3, seen["pids"]  # init, the runner, maybe a short-lived one
    assert str(seen["reached"]).startswith("no"), seen["reached"]
    (report,) = of_type(events, "sandbox")  # announced: Landlock is off
    assert report["namespaces"] == "pid mount net"
    assert report["network"] == "off"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_required_namespaces_refuse_to_run_without_them() -> None:
    settings = CodeSettings(memory_mib=256, namespaces="off")
    required = CodeSettings(memory_mib=256, namespaces="require")
    async with code_runtime(settings) as runtime:
        record, events = await run_code(runtime, "async def run(input_dict, ctx):\n    return 1\n")
    assert record.status == "success"
    (report,) = of_type(events, "sandbox")  # announced: no namespace
    assert report["namespaces"].startswith("unavailable: turned off")
    async with code_runtime(required) as runtime:
        record, _ = await run_code(runtime, "async def run(input_dict, ctx):\n    return 1\n")
    assert record.status == "success", "namespaces are available here"


def test_options_travel_as_one_argv_word() -> None:
    assert isolation.parse_options(isolation.argv_options(False, "require")) == ("require", False)
    assert isolation.parse_options(isolation.argv_options(True, "off")) == ("off", True)
    assert isolation.parse_options(None) == ("auto", True)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_code_holds_no_capability_even_when_the_server_is_root() -> None:
    code = """
async def run(input_dict, ctx):
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
    return {"eff": status["CapEff"], "bnd": status["CapBnd"], "prm": status["CapPrm"]}
"""
    async with code_runtime() as runtime:
        record, _ = await run_code(runtime, code)
    assert record.status == "success", record.error
    seen = record.result
    assert isinstance(seen, dict)
    assert int(seen["eff"], 16) == int(seen["prm"], 16) == 0
    # An empty bounding set: a program the code starts as root gains nothing either.
    assert int(seen["bnd"], 16) == 0


USERNS_PROBE = """
import os, socket, sys
sys.path.insert(0, sys.argv[1])  # (-c: argv[0] is "-c")
from runyard.actors.code import isolation
a, b = socket.socketpair()
contained = isolation.contain("auto", network=False, close_in_helpers=(b.fileno(),))
print(contained.namespaces, contained.network, contained.capabilities, sep="|", flush=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", [sys.argv[2], "300"])
    os._exit(0)
os.wait()
os._exit(3)
"""


@pytest.mark.timeout(30)
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not Path("/usr/bin/python3").exists(),
    reason="needs root (to become nobody), setpriv and a system python3",
)
def test_an_unprivileged_server_gets_a_user_namespace() -> None:
    """As ``nobody``: a user namespace carries the others; the exit code and the kill still hold."""
    marker = f"sleep-runyard-userns-{uuid.uuid4().hex}"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run(
        [*nobody, "/usr/bin/python3", "-c", USERNS_PROBE, PACKAGE_ROOT, marker],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if "Operation not permitted; in a new user namespace" in done.stdout:
        pytest.skip(f"this kernel refuses unprivileged user namespaces: {done.stdout}")
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "user pid mount net|off|none", done.stdout
    wait_until(lambda: not marked_processes(marker), 5, "the detached grandchild to die")
