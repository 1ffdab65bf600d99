"""The store contract for commits of new events (``RunWrite``), on both stores.

A live run commits only what it emitted since its last commit; these tests
check that a long series of such commits, a replay page, a stale write, a
retried write and a delete all behave the same on SQLite and CouchDB. The
``store`` fixture is the one of ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord
from runyard.persistence.store import RunStore
from tests.store_helpers import stored
from tests.test_store_contract import Run, loop, rec, run, store

__all__ = ["loop", "run", "store"]  # the fixtures this module uses

T0 = 1_700_000_000.0


def events(first: int, last: int) -> tuple[Event, ...]:
    return tuple(
        Event(seq=i, ts=T0 + i / 1000, type="log", data={"i": i, "line": f"line {i} ✓"})
        for i in range(first, last + 1)
    )


def commit(header: RunRecord, first: int, last: int, *, updated_at: float) -> RunWrite:
    """A run's commit of events ``first..last`` (its trace is then ``last`` long)."""
    head = dataclasses.replace(header, events=(), updated_at=updated_at)
    return RunWrite(head, last, events(first, last))


@pytest.mark.timeout(300)
def test_a_thousand_commits_of_five_events_read_back_exactly(
    store: RunStore, run: Run[Any]
) -> None:
    header = rec("long", status="running")
    run(store.save_many([RunWrite(dataclasses.replace(header, events=()), 0)]))
    for n in range(1_000):
        run(store.save_many([commit(header, 5 * n + 1, 5 * n + 5, updated_at=T0 + n)]))
    got = stored(run, store, "long")
    assert got.events == events(1, 5_000)
    assert got.status == "running"
    assert run(store.list_for_user("alice"))[0].event_count == 5_000
    [unfinished] = run(store.find_unfinished())
    assert unfinished.event_count == 5_000
    assert unfinished.events == ()


@pytest.mark.timeout(120)
def test_get_events_pages_through_the_committed_trace(store: RunStore, run: Run[Any]) -> None:
    header = rec("paged", status="running")
    for first, last in ((1, 3), (4, 4), (5, 40), (41, 57)):
        run(store.save_many([commit(header, first, last, updated_at=T0 + last)]))
    pages: list[Event] = []
    after = 0
    while page := run(store.get_events("paged", after, 10)):
        assert len(page) <= 10
        pages += page
        after = page[-1].seq
    assert tuple(pages) == events(1, 57)
    assert run(store.get_events("paged", 20, 5)) == list(events(21, 25))
    assert run(store.get_events("paged", 55, 100)) == list(events(56, 57))
    assert run(store.get_events("paged", 57, 10)) == []
    assert run(store.get_events("paged", 0, 0)) == []
    assert run(store.get_events("nope", 0, 10)) == []


@pytest.mark.timeout(60)
def test_events_past_the_stored_count_are_never_read(store: RunStore, run: Run[Any]) -> None:
    header = rec("cut", status="running")
    run(store.save_many([commit(header, 1, 6, updated_at=T0 + 6)]))
    # A finished write with fewer events wins (a terminal status always does):
    # the trace is cut there.
    final = dataclasses.replace(header, status="stopped", finished_at=T0 + 9, updated_at=T0 + 9)
    run(store.save_many([RunWrite(final, 4)]))
    got = stored(run, store, "cut")
    assert got.events == events(1, 4)
    assert run(store.get_events("cut", 2, 10)) == list(events(3, 4))


@pytest.mark.timeout(60)
def test_a_stale_header_write_is_skipped_with_its_events(store: RunStore, run: Run[Any]) -> None:
    header = rec("stale", status="running")
    run(store.save_many([commit(header, 1, 3, updated_at=T0 + 3)]))
    final = dataclasses.replace(header, status="success", finished_at=T0 + 5, updated_at=T0 + 5)
    run(store.save_many([RunWrite(final, 3)]))
    # A late running commit of events 4..6: its header loses, so its events go too.
    run(store.save_many([commit(header, 4, 6, updated_at=T0 + 9)]))
    got = stored(run, store, "stale")
    assert got.status == "success"
    assert got.events == events(1, 3)
    assert run(store.get_events("stale", 0, 100)) == list(events(1, 3))
    # Between running versions, an older one with fewer events loses as well.
    other = rec("r2", status="running")
    run(store.save_many([commit(other, 1, 5, updated_at=T0 + 5)]))
    run(store.save_many([commit(other, 3, 4, updated_at=T0 + 4)]))
    got = stored(run, store, "r2")
    assert got.events == events(1, 5)
    assert got.updated_at == T0 + 5


@pytest.mark.timeout(60)
def test_a_retried_identical_write_is_idempotent(store: RunStore, run: Run[Any]) -> None:
    header = rec("again", status="running")
    first = commit(header, 1, 10, updated_at=T0 + 10)
    second = commit(header, 11, 25, updated_at=T0 + 25)
    run(store.save_many([first]))
    run(store.save_many([second]))
    run(store.save_many([second]))  # the ack was lost: the batch comes again
    run(store.save_many([first, second]))  # joined with an earlier one
    run(store.save_many([commit(header, 20, 30, updated_at=T0 + 30)]))  # overlapping
    got = stored(run, store, "again")
    assert got.events == events(1, 30)
    assert run(store.get_events("again", 18, 5)) == list(events(19, 23))


@pytest.mark.timeout(60)
def test_delete_removes_the_events_of_every_commit(store: RunStore, run: Run[Any]) -> None:
    header = rec("gone", status="running")
    for n in range(10):
        run(store.save_many([commit(header, 3 * n + 1, 3 * n + 3, updated_at=T0 + n)]))
    final = dataclasses.replace(header, status="error", finished_at=T0 + 20, updated_at=T0 + 20)
    run(store.save_many([RunWrite(final, 30)]))
    assert run(store.delete("gone")) is True
    assert run(store.get("gone")) is None
    assert run(store.get_events("gone", 0, 100)) == []
    # The same id written again starts from an empty trace.
    run(store.save_many([commit(header, 1, 2, updated_at=T0 + 30)]))
    got = stored(run, store, "gone")
    assert got.events == events(1, 2)


@pytest.mark.timeout(60)
def test_the_node_is_kept_and_recovery_finds_only_that_nodes_runs(
    store: RunStore, run: Run[Any]
) -> None:
    def running(run_id: str, node: str | None) -> RunWrite:
        header = dataclasses.replace(rec(run_id, status="running"), events=(), node=node)
        return RunWrite(header, 2, events(1, 2))

    run(store.save_many([running("a-1", "a"), running("b-1", "b"), running("old", None)]))
    got = stored(run, store, "a-1")
    assert got.node == "a"
    assert {w.run_id for w in run(store.find_unfinished("a"))} == {"a-1", "old"}
    assert {w.run_id for w in run(store.find_unfinished("b"))} == {"b-1", "old"}
    assert {w.run_id for w in run(store.find_unfinished())} == {"a-1", "b-1", "old"}
    [mine] = [w for w in run(store.find_unfinished("a")) if w.run_id == "a-1"]
    assert (mine.header.node, mine.event_count) == ("a", 2)
