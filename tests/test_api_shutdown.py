"""Graceful shutdown of ``runyard serve`` (a real process, a real SIGTERM).

New starts get 503 while live runs get ``RUNYARD_SHUTDOWN_GRACE_S`` to
finish; what is still running then is stopped with "server shutdown" and
recorded; open streams end with ``done``; the process exits 0.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import assert_error, get_run, start
from tests.live_server import ServerProcessFactory
from tests.sse_frames import done_of, iter_frames, open_stream

pytestmark = pytest.mark.server

GRACE_S = 2.5


@pytest.mark.timeout(60)
def test_sigterm_drains_live_runs_then_exits_and_the_store_remembers(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    proc = server_process(
        tmp_path,
        RUNYARD_SHUTDOWN_GRACE_S=str(GRACE_S),
        RUNYARD_STOP_GRACE_S="0.5",
        RUNYARD_HEARTBEAT_S="0.3",
    )
    with proc.client("alice") as alice:
        sleeper = start(alice, "sleeper", seconds=300)
        with open_stream(alice, sleeper) as es:
            it = iter_frames(es)
            assert [next(it).event, next(it).event] == ["run", "sleeping"]
            # A short run that fits in the grace: it must finish on its own.
            short = start(alice, "ticker", n=4, interval=0.1)

            proc.signal(signal.SIGTERM)
            signalled = time.monotonic()
            with httpx.Client(base_url=proc.base_url, timeout=5) as other:
                other.headers["Authorization"] = alice.headers["Authorization"]
                resp = other.post("/runs", json={"agent": "echo", "input_dict": {}})
                assert_error(resp, 503, "shutting_down")
                assert other.get("/readyz").status_code == 503
                assert get_run(other, sleeper)["status"] == "running"  # reads still answer
            rest = list(it)
            stream_ended = time.monotonic() - signalled

        assert rest, "the stream ended without a final frame"
        assert [f.event for f in rest][-2:] == ["stop_requested", "done"]
        assert done_of(rest) == {
            "status": "stopped",
            "result": None,
            "error": "server shutdown",
        }
        # The sleeper was given the grace before it was stopped.
        assert stream_ended >= GRACE_S - 0.2, stream_ended

    code = proc.wait(timeout=20)
    exited = time.monotonic() - signalled
    assert code == 0, proc.output()
    assert exited < GRACE_S + 10, exited

    again = server_process(tmp_path)
    with again.client("alice") as alice:
        run = get_run(alice, sleeper)
        assert (run["status"], run["error"]) == ("stopped", "server shutdown")
        assert run["events"][-1]["type"] == "done"
        assert run["finished_at"] is not None
        finished = get_run(alice, short)
        assert finished["status"] == "success", finished
        assert finished["result"] == {"ticks": 4}
        listed = {r["run_id"]: r["status"] for r in alice.get("/runs").json()["runs"]}
        assert listed == {sleeper: "stopped", short: "success"}
    again.signal(signal.SIGTERM)
    assert again.wait(timeout=20) == 0


@pytest.mark.timeout(60)
def test_a_second_signal_exits_at_once(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    proc = server_process(tmp_path, RUNYARD_SHUTDOWN_GRACE_S="60")
    with proc.client("alice") as alice:
        run_id = start(alice, "sleeper", seconds=300)
    proc.signal(signal.SIGTERM)
    with httpx.Client(base_url=proc.base_url, timeout=5) as client:
        # Draining (not exiting): it still answers, and refuses new runs.
        client.headers["Authorization"] = "Bearer alice-token"
        resp = client.post("/runs", json={"agent": "echo", "input_dict": {}})
        assert_error(resp, 503, "shutting_down")
    signalled = time.monotonic()
    proc.signal(signal.SIGTERM)
    proc.wait(timeout=20)  # no thread or connection may hold the process
    assert time.monotonic() - signalled < 10

    # The run was cut off without its grace; the next start says so instead of
    # leaving it `running` forever.
    again = server_process(tmp_path)
    with again.client("alice") as alice:
        run = get_run(alice, run_id)
        assert run["status"] == "error", run
        assert run["error"].startswith("interrupted"), run
        assert run["events"][-1]["type"] == "done"
        assert run["finished_at"] is not None
    again.signal(signal.SIGTERM)
    assert again.wait(timeout=20) == 0
