"""Runs over REST against a real server: start, read, list, stop, delete, ops, health."""

from __future__ import annotations

import re
import time
from datetime import datetime

import httpx
import pytest

from tests.api_helpers import assert_error, get_run, start, wait_finished
from tests.live_server import LiveServer
from tests.sse_frames import done_of, frames, iter_frames, open_stream
from tests.waiting import wait_until

pytestmark = pytest.mark.server


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.mark.timeout(20)
def test_start_answers_at_once_and_the_record_has_every_field(alice: httpx.Client) -> None:
    resp = alice.post(
        "/runs",
        json={"agent": "ticker", "input_dict": {"n": 2, "interval": 0.01}, "max_duration_s": 60},
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert set(body) == {"run_id", "status"}
    assert body["status"] == "running"
    run_id = body["run_id"]
    assert resp.headers["location"] == f"/runs/{run_id}"

    run = wait_finished(alice, run_id)
    assert run["run_id"] == run_id
    assert run["owner"] == "alice"
    assert run["agent"] == "ticker"
    assert run["status"] == "success"
    assert run["input_dict"] == {"n": 2, "interval": 0.01}
    assert run["options"] == {"max_duration_s": 60}
    assert run["result"] == {"ticks": 2}
    assert run["error"] is None
    assert run["event_count"] == 3
    assert ISO_Z.match(run["started_at"]), run
    assert ISO_Z.match(run["finished_at"]), run
    assert isinstance(run["duration_s"], float)
    # The ticker sleeps 0.01 s between its two ticks; the duration is the span
    # between the two timestamps (which are rounded to the millisecond).
    # (asyncio may fire a timer up to a millisecond early)
    assert run["duration_s"] >= 0.008
    span = (parse_iso(run["finished_at"]) - parse_iso(run["started_at"])).total_seconds()
    assert abs(run["duration_s"] - span) <= 0.0015
    assert [(e["seq"], e["type"], e["data"]) for e in run["events"]] == [
        (1, "tick", {"i": 1}),
        (2, "tick", {"i": 2}),
        (3, "done", {"status": "success", "result": {"ticks": 2}, "error": None}),
    ]
    assert all(ISO_Z.match(e["ts"]) for e in run["events"])


@pytest.mark.timeout(20)
def test_list_is_newest_first_filterable_and_paginated(live: LiveServer) -> None:
    with live.client("bob") as bob:
        ids = [start(bob, "echo", k=i) for i in range(5)]
        failed = start(bob, "failer")
        for run_id in [*ids, failed]:
            wait_finished(bob, run_id)
        sleeping = start(bob, "sleeper", seconds=30)

        listed = bob.get("/runs").json()
        assert listed["next_cursor"] is None
        mine = [r["run_id"] for r in listed["runs"]]
        # Started one after the other, so newest first is exactly the reverse.
        # (Not a sort of the listed (started_at, run_id): started_at is shown
        # to the millisecond, and two starts within one millisecond would
        # then be ordered by their random ids instead of by time.)
        assert mine == [sleeping, failed, *reversed(ids)]
        started = [r["started_at"] for r in listed["runs"]]
        assert started == sorted(started, reverse=True)
        summary = next(r for r in listed["runs"] if r["run_id"] == sleeping)
        assert set(summary) == {
            "run_id",
            "agent",
            "status",
            "started_at",
            "finished_at",
            "duration_s",
            "event_count",
            "error",
            "workspace",
        }
        assert summary["workspace"] is None  # started without one: a personal run
        assert summary["status"] == "running"
        assert summary["finished_at"] is None

        running = bob.get("/runs", params={"status": "running"}).json()["runs"]
        assert [r["run_id"] for r in running] == [sleeping]
        errors = bob.get("/runs", params={"status": "error"}).json()["runs"]
        assert [r["run_id"] for r in errors] == [failed]
        assert errors[0]["error"] == "RuntimeError: boom"
        echoes = bob.get("/runs", params={"agent": "echo"}).json()["runs"]
        assert {r["run_id"] for r in echoes} == set(ids)

        pages: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = bob.get("/runs", params=params).json()
            assert len(page["runs"]) <= 2
            pages += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == mine

        assert bob.post(f"/runs/{sleeping}/stop").status_code == 202
        assert wait_finished(bob, sleeping)["status"] == "stopped"


@pytest.mark.timeout(20)
def test_stop_gives_202_and_the_run_ends_stopped(alice: httpx.Client) -> None:
    run_id = start(alice, "sleeper", seconds=60)
    with open_stream(alice, run_id) as es:
        it = iter_frames(es)
        assert next(it).event == "run"
        assert next(it).event == "sleeping"  # the agent is under way
        resp = alice.post(f"/runs/{run_id}/stop")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"run_id": run_id, "status": "stopping"}
        rest = list(it)
    assert [f.event for f in rest] == ["stop_requested", "done"]
    assert done_of(rest) == {"status": "stopped", "result": None, "error": "stopped by user"}

    run = get_run(alice, run_id)
    assert run["status"] == "stopped"
    assert run["error"] == "stopped by user"
    assert run["finished_at"] is not None

    message = assert_error(alice.post(f"/runs/{run_id}/stop"), 409, "already_finished")
    assert "stopped" in message


@pytest.mark.timeout(20)
def test_stop_of_an_agent_that_ignores_it_still_ends_stopped(alice: httpx.Client) -> None:
    run_id = start(alice, "stubborn")
    wait_until(lambda: get_run(alice, run_id)["event_count"] >= 1, 10, "stubborn to start")
    assert alice.post(f"/runs/{run_id}/stop").status_code == 202
    run = wait_finished(alice, run_id)
    assert run["status"] == "stopped"
    assert run["events"][-1]["data"]["status"] == "stopped"


@pytest.mark.timeout(20)
def test_stop_on_a_finished_run_is_409_saying_how_it_finished(alice: httpx.Client) -> None:
    ok = start(alice, "echo", x=1)
    failed = start(alice, "failer", message="no luck")
    assert wait_finished(alice, ok)["status"] == "success"
    assert wait_finished(alice, failed)["status"] == "error"

    message = assert_error(alice.post(f"/runs/{ok}/stop"), 409, "already_finished")
    assert "success" in message
    message = assert_error(alice.post(f"/runs/{failed}/stop"), 409, "already_finished")
    assert "error" in message
    assert "no luck" in message
    # Refusing the stop changed nothing.
    assert get_run(alice, ok)["status"] == "success"
    assert get_run(alice, failed)["error"] == "RuntimeError: no luck"


@pytest.mark.timeout(20)
def test_delete_running_is_409_and_finished_is_204_then_404(alice: httpx.Client) -> None:
    run_id = start(alice, "sleeper", seconds=60)
    message = assert_error(alice.delete(f"/runs/{run_id}"), 409, "still_running")
    assert "stop it first" in message
    assert get_run(alice, run_id)["status"] == "running"

    assert alice.post(f"/runs/{run_id}/stop").status_code == 202
    assert wait_finished(alice, run_id)["status"] == "stopped"
    resp = alice.delete(f"/runs/{run_id}")
    assert resp.status_code == 204
    assert resp.content == b""

    assert_error(alice.get(f"/runs/{run_id}"), 404, "run_not_found")
    assert_error(alice.get(f"/runs/{run_id}/stream"), 404, "run_not_found")
    assert_error(alice.post(f"/runs/{run_id}/stop"), 404, "run_not_found")
    assert_error(alice.delete(f"/runs/{run_id}"), 404, "run_not_found")
    assert run_id not in {r["run_id"] for r in alice.get("/runs").json()["runs"]}


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs/{id}"),
        ("GET", "/runs/{id}/stream"),
        ("POST", "/runs/{id}/stop"),
        ("DELETE", "/runs/{id}"),
    ],
)
def test_unknown_run_is_404_for_every_verb(alice: httpx.Client, method: str, path: str) -> None:
    message = assert_error(alice.request(method, path.format(id=UNKNOWN)), 404, "run_not_found")
    assert UNKNOWN in message


@pytest.mark.timeout(20)
def test_agents_lists_the_catalog(alice: httpx.Client) -> None:
    resp = alice.get("/agents")
    assert resp.status_code == 200
    agents = {a["name"]: a["description"] for a in resp.json()}
    assert {"echo", "ticker", "sleeper", "failer", "stubborn", "chatty"} <= set(agents)
    assert all(isinstance(d, str) and d for d in agents.values())
    assert_error(httpx.get(f"{alice.base_url}/agents"), 401)


@pytest.mark.timeout(20)
def test_health_is_open_and_ready_answers(live: LiveServer) -> None:
    resp = httpx.get(f"{live.base_url}/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    resp = httpx.get(f"{live.base_url}/readyz")
    assert resp.status_code == 200, resp.text
    ready = resp.json()
    assert ready["status"] == "ok"
    assert ready["detail"]["accepting"] is True
    assert ready["detail"]["store"]["up"] is True


@pytest.mark.timeout(20)
def test_ops_registry_is_admin_only_and_shows_live_runs(
    live: LiveServer, alice: httpx.Client
) -> None:
    assert_error(alice.get("/ops/registry"), 403, "forbidden")
    assert_error(httpx.get(f"{live.base_url}/ops/registry"), 401, "unauthorized")

    before_start = time.monotonic()
    run_id = start(alice, "ticker", n=1000, interval=0.01)
    with live.client("root") as root, open_stream(alice, run_id) as es:
        it = iter_frames(es)
        assert next(it).event == "run"
        assert [next(it).seq for _ in range(3)] == [1, 2, 3]  # three ticks delivered

        def shows_the_stream() -> dict[str, object] | None:
            view = root.get("/ops/registry").json()
            mine = [r for r in view["live"] if r["run_id"] == run_id]
            return view if mine and mine[0]["subscribers"] == 1 else None

        view = wait_until(shows_the_stream, 10, "the open stream in /ops/registry")
        since_start = time.monotonic() - before_start
        trace_now = get_run(alice, run_id)["event_count"]
        assert set(view) == {
            "node_id",
            "nodes",
            "runs_by_status",
            "live",
            "cached_finished",
            "persistence_backlog",
            "accepting",
            "event_loop_lag_ms",
            "rss_bytes",
            "uptime_s",
        }
        assert view["nodes"] == []  # SQLite: a single node, no leases
        entry = next(r for r in view["live"] if r["run_id"] == run_id)
        assert entry["owner"] == "alice"
        assert entry["agent"] == "ticker"
        # At least the ticks the stream delivered, at most what the run had a moment later.
        assert 3 <= entry["trace_length"] <= trace_now
        # Its age counts from the start: past the 0.02 s between the first and the third
        # tick, within what the test measured around it (the age is rounded to the ms).
        assert 0.019 <= entry["age_s"] <= since_start + 0.001
        assert entry["stopping"] is False
        assert view["runs_by_status"]["running"] >= 1
        assert view["accepting"] is True
        assert view["rss_bytes"] > 0
        assert view["uptime_s"] > 0

        def trace_length() -> int:
            live_runs = root.get("/ops/registry").json()["live"]
            return int(next(r["trace_length"] for r in live_runs if r["run_id"] == run_id))

        wait_until(lambda: trace_length() > trace_now, 10, "the trace to grow")

    assert alice.post(f"/runs/{run_id}/stop").status_code == 202
    assert wait_finished(alice, run_id)["status"] == "stopped"
    with live.client("root") as root:
        view = root.get("/ops/registry").json()
        assert run_id not in {r["run_id"] for r in view["live"]}
        assert view["cached_finished"] >= 1
        # Every record written: nothing is left waiting for the store.
        wait_until(
            lambda: root.get("/ops/registry").json()["persistence_backlog"] == 0,
            10,
            "the persistence backlog to drain",
        )


@pytest.mark.timeout(20)
def test_stream_of_a_stopped_run_says_stopped(alice: httpx.Client) -> None:
    run_id = start(alice, "sleeper", seconds=60)
    assert alice.post(f"/runs/{run_id}/stop").status_code == 202
    wait_finished(alice, run_id)
    fs = frames(alice, run_id)
    assert fs[0].data["status"] == "stopped"
    assert done_of(fs)["status"] == "stopped"


@pytest.mark.timeout(30)
def test_a_large_trace_reads_whole_and_in_order(alice: httpx.Client) -> None:
    """Above LARGE_TRACE events the body is encoded off the loop: same answer."""
    run_id = start(alice, "chatty", n=5_000)
    record = wait_finished(alice, run_id)
    seqs = [e["seq"] for e in record["events"]]
    assert seqs == list(range(1, 5_002))  # 5,000 chats and done
    assert record["event_count"] == 5_001
    assert record["events"][2_500]["data"] == {"i": 2_501}
    assert record["result"] == {"sent": 5_000}
