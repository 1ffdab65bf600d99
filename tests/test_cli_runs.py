"""``runyard runs ...`` and ``runyard --version``: the console script against a real server.

Each command is the installed console script in a subprocess, as a person
or a shell script runs it, talking HTTP to a live server (through a
:class:`~tests.tcp_proxy.TcpProxy` where the path must drop).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.live_server import TOKENS, LiveServer, LiveServerFactory
from tests.phased_agent import drop_twice_mid_run, phased_catalog
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.server

SCRIPT = Path(sys.executable).parent / "runyard"


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(app_kwargs={"catalog": phased_catalog()})


def environment(url: str | None, token: str | None = TOKENS["alice"]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
    if url is not None:
        env["RUNYARD_URL"] = url
    if token is not None:
        env["RUNYARD_TOKEN"] = token
    return env


def runyard(
    *args: str, url: str | None = None, token: str | None = TOKENS["alice"], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.fail(f"console script missing: {SCRIPT} (pip install -e . declares it)")
    return subprocess.run(
        [str(SCRIPT), *args],
        env=environment(url, token),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The one-line message of a command that failed as it should."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("runyard: "), lines
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.timeout(30)
def test_version_names_the_installed_package() -> None:
    assert ok(runyard("--version")).strip() == f"runyard {metadata.version('runyard')}"


@pytest.mark.timeout(60)
def test_start_watch_ls_get_stop_rm_round_trip(live: LiveServer) -> None:
    url = live.base_url
    run_id = ok(runyard("runs", "start", "ticker", "--input", '{"n": 3, "interval": 0}', url=url))
    run_id = run_id.strip()
    assert len(run_id) == 32

    watched = ok(runyard("runs", "watch", run_id, url=url))
    lines = watched.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["1", "2", "3", "4"]
    assert lines[-1] == "finished: success"

    events = json_lines(ok(runyard("runs", "watch", run_id, "--json", "--after", "2", url=url)))
    assert [e["seq"] for e in events] == [3, 4]
    assert events[-1]["data"]["status"] == "success"

    table = ok(runyard("runs", "ls", "--agent", "ticker", url=url)).splitlines()
    assert table[0].split()[:3] == ["RUN", "ID", "AGENT"]
    assert any(line.startswith(run_id) and " success " in line for line in table[1:])
    listed = json.loads(ok(runyard("runs", "ls", "--json", "--status", "success", url=url)))
    assert run_id in [run["run_id"] for run in listed]
    assert all(run["status"] == "success" for run in listed)

    detail = ok(runyard("runs", "get", run_id, url=url))
    assert f"run id    {run_id}" in detail
    assert 'result    {"ticks":3}' in detail
    record = json.loads(ok(runyard("runs", "get", run_id, "--json", url=url)))
    assert [e["seq"] for e in record["events"]] == [1, 2, 3, 4]

    sleeping = ok(runyard("runs", "start", "sleeper", "--json", url=url))
    sleeper_id = json.loads(sleeping)["run_id"]
    assert ok(runyard("runs", "stop", sleeper_id, url=url)).strip() == f"stopping {sleeper_id}"
    stopped = runyard("runs", "watch", sleeper_id, url=url)
    assert stopped.returncode == 1, stopped.stderr  # the run did not succeed
    assert stopped.stdout.splitlines()[-1] == "finished: stopped (stopped by user)"

    assert ok(runyard("runs", "rm", run_id, url=url)).strip() == f"deleted {run_id}"
    gone = refused(runyard("runs", "get", run_id, url=url), 1)
    assert f"no run {run_id}" in gone
    assert "run_not_found" in gone


@pytest.mark.timeout(60)
def test_a_failed_run_and_a_code_run_exit_by_their_status(live: LiveServer, tmp_path: Path) -> None:
    url = live.base_url
    failed = runyard(
        "runs", "start", "failer", "--input", '{"message": "kaput"}', "--watch", url=url
    )
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1] == "finished: error (RuntimeError: kaput)"

    code = tmp_path / "agent.py"
    code.write_text("async def run(input_dict, ctx):\n    ctx.emit('hi', n=input_dict['n'])\n")
    result = runyard(
        "runs",
        "start",
        "mine",
        "--code",
        str(code),
        "--input",
        '{"n": 2}',
        "--watch",
        "--json",
        url=url,
    )
    lines = json_lines(ok(result))
    assert set(lines[0]) == {"run_id", "status"}
    assert [e["type"] for e in lines[1:]][-1] == "done"
    assert any(e["type"] == "hi" and e["data"] == {"n": 2} for e in lines[1:])


@pytest.mark.timeout(60)
def test_bad_input_is_one_line_and_exit_2(live: LiveServer, tmp_path: Path) -> None:
    url = live.base_url
    bad_json = refused(runyard("runs", "start", "echo", "--input", "{n: 1}", url=url), 2)
    assert "--input is not valid JSON" in bad_json
    not_object = refused(runyard("runs", "start", "echo", "--input", "[1, 2]", url=url), 2)
    assert "--input must be a JSON object" in not_object
    missing = refused(
        runyard("runs", "start", "x", "--code", str(tmp_path / "nope.py"), url=url), 2
    )
    assert "nope.py" in missing
    assert "No such file" in missing
    no_token = refused(runyard("runs", "ls", url=url, token=None), 2)
    assert "RUNYARD_TOKEN" in no_token
    negative = refused(runyard("runs", "ls", "--limit", "-1", url=url), 2)
    assert "--limit" in negative
    usage = runyard("runs", "frobnicate", url=url)
    assert usage.returncode == 2
    assert "invalid choice: 'frobnicate'" in usage.stderr


@pytest.mark.timeout(60)
def test_http_errors_print_the_servers_message(live: LiveServer) -> None:
    url = live.base_url
    unknown = refused(runyard("runs", "start", "nope", url=url), 1)
    assert "unknown agent 'nope'; known agents:" in unknown
    assert "unknown_agent" in unknown
    wrong = refused(runyard("runs", "ls", url=url, token="wrong"), 1)
    assert "401 unauthorized" in wrong
    run_id = ok(runyard("runs", "start", "echo", "--watch", url=url)).splitlines()[0]
    finished = refused(runyard("runs", "stop", run_id, url=url), 1)
    assert "already finished with status 'success'" in finished


@pytest.mark.timeout(30)
def test_an_unreachable_server_is_one_line() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused, and the port stays ours
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        line = refused(runyard("runs", "ls", url=url), 1)
    finally:
        sock.close()
    assert f"cannot reach {url}" in line


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_watch_resumes_after_drops_and_prints_exactly_1_to_n(live: LiveServer) -> None:
    gate = uuid.uuid4().hex
    start = runyard(
        "runs",
        "start",
        "phased",
        "--input",
        json.dumps({"phases": [5, 5, 5], "gate": gate}),
        url=live.base_url,
    )
    run_id = ok(start).strip()
    async with TcpProxy(live.port) as proxy:
        env = environment(f"http://127.0.0.1:{proxy.port}")
        lines: list[str] = []
        async with await anyio.open_process(
            [str(SCRIPT), "runs", "watch", run_id, "--json"], env=env
        ) as process:
            assert process.stdout is not None

            async def read() -> None:
                assert process.stdout is not None
                buffered = b""
                async for chunk in process.stdout:
                    buffered += chunk
                    *complete, buffered = buffered.split(b"\n")
                    lines.extend(line.decode() for line in complete)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read)
                await drop_twice_mid_run(live, proxy, run_id, gate, lines)
                with anyio.fail_after(30):
                    returncode = await process.wait()
    assert returncode == 0
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, 17))
    assert events[-1]["type"] == "done"
