"""The store link: the runtime's one batched, acknowledged route to the store.

A real persistence actor over a real SQLite file sits behind the link; the
counting store shows how many transactions the writes became.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from runyard.actors.asyncio_actor import AsyncioActor, ask, ask_stop
from runyard.actors.persistence_protocol import (
    DeleteStored,
    LoadRun,
    RunsPersisted,
    RunWrite,
    Saved,
    SaveRuns,
)
from runyard.actors.store_link import StoreLink
from runyard.persistence.actor import PersistenceActor
from tests.store_helpers import WAIT, CountingStore, read_back, rec, saves

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

WINDOW_S = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Acks(AsyncioActor):
    """A writer that records the acknowledgements it gets."""

    def __init__(self, saved: asyncio.Queue[Saved]) -> None:
        super().__init__()
        self.saved = saved

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunsPersisted):
            for version in message.saved:
                self.saved.put_nowait(version)
            return None
        return super().on_receive(message)


Link = tuple[pykka.ActorRef[Any], CountingStore, pykka.ActorRef[Any]]


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    store = CountingStore(tmp_path / "runs.sqlite3")
    persistence = PersistenceActor.start(store)
    ref = StoreLink.start(persistence, write_window_s=WINDOW_S)
    try:
        yield ref, store, persistence
    finally:
        if ref.is_alive():
            await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)


def writer() -> tuple[pykka.ActorRef[Any], asyncio.Queue[Saved]]:
    saved: asyncio.Queue[Saved] = asyncio.Queue()
    return Acks.start(saved), saved


async def next_ack(saved: asyncio.Queue[Saved]) -> Saved:
    return await asyncio.wait_for(saved.get(), WAIT)


async def test_writes_within_one_window_become_one_transaction(
    link: Link,
) -> None:
    ref, store, _ = link
    acks, saved = writer()
    for i in range(200):
        ref.tell(saves(rec(f"run-{i:03d}"), ack_to=acks))
    acked = {(await next_ack(saved)).run_id for _ in range(200)}
    assert acked == {f"run-{i:03d}" for i in range(200)}
    assert store.calls == [200]


async def test_a_run_that_ends_within_the_window_is_written_once_as_its_final_record(
    link: Link, tmp_path: Path
) -> None:
    ref, store, _ = link
    acks, saved = writer()
    final = rec("r1", status="success", events=4)
    stub = dataclasses.replace(rec("r1", status="running", events=0), updated_at=1.0)
    # The stale stub arrives after the final record: the merge rule keeps the final one.
    ref.tell(SaveRuns((RunWrite.of(final),), ack_to=acks))
    ref.tell(SaveRuns((RunWrite.of(stub),)))
    version = await next_ack(saved)
    assert (version.run_id, version.status, version.event_count) == ("r1", "success", 4)
    assert store.calls == [1]
    stored = await asyncio.to_thread(read_back, tmp_path / "runs.sqlite3", "r1")
    assert stored is not None
    assert stored.status == "success"
    assert len(stored.events) == 4


async def test_an_ack_waits_for_the_version_asked_for(
    link: Link,
) -> None:
    ref, _, _ = link
    acks, saved = writer()
    ref.tell(saves(rec("r1", status="running", events=2), ack_to=acks))
    first = await next_ack(saved)
    assert (first.status, first.event_count) == ("running", 2)
    ref.tell(saves(rec("r1", status="running", events=5), ack_to=acks))
    second = await next_ack(saved)
    assert (second.status, second.event_count) == ("running", 5)
    assert saved.empty()


async def test_a_writer_that_writes_again_before_each_ack_hears_of_every_commit(
    tmp_path: Path,
) -> None:
    """A run emitting faster than a window plus a store write always has a newer
    version waiting when the last one is stored: it must still hear of that one,
    or its subscribers would see nothing until it pauses (a 30 ms ticker on
    CouchDB's 50 ms window delivered seconds late)."""
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    persistence = PersistenceActor.start(store)
    ref = StoreLink.start(persistence, write_window_s=WINDOW_S)
    acks, saved = writer()
    try:
        ref.tell(saves(rec("r1", status="running", events=1), ack_to=acks))
        assert await asyncio.to_thread(store.entered.wait, WAIT), "the first write never started"
        # The first version is being written; the next one waits for it.
        ref.tell(saves(rec("r1", status="running", events=3), ack_to=acks))
        store.gate.set()
        first = await next_ack(saved)
        assert (first.status, first.event_count) == ("running", 1)
        second = await next_ack(saved)
        assert (second.status, second.event_count) == ("running", 3)
    finally:
        store.gate.set()
        await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)


async def test_a_delete_drops_a_write_still_waiting_in_the_window(
    link: Link,
) -> None:
    ref, store, _ = link
    ref.tell(saves(rec("gone")))
    deleted = await ask(ref, DeleteStored("gone"), timeout=WAIT)
    assert deleted is False  # never reached the store
    acks, saved = writer()
    ref.tell(saves(rec("kept"), ack_to=acks))
    assert (await next_ack(saved)).run_id == "kept"
    assert await ask(ref, LoadRun("gone"), timeout=WAIT) is None
    assert store.calls == [1]


async def test_stopping_the_link_hands_on_what_is_waiting(link: Link) -> None:
    ref, _, persistence = link
    ref.tell(saves(rec("late")))
    await ask_stop(ref)  # long before the window would have closed
    # The persistence actor holds it now (written, or pending and readable).
    loaded = await ask(persistence, LoadRun("late"), timeout=WAIT)
    assert loaded is not None
    assert loaded.status == "success"


class Receiving(PersistenceActor):
    """A real persistence actor that notes how many writes each ``SaveRuns`` brought."""

    def __init__(self, store: CountingStore) -> None:
        super().__init__(store)
        self.received: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SaveRuns):
            self.received.append(len(message.writes))
        return super().on_receive(message)


class Refusing(CountingStore):
    """Never stores the run ``bad`` (a record the store refuses); the rest as usual."""

    async def save_many(self, records: list[RunWrite]) -> set[str]:
        if any(r.run_id == "bad" for r in records):
            self.entered.set()
            raise ValueError("this store refuses the run 'bad'")
        return await super().save_many(records)


async def test_an_idle_link_commits_at_once_not_after_a_window(tmp_path: Path) -> None:
    """Group commit without a timer: with nothing in flight a write goes to the
    store at once, so its ack comes long before a (here 10 s) window."""
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    persistence = PersistenceActor.start(CountingStore(tmp_path / "runs.sqlite3"))
    ref = StoreLink.start(persistence, write_window_s=10.0)
    acks, saved = writer()
    try:
        ref.tell(saves(rec("r1"), ack_to=acks))
        version = await asyncio.wait_for(saved.get(), 2.0)
        assert version.run_id == "r1"
    finally:
        await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)


async def test_writes_that_arrive_during_a_commit_go_as_one_batch_after_it(
    tmp_path: Path,
) -> None:
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    persistence = Receiving.start(store)
    ref = StoreLink.start(persistence, write_window_s=10.0)
    acks, saved = writer()
    try:
        ref.tell(saves(rec("first"), ack_to=acks))
        assert await asyncio.to_thread(store.entered.wait, WAIT), "the first write never started"
        for i in range(20):
            ref.tell(saves(rec(f"run-{i:02d}"), ack_to=acks))
            await asyncio.sleep(0)  # each in a loop turn of its own
        store.gate.set()
        acked = {(await next_ack(saved)).run_id for _ in range(21)}
        assert acked == {"first"} | {f"run-{i:02d}" for i in range(20)}
        received = persistence.proxy().received.get()  # type: ignore[attr-defined]
        assert received == [1, 20], "the link sent the writes of the commit's time as one"
        assert store.calls == [1, 20]
    finally:
        store.gate.set()
        await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)


async def test_a_commit_that_never_lands_holds_later_writes_back_only_a_window(
    tmp_path: Path,
) -> None:
    """The window bounds the wait behind an unacknowledged commit: a record the
    store refuses for good (retried by the persistence actor) must not keep
    every later write of the link waiting for its ack."""
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    store = Refusing(tmp_path / "runs.sqlite3")
    persistence = PersistenceActor.start(store)
    ref = StoreLink.start(persistence, write_window_s=WINDOW_S)
    acks, saved = writer()
    try:
        ref.tell(saves(rec("bad"), ack_to=acks))
        assert await asyncio.to_thread(store.entered.wait, WAIT), "the first write never started"
        # "bad" is in flight and never acknowledged: "good" waits a window at most.
        ref.tell(saves(rec("good"), ack_to=acks))
        assert (await next_ack(saved)).run_id == "good"
        assert saved.empty()
    finally:
        await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)


async def test_commits_of_a_store_with_a_gap_start_that_far_apart(tmp_path: Path) -> None:
    """``commit_gap_s`` (CouchDB's 50 ms, here 0.3 s): the first write of an
    idle link goes at once, the next waits until the gap since the last commit
    began has passed, with what arrived meanwhile."""
    AsyncioActor.bind_loop(asyncio.get_running_loop())
    store = CountingStore(tmp_path / "runs.sqlite3")
    persistence = PersistenceActor.start(store)
    ref = StoreLink.start(persistence, write_window_s=10.0, commit_gap_s=0.3)
    acks, saved = writer()
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        ref.tell(saves(rec("r1"), ack_to=acks))
        await asyncio.wait_for(saved.get(), 2.0)
        assert loop.time() - began < 0.3  # at once: nothing was committed before
        ref.tell(saves(rec("r2"), ack_to=acks))
        ref.tell(saves(rec("r3"), ack_to=acks))
        got = {(await asyncio.wait_for(saved.get(), 5.0)).run_id for _ in range(2)}
        assert got == {"r2", "r3"}
        assert loop.time() - began >= 0.3  # not before the gap
        assert store.calls == [1, 2]  # and the two together
    finally:
        await ask_stop(ref)
        await ask_stop(persistence)
        AsyncioActor.bind_loop(None)
