"""A crash must not leave runs `running` forever, nor lose more than the last checkpoint."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from httpx_sse import connect_sse

from tests.live_server import ServerProcessFactory
from tests.waiting import wait_until

pytestmark = pytest.mark.server

INTERRUPTED = "interrupted: node n1 stopped before the run finished"


def stored_event_count(db: Path, run_id: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0])


@pytest.mark.timeout(90)
def test_kill_9_mid_run_leaves_the_run_interrupted_with_its_checkpointed_events(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    server = server_process(tmp_path, RUNYARD_NODE_ID="n1")
    db = tmp_path / "runs.sqlite3"
    with server.client() as client:
        run_id = client.post(
            "/runs", json={"agent": "ticker", "input_dict": {"n": 100000, "interval": 0.01}}
        ).json()["run_id"]
        # The store, read directly, has a checkpoint with a good part of the trace.
        wait_until(lambda: stored_event_count(db, run_id) >= 20, 30, "20 stored events")
    server.signal(signal.SIGKILL)
    server.wait(10)
    checkpointed = stored_event_count(db, run_id)

    # The same listening socket: the restarted server answers on the same port.
    again = server_process(tmp_path, listener=server.listener, RUNYARD_NODE_ID="n1")
    assert again.port == server.port
    with again.client() as client:
        record = client.get(f"/runs/{run_id}").json()
        assert record["status"] == "error"
        assert record["error"] == INTERRUPTED
        seqs = [e["seq"] for e in record["events"]]
        assert seqs == list(range(1, len(seqs) + 1)), "the trace stays dense"
        assert len(seqs) == checkpointed + 1, "checkpointed events plus the closing done"
        assert record["events"][-1]["type"] == "done"
        assert record["events"][-1]["data"]["error"] == INTERRUPTED

        listed = client.get("/runs", params={"status": "running"}).json()["runs"]
        assert listed == [], "nothing stays running after a restart"

        with connect_sse(client, "GET", f"/runs/{run_id}/stream") as stream:
            frames = [(sse.event, sse.id) for sse in stream.iter_sse()]
        assert frames[0][0] == "run"
        assert frames[-1] == ("done", str(len(seqs)))
        assert len(frames) == len(seqs) + 1
    again.signal(signal.SIGTERM)
    assert again.wait(30) == 0
    # runyard's own log lines reach the operator, next to uvicorn's.
    assert "runyard.runtime: marked 1 interrupted run(s) as error" in again.output()
