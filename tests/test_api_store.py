"""Runs that left memory are still found: read, listed, streamed, stopped (409), deleted.

The server runs with a 60 s retention and a hand-moved clock; after the clock
passes the retention, an explicit ``Evict()`` drops finished records from
memory and ``/ops/registry`` confirms the cache is empty, so every later
answer comes from the store: SQLite, and the CouchDB-compatible server.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runyard.actors.clock import ManualClock
from runyard.actors.messages import Evict
from tests.api_helpers import assert_error, get_run, start, wait_finished
from tests.live_server import LiveServer, LiveServerFactory, make_settings
from tests.sse_frames import done_of, frames
from tests.waiting import wait_until

pytestmark = pytest.mark.server

RETENTION_S = 60


STORES = [pytest.param("sqlite"), pytest.param("couch", marks=pytest.mark.couchdb)]


def store_settings(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the store: nothing for SQLite, a fresh database for CouchDB."""
    if kind == "sqlite":
        return {}
    return {
        "couchdb_url": request.getfixturevalue("couch_url"),
        "couchdb_db": f"api_{uuid.uuid4().hex[:12]}",
    }


@pytest.fixture(scope="module", params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def clock(store_kind: str) -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def live(
    live_server: LiveServerFactory,
    clock: ManualClock,
    store_kind: str,
    request: pytest.FixtureRequest,
) -> LiveServer:
    return live_server(
        app_kwargs={"clock": clock},
        retention_s=RETENTION_S,
        **store_settings(store_kind, request),
    )


def cached_finished(live: LiveServer) -> int:
    with live.client("root") as root:
        count: int = root.get("/ops/registry").json()["cached_finished"]
        return count


def evict_all(live: LiveServer, clock: ManualClock) -> None:
    """Move the clock past the retention and evict until memory holds no finished run.

    A record leaves memory only once the store has acknowledged it, so the
    ``Evict`` is repeated until that has happened.
    """
    clock.advance(RETENTION_S + 1)
    registry = live.gateway.runtime.registry

    def evicted() -> bool:
        registry.tell(Evict())
        return cached_finished(live) == 0

    wait_until(evicted, 10, "finished runs to leave memory")


@pytest.mark.timeout(30)
def test_an_evicted_run_is_read_listed_streamed_and_deleted_from_the_store(
    live: LiveServer, clock: ManualClock
) -> None:
    with live.client("alice") as alice:
        run_id = start(alice, "ticker", n=4, interval=0)
        failed = start(alice, "failer", events=1, message="stored failure")
        before = wait_finished(alice, run_id)
        wait_finished(alice, failed)
        assert before["status"] == "success"
        # Within the retention window an eviction pass keeps them in memory.
        clock.advance(RETENTION_S - 1)
        assert live.gateway.runtime.registry.ask(Evict(), timeout=5) == 0
        assert cached_finished(live) >= 2

        evict_all(live, clock)

        # Read: the same record, from the store.
        after = get_run(alice, run_id)
        assert after == before
        assert [e["type"] for e in after["events"]] == ["tick"] * 4 + ["done"]
        assert get_run(alice, failed)["error"] == "RuntimeError: stored failure"

        # Listed, with filters.
        assert run_id in {r["run_id"] for r in alice.get("/runs").json()["runs"]}
        ok = alice.get("/runs", params={"status": "success", "agent": "ticker"}).json()
        assert run_id in {r["run_id"] for r in ok["runs"]}
        bad = alice.get("/runs", params={"status": "error"}).json()
        assert [r["run_id"] for r in bad["runs"]] == [failed]

        # Streamed: replay, then done, then the end; resumable too.
        fs = frames(alice, run_id)
        assert fs[0].event == "run"
        assert fs[0].data["status"] == "success"
        assert [f.seq for f in fs[1:]] == [1, 2, 3, 4, 5]
        assert done_of(fs) == {"status": "success", "result": {"ticks": 4}, "error": None}
        tail = frames(alice, run_id, last_event_id=3)
        assert [f.seq for f in tail[1:]] == [4, 5]
        assert done_of(tail)["status"] == "success"

        # Still someone else's to nobody but alice.
        with live.client("bob") as bob:
            assert_error(bob.get(f"/runs/{run_id}"), 403, "forbidden")
            assert_error(bob.get(f"/runs/{run_id}/stream"), 403, "forbidden")
            assert_error(bob.delete(f"/runs/{run_id}"), 403, "forbidden")
            assert run_id not in {r["run_id"] for r in bob.get("/runs").json()["runs"]}

        # Stop says how it finished, from the store too.
        message = assert_error(alice.post(f"/runs/{failed}/stop"), 409, "already_finished")
        assert "error" in message
        assert "stored failure" in message

        # Deleted: gone from the store, for every verb.
        assert alice.delete(f"/runs/{run_id}").status_code == 204
        assert_error(alice.get(f"/runs/{run_id}"), 404, "run_not_found")
        assert_error(alice.get(f"/runs/{run_id}/stream"), 404, "run_not_found")
        assert_error(alice.delete(f"/runs/{run_id}"), 404, "run_not_found")
        assert run_id not in {r["run_id"] for r in alice.get("/runs").json()["runs"]}
        assert get_run(alice, failed)["status"] == "error"  # the other one is still there
        assert alice.delete(f"/runs/{failed}").status_code == 204


def _started(run: dict[str, str]) -> datetime:
    return datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))


@pytest.mark.timeout(30)
def test_pagination_across_store_cache_and_live_runs(live: LiveServer, clock: ManualClock) -> None:
    """25 runs: 12 only in the store, 11 in the memory cache, 2 live; pages of 7."""
    with live.client("bob") as bob:
        order: list[str] = []  # start order: oldest first

        def start_one(agent: str, **input_dict: object) -> str:
            clock.advance(1)  # distinct started_at, so "newest first" is unambiguous
            run_id = start(bob, agent, **input_dict)
            order.append(run_id)
            return run_id

        stored = [start_one("echo", i=i) for i in range(12)]
        for run_id in stored:
            wait_finished(bob, run_id)
        evict_all(live, clock)

        cached: list[str] = []
        live_runs: list[str] = []
        for i in range(12, 23):
            cached.append(start_one("echo", i=i))
            if i == 16:  # a live run among the cached ones, and one at the top
                live_runs.append(start_one("sleeper", seconds=300))
        live_runs.append(start_one("sleeper", seconds=300))
        for run_id in cached:
            wait_finished(bob, run_id)
        assert cached_finished(live) == len(cached)

        expected = list(reversed(order))
        seen: list[dict[str, str]] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"limit": 7}
            if cursor is not None:
                params["cursor"] = cursor
            page = bob.get("/runs", params=params).json()
            pages += 1
            assert len(page["runs"]) == (7 if page["next_cursor"] else len(expected) - len(seen))
            seen += page["runs"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        ids = [r["run_id"] for r in seen]
        assert len(ids) == len(set(ids)), "duplicates across pages"
        assert ids == expected, "gaps or wrong order across pages"
        assert pages == 4
        times = [_started(r) for r in seen]
        assert times == sorted(times, reverse=True)
        assert len(set(times)) == len(times)
        statuses = {r["run_id"]: r["status"] for r in seen}
        assert all(statuses[r] == "running" for r in live_runs)
        assert all(statuses[r] == "success" for r in stored + cached)

        # The same pages with a filter that cuts across the boundary.
        echo_ids: list[str] = []
        cursor = None
        while True:
            params = {"limit": 7, "agent": "echo", "status": "success"}
            if cursor is not None:
                params["cursor"] = cursor
            page = bob.get("/runs", params=params).json()
            echo_ids += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert echo_ids == [r for r in expected if r not in live_runs]

        for run_id in live_runs:
            assert bob.post(f"/runs/{run_id}/stop").status_code == 202
            wait_finished(bob, run_id)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", STORES)
def test_store_survives_a_restart_with_the_same_data_dir(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """A fresh process on the same data dir (or database) answers from the store alone."""
    settings = make_settings(tmp_path, shutdown_grace_s=0.2, **store_settings(kind, request))
    with LiveServer(settings) as first, first.client("alice") as alice:
        run_id = start(alice, "ticker", n=3, interval=0)
        before = wait_finished(alice, run_id)
    with LiveServer(settings) as second, second.client("alice") as alice:
        assert get_run(alice, run_id) == before
        fs = frames(alice, run_id)
        assert done_of(fs)["status"] == "success"
        assert [r["run_id"] for r in alice.get("/runs").json()["runs"]] == [run_id]
        with second.client("root") as root:
            assert root.get("/ops/registry").json()["cached_finished"] == 0
