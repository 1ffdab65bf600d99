"""One contract for every RunStore: the SQLite default and CouchDB must agree.

The registry and the persistence actor rely only on this behaviour, so a
store that passes here can replace the other without anything else changing.
Each test runs one private event loop for its whole life: aiocouch binds its
HTTP session to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.persistence.sqlite_store import SQLiteStore
from runyard.persistence.store import RunStore
from tests.store_helpers import whole

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

T0 = 1_700_000_000.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Run[Any]:
    return loop.run_until_complete


def _drop_couch_db(couch_url: str, db: str) -> None:
    import httpx  # credentials in the URL become basic auth

    httpx.delete(f"{couch_url.rstrip('/')}/{db}", timeout=30)


@pytest.fixture(params=["sqlite", pytest.param("couch", marks=pytest.mark.couchdb)])
def store(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[RunStore]:
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    s: RunStore
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "runs.sqlite3")
    else:
        from runyard.persistence.couch_store import CouchStore

        couch_url: str = request.getfixturevalue("couch_url")
        db = f"t_{uuid4().hex[:12]}"
        s = CouchStore(couch_url, db=db)

        def cleanup() -> None:
            _drop_couch_db(couch_url, db)

    run(s.open())
    try:
        yield s
    finally:
        try:
            run(s.close())
        finally:
            cleanup()


def ev(seq: int, **data: Any) -> Event:
    return Event(seq=seq, ts=T0 + seq / 1000, type="log", data=data or {"n": seq})


def rec(
    run_id: str,
    *,
    owner: str = "alice",
    agent: str = "echo",
    status: RunStatus = "success",
    started_at: float = T0,
    finished_at: float | None = None,
    events: tuple[Event, ...] = (),
    result: Any = None,
    error: str | None = None,
    input: dict[str, Any] | None = None,
) -> RunRecord:
    if finished_at is None and status != "running":
        finished_at = started_at + 1
    return RunRecord(
        run_id=run_id,
        owner=owner,
        agent=agent,
        status=status,
        input=input if input is not None else {"prompt": "hi"},
        started_at=started_at,
        finished_at=finished_at,
        events=events,
        result=result,
        error=error,
        updated_at=(finished_at or started_at) + 0.5,
        options={"max_duration_s": 30, "tags": ["a", "b"]},
    )


@pytest.mark.timeout(30)
def test_round_trip_keeps_every_field(store: RunStore, run: Run[Any]) -> None:
    events = (
        ev(1, text="héllo ✓ 日本語 🚀", nested={"a": [1, 2.5, None, True]}),
        ev(2, empty={}),
        Event(seq=3, ts=T0 + 3, type="done", data={"ok": True}),
    )
    record = rec(
        "r-1",
        events=events,
        result={"answer": 42, "list": [1, "two", 3.5, None, False], "nested": {"ü": "ß"}},
        error=None,
        input={"prompt": "grüß dich", "n": 3, "flags": [True, False]},
    )
    run(store.save(record))
    assert run(store.get("r-1")) == record


@pytest.mark.timeout(30)
@pytest.mark.parametrize("result", [None, 0, 1.5, "text ✓", [1, [2]], True, {"k": None}])
def test_result_json_types_round_trip(store: RunStore, run: Run[Any], result: Any) -> None:
    run(store.save(rec("r-json", result=result, status="error", error="boom ✗")))
    got = run(store.get("r-json"))
    assert got is not None
    assert got.result == result
    assert type(got.result) is type(result)
    assert got.error == "boom ✗"


@pytest.mark.timeout(30)
def test_non_json_result_does_not_break_the_write(store: RunStore, run: Run[Any]) -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<Odd>"

    run(store.save(rec("r-odd", result={"value": Odd(), "fine": 1})))
    got = run(store.get("r-odd"))
    assert got is not None
    assert got.result["fine"] == 1
    assert "<Odd>" in str(got.result["value"])


@pytest.mark.timeout(30)
def test_get_unknown_is_none(store: RunStore, run: Run[Any]) -> None:
    assert run(store.get("nope")) is None


@pytest.mark.timeout(30)
def test_upsert_replaces_and_appends_events(store: RunStore, run: Run[Any]) -> None:
    run(store.save(rec("r-up", status="running", events=(ev(1), ev(2)))))
    run(store.save(rec("r-up", status="running", events=(ev(1), ev(2), ev(3)))))
    got = run(store.get("r-up"))
    assert got is not None
    assert [e.seq for e in got.events] == [1, 2, 3]
    final = rec("r-up", status="success", events=(ev(1), ev(2), ev(3), ev(4)), result="ok")
    run(store.save(final))
    assert run(store.get("r-up")) == final
    assert len(run(store.list_for_user("alice"))) == 1


@pytest.mark.timeout(30)
def test_terminal_is_never_overwritten_by_running(store: RunStore, run: Run[Any]) -> None:
    final = rec("r-t", status="stopped", events=(ev(1), ev(2)), error="stopped by user")
    run(store.save(final))
    run(store.save(rec("r-t", status="running", events=(ev(1), ev(2), ev(3)))))
    run(store.save_many(whole([rec("r-t", status="running", events=(ev(1),))])))
    assert run(store.get("r-t")) == final
    assert [s.status for s in run(store.list_for_user("alice"))] == ["stopped"]
    assert run(store.find_unfinished()) == []


@pytest.mark.timeout(30)
def test_terminal_overwrites_running(store: RunStore, run: Run[Any]) -> None:
    run(store.save(rec("r-o", status="running", events=(ev(1),))))
    final = rec("r-o", status="error", events=(ev(1), ev(2)), error="boom")
    run(store.save_many(whole([final])))
    assert run(store.get("r-o")) == final


@pytest.mark.timeout(30)
def test_save_many_mixed_batch(store: RunStore, run: Run[Any]) -> None:
    records = [rec(f"m-{i:03d}", started_at=T0 + i, events=(ev(1),)) for i in range(50)]
    run(store.save_many(whole([*records, rec("m-000", status="running")])))
    assert len(run(store.list_for_user("alice", limit=100))) == 50
    assert run(store.get("m-000")) == records[0]
    run(store.save_many(whole([])))


@pytest.mark.timeout(30)
def test_list_newest_first_with_ties_broken_by_run_id(store: RunStore, run: Run[Any]) -> None:
    run(
        store.save_many(
            whole(
                [
                    rec("b", started_at=T0 + 1),
                    rec("a", started_at=T0 + 1),
                    rec("c", started_at=T0 + 1),
                    rec("z", started_at=T0),
                    rec("y", started_at=T0 + 2),
                ]
            )
        )
    )
    page = run(store.list_for_user("alice"))
    assert [s.run_id for s in page] == ["y", "c", "b", "a", "z"]
    assert page[0] == rec("y", started_at=T0 + 2).summary()
    assert [s.run_id for s in run(store.list_for_user("alice", before=(T0 + 1, "b")))] == [
        "a",
        "z",
    ]
    assert [s.run_id for s in run(store.list_for_user("alice", limit=2))] == ["y", "c"]


@pytest.mark.timeout(60)
def test_pagination_has_no_duplicates_and_no_gaps(store: RunStore, run: Run[Any]) -> None:
    # 137 runs, many sharing a start time, so the run_id tie-break is exercised.
    records = [rec(f"p-{i:04d}", started_at=T0 + i // 3) for i in range(137)]
    run(store.save_many(whole(records)))
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = run(store.list_for_user("alice", limit=10, before=before))
        pages += 1
        seen.extend(s.run_id for s in page)
        if len(page) < 10:
            break
        before = (page[-1].started_at, page[-1].run_id)
    expected = [
        r.run_id for r in sorted(records, key=lambda r: (r.started_at, r.run_id), reverse=True)
    ]
    assert seen == expected
    assert pages == 14


@pytest.mark.timeout(30)
def test_filters_status_and_agent(store: RunStore, run: Run[Any]) -> None:
    run(
        store.save_many(
            whole(
                [
                    rec("s1", agent="echo", status="success", started_at=T0 + 1),
                    rec("s2", agent="code", status="success", started_at=T0 + 2),
                    rec("s3", agent="echo", status="error", started_at=T0 + 3, error="x"),
                    rec("s4", agent="echo", status="running", started_at=T0 + 4),
                    rec("s5", agent="code", status="stopped", started_at=T0 + 5),
                ]
            )
        )
    )

    def ids(**kw: Any) -> list[str]:
        return [s.run_id for s in run(store.list_for_user("alice", **kw))]

    assert ids(status="success") == ["s2", "s1"]
    assert ids(status="running") == ["s4"]
    assert ids(agent="echo") == ["s4", "s3", "s1"]
    assert ids(agent="code", status="stopped") == ["s5"]
    assert ids(agent="nobody") == []
    assert ids(status="success", before=(T0 + 2, "s2")) == ["s1"]


@pytest.mark.timeout(30)
def test_other_owners_runs_are_never_listed(store: RunStore, run: Run[Any]) -> None:
    run(
        store.save_many(
            whole(
                [
                    rec("mine", owner="alice", started_at=T0),
                    rec("theirs", owner="bob", started_at=T0 + 1),
                    rec("theirs-2", owner="alice2", started_at=T0 + 2),
                ]
            )
        )
    )
    assert [s.run_id for s in run(store.list_for_user("alice"))] == ["mine"]
    assert [s.run_id for s in run(store.list_for_user("bob"))] == ["theirs"]
    assert run(store.list_for_user("carol")) == []


@pytest.mark.timeout(30)
def test_delete(store: RunStore, run: Run[Any]) -> None:
    run(store.save(rec("d-1", events=tuple(ev(i) for i in range(1, 6)))))
    run(store.save(rec("d-2")))
    assert run(store.delete("d-1")) is True
    assert run(store.get("d-1")) is None
    assert run(store.delete("d-1")) is False
    assert run(store.delete("never-there")) is False
    assert [s.run_id for s in run(store.list_for_user("alice"))] == ["d-2"]
    # A new run with the same id starts from an empty trace.
    run(store.save(rec("d-1", events=(ev(1),))))
    got = run(store.get("d-1"))
    assert got is not None
    assert [e.seq for e in got.events] == [1]


@pytest.mark.timeout(30)
def test_find_unfinished(store: RunStore, run: Run[Any]) -> None:
    running = rec("u-1", status="running", events=(ev(1), ev(2)))
    run(
        store.save_many(
            whole(
                [
                    running,
                    rec("u-2", status="running", owner="bob"),
                    rec("u-3", status="success"),
                    rec("u-4", status="stopped"),
                ]
            )
        )
    )
    found = {r.run_id: r for r in run(store.find_unfinished())}
    assert set(found) == {"u-1", "u-2"}
    # The header and the stored event count, not the events: recovery appends to them.
    assert found["u-1"] == RunWrite(dataclasses.replace(running, events=()), 2)


@pytest.mark.timeout(60)
def test_purge_older_than_only_finished_and_older(store: RunStore, run: Run[Any]) -> None:
    old = [rec(f"old-{i:03d}", started_at=T0 - 100, finished_at=T0 - 50) for i in range(23)]
    run(
        store.save_many(
            whole(
                [
                    *old,
                    rec("new", started_at=T0 - 100, finished_at=T0 + 50),
                    rec("at-cutoff", started_at=T0 - 100, finished_at=T0),
                    rec("old-running", status="running", started_at=T0 - 1000),
                ]
            )
        )
    )
    assert run(store.purge_older_than(T0, batch=5)) == 23
    left = {s.run_id for s in run(store.list_for_user("alice", limit=100))}
    assert left == {"new", "at-cutoff", "old-running"}
    assert run(store.get("old-000")) is None
    assert run(store.purge_older_than(T0, batch=5)) == 0


@pytest.mark.timeout(120)
def test_twenty_thousand_event_trace_round_trips(store: RunStore, run: Run[Any]) -> None:
    events = tuple(
        Event(seq=i, ts=T0 + i / 1000, type="log", data={"line": f"line {i} ✓ " + "x" * 100})
        for i in range(1, 20_001)
    )
    checkpoint = rec("big", status="running", events=events[:12_345])
    run(store.save(checkpoint))
    final = rec("big", status="success", events=events, result={"lines": 20_000})
    run(store.save(final))
    got = run(store.get("big"))
    assert got is not None
    assert got.events == events
    assert got == final
    assert run(store.list_for_user("alice"))[0].event_count == 20_000
