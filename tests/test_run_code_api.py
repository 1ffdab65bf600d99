"""``/agents/run-code/start`` and ``/agents/run-code/stream`` against a real server.

The server is built by ``create_app`` with no ``code_agent`` argument, so
these tests also cover the default wiring.  Child-process behaviour in depth
(limits, crashes, output capture) is in ``tests/test_run_code.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from runyard.actors.code.agent import CodeSettings, make_code_agent
from tests.api_helpers import get_run, wait_finished
from tests.live_server import TOKENS, LiveServer, LiveServerFactory, make_settings
from tests.sse_frames import Frame, iter_frames
from tests.waiting import wait_until

pytestmark = pytest.mark.server

STOP_GRACE_S = 0.5

TICKER = """
import asyncio

async def run(input_dict, ctx):
    for i in range(input_dict["n"]):
        print("tick", i)
        ctx.emit("tick", i=i)
        await asyncio.sleep(input_dict["interval"])
    return {"ticks": input_dict["n"]}
"""


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(stop_grace_s=STOP_GRACE_S, heartbeat_s=0.2)


def start_code(client: httpx.Client, code: str, **body: Any) -> str:
    resp = client.post("/agents/run-code/start", json={"code": code, **body})
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "running"
    run_id: str = resp.json()["run_id"]
    assert resp.headers["location"] == f"/runs/{run_id}"
    return run_id


def events_of(run: dict[str, Any], type: str) -> list[dict[str, Any]]:
    return [e["data"] for e in run["events"] if e["type"] == type]


@pytest.mark.timeout(20)
def test_start_answers_202_at_once_and_the_run_finishes_in_the_background(
    alice: httpx.Client,
) -> None:
    run_id = start_code(alice, TICKER, input_dict={"n": 3, "interval": 0.01})
    run = wait_finished(alice, run_id)
    assert run["status"] == "success", run["error"]
    assert run["agent"] == "run-code"
    assert run["result"] == {"ticks": 3}
    assert run["input_dict"] == {"n": 3, "interval": 0.01}
    assert [d["i"] for d in events_of(run, "tick")] == [0, 1, 2]
    assert [d["text"] for d in events_of(run, "stdout")] == ["tick 0\n", "tick 1\n", "tick 2\n"]

    named = start_code(
        alice, TICKER, input_dict={"n": 1, "interval": 0}, agent_name="my-agent", max_duration_s=30
    )
    run = wait_finished(alice, named)
    assert run["agent"] == "my-agent"
    assert run["options"] == {"max_duration_s": 30, "code": TICKER}  # kept; env never is


@pytest.mark.timeout(20)
@pytest.mark.parametrize("endpoint", ["start", "stream"])
@pytest.mark.parametrize(
    ("code", "line", "reason"),
    [
        ("import asyncio\n\nasync def run(input_dict, ctx)\n    return 1\n", 3, "expected ':'"),
        ("x = 1\n", None, "no top-level `async def run(input_dict, ctx)`"),
        (
            "import os\n\n\ndef run(input_dict, ctx):\n    return 1\n",
            4,
            "`run` must be `async def run(input_dict, ctx)`, not a plain `def`",
        ),
    ],
)
def test_invalid_code_is_a_422_with_the_line_and_the_reason(
    live: LiveServer, endpoint: str, code: str, line: int | None, reason: str
) -> None:
    with live.client("bob") as bob:
        resp = bob.post(f"/agents/run-code/{endpoint}", json={"code": code})
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert error["code"] == "invalid_code"
        assert error["line"] == line
        assert error["reason"] == reason
        assert reason in error["message"]
        if line is not None:
            assert f"line {line}" in error["message"]
        # Refused before a run existed.
        assert bob.get("/runs").json()["runs"] == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"code": "async def run(a, b): pass", "env": {"BAD-NAME": "x"}}, "env"),
        ({"code": "async def run(a, b): pass", "env": {"OK": 1}}, "env.OK"),
        ({"code": ""}, "code"),
        ({"code": "async def run(a, b): pass", "agent": "x"}, "agent"),
        ({"code": "async def run(a, b): pass", "max_duration_s": 0}, "max_duration_s"),
    ],
)
def test_other_fields_are_validated(alice: httpx.Client, body: dict[str, Any], words: str) -> None:
    resp = alice.post("/agents/run-code/start", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "validation_error"
    assert words in resp.json()["error"]["message"]


@pytest.mark.timeout(20)
def test_stream_first_frame_carries_run_id_and_closing_it_leaves_the_run_running(
    alice: httpx.Client,
) -> None:
    body = {"code": TICKER, "input_dict": {"n": 20, "interval": 0.05}}
    seen: list[Frame] = []
    with connect_sse(alice, "POST", "/agents/run-code/stream", json=body) as es:
        assert es.response.status_code == 200
        assert es.response.headers["content-type"].startswith("text/event-stream")
        for frame in iter_frames(es):
            seen.append(frame)
            if frame.event == "tick":
                break  # the client goes away mid-run
    first = seen[0]
    assert first.event == "run"
    assert first.data["status"] == "running"
    assert first.data["agent"] == "run-code"
    run_id = first.data["run_id"]
    assert seen[-1].data["data"] == {"i": 0}

    assert get_run(alice, run_id)["status"] == "running"
    run = wait_finished(alice, run_id)
    assert run["status"] == "success", run["error"]
    assert [d["i"] for d in events_of(run, "tick")] == list(range(20))


@pytest.mark.timeout(20)
def test_stream_follows_the_run_to_done(alice: httpx.Client) -> None:
    body = {"code": TICKER, "input_dict": {"n": 2, "interval": 0}, "agent_name": "streamer"}
    with connect_sse(alice, "POST", "/agents/run-code/stream", json=body) as es:
        fs = list(iter_frames(es))
    assert fs[0].event == "run"
    assert fs[0].data["agent"] == "streamer"
    assert [f.event for f in fs[1:]] == ["stdout", "tick", "stdout", "tick", "done"]
    assert [f.seq for f in fs[1:]] == [1, 2, 3, 4, 5]
    assert fs[-1].data["data"]["status"] == "success"
    assert fs[-1].data["data"]["result"] == {"ticks": 2}


@pytest.mark.timeout(20)
def test_a_cpu_bound_run_is_stopped_within_the_grace_plus_one_second(
    alice: httpx.Client,
) -> None:
    code = """
async def run(input_dict, ctx):
    ctx.emit("spinning")
    while True:
        pass
"""
    run_id = start_code(alice, code)
    wait_until(lambda: events_of(get_run(alice, run_id), "spinning"), 10, "the child to spin")
    t0 = time.monotonic()
    resp = alice.post(f"/runs/{run_id}/stop")
    assert resp.status_code == 202, resp.text

    def finished() -> bool:
        return bool(get_run(alice, run_id)["status"] == "stopped")

    wait_until(finished, 10, "the run to stop")
    assert time.monotonic() - t0 < STOP_GRACE_S + 1.0


@pytest.mark.timeout(20)
def test_the_child_sees_the_request_env_and_no_server_secret(
    alice: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_TOKENS", "alice:leaked-token")
    monkeypatch.setenv("SECRET", "hunter2")
    code = "import os\nasync def run(input_dict, ctx):\n    return dict(os.environ)\n"
    run_id = start_code(alice, code, env={"GREETING": "hello"})
    run = wait_finished(alice, run_id)
    assert run["status"] == "success", run["error"]
    env = run["result"]
    assert env["GREETING"] == "hello"
    assert "RUNYARD_TOKENS" not in env
    assert "SECRET" not in env
    assert "leaked-token" not in str(env)
    assert "hunter2" not in str(env)


@pytest.mark.timeout(20)
def test_a_crash_is_reported_on_the_run(alice: httpx.Client) -> None:
    run_id = start_code(alice, "import os\nasync def run(input_dict, ctx):\n    os._exit(3)\n")
    run = wait_finished(alice, run_id)
    assert run["status"] == "error"
    assert run["error"] == "ChildCrashed: child exited with code 3"


@pytest.mark.timeout(20)
def test_both_endpoints_are_in_the_openapi_schema(live: LiveServer) -> None:
    schema = httpx.get(
        f"{live.base_url}/openapi.json", headers={"Authorization": f"Bearer {TOKENS['alice']}"}
    ).json()
    start = schema["paths"]["/agents/run-code/start"]["post"]
    stream = schema["paths"]["/agents/run-code/stream"]["post"]
    assert {"202", "401", "422"} <= set(start["responses"])
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "line" in start["responses"]["422"]["description"]
    request = schema["components"]["schemas"]["RunCodeRequest"]
    assert set(request["properties"]) == {
        "code",
        "input_dict",
        "agent_name",
        "env",
        "max_duration_s",
        "output_schema",
        "workspace",
    }
    assert request["required"] == ["code"]


READ_FILES = """
async def run(input_dict, ctx):
    outcome = {}
    for path in input_dict["paths"]:
        try:
            with open(path, "rb") as f:
                outcome[path] = f"read {len(f.read())} bytes"
        except OSError as exc:
            outcome[path] = type(exc).__name__
    return outcome
"""


@pytest.mark.timeout(30)
def test_submitted_code_cannot_read_the_servers_store_or_session_key(
    live: LiveServer, alice: httpx.Client
) -> None:
    from runyard.actors.code.sandbox import Unavailable, abi_version

    try:
        abi_version()  # the kernel decides what can be enforced
    except Unavailable as exc:
        pytest.skip(f"no Landlock here ({exc}); docs/run-code.md describes the fallback")
    data_dir = live.settings.data_dir
    private = [str(data_dir / "runs.sqlite3"), str(data_dir / "session.key")]
    assert all(Path(p).exists() for p in private)  # they are there to be read
    run_id = start_code(alice, READ_FILES, input_dict={"paths": private})
    record = wait_finished(alice, run_id)
    assert record["status"] == "success", record["error"]
    assert record["result"] == {p: "PermissionError" for p in private}


@pytest.mark.timeout(30)
def test_server_shutdown_kills_and_reaps_the_idle_pre_started_children(tmp_path: Path) -> None:
    factory = make_code_agent(CodeSettings(memory_mib=256, pool_size=2))
    assert factory.pool is not None
    pool = factory.pool
    with LiveServer(make_settings(tmp_path), code_agent=factory) as server:
        with server.client("alice") as alice:
            run_id = start_code(alice, TICKER, input_dict={"n": 1, "interval": 0})
            assert wait_finished(alice, run_id)["status"] == "success"
        # The first run started the pool; it is topped up in the background.
        wait_until(lambda: len(pool.idle_pids) == 2, 10, "two idle children")
        pids = pool.idle_pids
        assert all(_alive(pid) for pid in pids)
    assert pool.idle_pids == []
    assert not any(_alive(pid) for pid in pids), "idle children outlived the server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # gone, and reaped (a zombie would still answer)
    return True
