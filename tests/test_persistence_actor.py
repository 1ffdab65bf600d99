"""The persistence actor against a real SQLiteStore.

The wrappers below subclass the real store only to count calls or to refuse
writes on command; every byte still goes through SQLite.  Nothing sleeps:
tests wait on events, queues and futures with timeouts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from runyard.actors.errors import StoreUnavailable
from runyard.actors.persistence_protocol import (
    DeleteStored,
    LoadRun,
    PurgeStored,
    QueryRuns,
    RecoverInterrupted,
    RunsPersisted,
    RunWrite,
    StoreHealth,
    StoreStatus,
)
from runyard.actors.records import RunStatus
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from tests.store_helpers import (
    T0,
    WAIT,
    AckCollector,
    CountingStore,
    FlakyStore,
    read_back,
    read_back_async,
    rec,
    saves,
    whole,
)


def acked(acks: queue.Queue[RunsPersisted], n: int) -> dict[str, RunStatus]:
    """Wait until ``n`` distinct runs were acknowledged."""
    got: dict[str, RunStatus] = {}
    while len(got) < n:
        got.update((s.run_id, s.status) for s in acks.get(timeout=WAIT).saved)
    return got


@pytest.fixture
def threads_before() -> Iterator[set[threading.Thread]]:
    before = set(threading.enumerate())
    yield before
    pykka.ActorRegistry.stop_all(timeout=WAIT)


@pytest.fixture
def acks(threads_before: set[threading.Thread]) -> queue.Queue[RunsPersisted]:
    return queue.Queue()


@pytest.fixture
def collector(acks: queue.Queue[RunsPersisted]) -> Iterator[pykka.ActorRef[Any]]:
    ref = AckCollector.start(acks)
    yield ref
    ref.stop(timeout=WAIT)


def ask(ref: pykka.ActorRef[Any], message: Any) -> Any:
    return ref.ask(message, block=True, timeout=WAIT)


def start(store: SQLiteStore) -> pykka.ActorRef[PersistenceActor]:
    return PersistenceActor.start(store, retry_initial_s=0.01, retry_max_s=0.05, batch_max=500)


@pytest.mark.timeout(60)
def test_a_burst_becomes_few_batches_and_every_run_is_acked(
    tmp_path: Path, collector: pykka.ActorRef[Any], acks: queue.Queue[RunsPersisted]
) -> None:
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    ref = start(store)
    ref.tell(saves(rec("run-00000"), ack_to=collector))
    assert store.entered.wait(WAIT)  # the actor is now busy writing the first one
    for i in range(1, 10_000):
        ref.tell(saves(rec(f"run-{i:05d}", started_at=T0 + i), ack_to=collector))
    store.gate.set()

    saved = acked(acks, 10_000)
    assert set(saved.values()) == {"success"}
    assert sum(store.calls) == 10_000
    assert store.calls[0] == 1
    assert len(store.calls) <= 25, store.calls  # 1 + ceil(9,999 / 500) = 21
    health = ask(ref, StoreStatus())
    assert health == StoreHealth(up=True, backlog=0, last_error=None)
    ref.stop(timeout=WAIT)
    assert read_back(store.path, "run-09999") == rec("run-09999", started_at=T0 + 9999)


@pytest.mark.timeout(60)
def test_latest_record_wins_but_terminal_is_kept(
    tmp_path: Path, collector: pykka.ActorRef[Any], acks: queue.Queue[RunsPersisted]
) -> None:
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    ref = start(store)
    ref.tell(saves(rec("warmup")))
    assert store.entered.wait(WAIT)
    ref.tell(saves(rec("r", status="running", events=1), ack_to=collector))
    ref.tell(saves(rec("r", status="running", events=2), ack_to=collector))
    ref.tell(saves(rec("r", status="success", events=4), ack_to=collector))
    ref.tell(saves(rec("r", status="running", events=3), ack_to=collector))
    store.gate.set()
    assert acked(acks, 1) == {"r": "success"}
    assert store.calls == [1, 1]
    assert ask(ref, LoadRun("r")) == rec("r", status="success", events=4)


@pytest.mark.timeout(60)
def test_store_down_then_up_nothing_dropped(
    tmp_path: Path, collector: pykka.ActorRef[Any], acks: queue.Queue[RunsPersisted]
) -> None:
    store = FlakyStore(tmp_path / "runs.sqlite3")
    ref = start(store)
    records = [rec(f"d-{i:03d}", started_at=T0 + i) for i in range(120)]
    for r in records:
        ref.tell(saves(r, ack_to=collector))
    ref.tell(saves(rec("d-live", status="running", started_at=T0 + 500)))

    # Reads keep working meanwhile: LoadRun and QueryRuns answer from pending.
    assert ask(ref, LoadRun("d-007")) == records[7]
    assert ask(ref, LoadRun("d-live")).status == "running"
    page = ask(ref, QueryRuns(owner="alice", limit=5))
    assert [s.run_id for s in page] == ["d-live", "d-119", "d-118", "d-117", "d-116"]
    page = ask(ref, QueryRuns(owner="alice", status="success", limit=3))
    assert [s.run_id for s in page] == ["d-119", "d-118", "d-117"]
    health = ask(ref, StoreStatus())
    assert health.up is False
    assert health.backlog == 121
    assert health.last_error is not None
    assert "store is down" in health.last_error
    assert acks.empty()
    with pytest.raises(StoreUnavailable):
        ask(ref, LoadRun("not-pending"))
    failures_while_down = store.failures
    assert failures_while_down >= 1

    store.up.set()
    saved = acked(acks, 120)
    assert set(saved) == {r.run_id for r in records}
    health = ask(ref, StoreStatus())
    assert health.backlog == 0
    assert health.up is True
    ref.stop(timeout=WAIT)
    for r in records:
        assert read_back(store.path, r.run_id) == r
    assert read_back(store.path, "d-live") is not None


@pytest.mark.timeout(60)
def test_a_record_the_store_refuses_does_not_block_the_others(
    tmp_path: Path, collector: pykka.ActorRef[Any], acks: queue.Queue[RunsPersisted]
) -> None:
    class Picky(SQLiteStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.accept_poison = threading.Event()

        async def save_many(self, records: list[RunWrite]) -> None:
            if not self.accept_poison.is_set() and any(r.run_id == "poison" for r in records):
                raise ValueError("document too large")
            await super().save_many(records)

    store = Picky(tmp_path / "runs.sqlite3")
    ref = start(store)
    ref.tell(saves(*(rec(f"ok-{i}") for i in range(3)), rec("poison"), ack_to=collector))
    ref.tell(saves(*(rec(f"ok-{i}") for i in range(3, 6)), ack_to=collector))
    assert set(acked(acks, 6)) == {f"ok-{i}" for i in range(6)}
    health = ask(ref, StoreStatus())
    assert (health.up, health.backlog) == (True, 1)
    assert "document too large" in (health.last_error or "")
    store.accept_poison.set()
    assert acked(acks, 1) == {"poison": "success"}


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_recover_interrupted_keeps_checkpointed_events(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    # A process that crashed with runs in flight: its store holds them as running.
    crashed = SQLiteStore(path)
    await crashed.open()
    await crashed.save_many(
        whole(
            [
                rec("i-1", status="running", events=5),
                rec("i-2", status="running", events=0, owner="bob"),
                rec("done", status="success"),
            ]
        )
    )
    await crashed.close()
    # The persistence actor runs on its own thread: blocking asks are its interface.
    ref = start(SQLiteStore(path))
    marked = ask(ref, RecoverInterrupted("local", "interrupted: node local stopped"))
    assert sorted(marked) == ["i-1", "i-2"]
    got = ask(ref, LoadRun("i-1"))
    assert got.status == "error"
    assert got.error == "interrupted: node local stopped"
    assert got.finished_at is not None
    checkpointed = rec("i-1", status="running", events=5).events
    assert got.events[:-1] == checkpointed
    done = got.events[-1]
    assert (done.seq, done.type) == (6, "done")
    assert done.data == {"status": "error", "result": None, "error": got.error}
    assert ask(ref, RecoverInterrupted("local", "interrupted: node local stopped")) == ()
    ref.stop(timeout=WAIT)
    stored = await read_back_async(path, "i-1")
    assert stored is not None
    assert stored.status == "error"
    assert len(stored.events) == 6  # the 5 checkpointed events and the closing `done`
    assert await read_back_async(path, "done") == rec("done")


@pytest.mark.timeout(60)
def test_delete_purge_and_query(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "runs.sqlite3")
    store.up.set()
    ref = start(store)
    ask(ref, saves(rec("a", started_at=T0 - 100), rec("b"), rec("c", owner="bob")))
    assert [s.run_id for s in ask(ref, QueryRuns(owner="alice"))] == ["b", "a"]
    assert ask(ref, PurgeStored(cutoff=T0 - 10)) == 1
    assert ask(ref, LoadRun("a")) is None
    assert ask(ref, DeleteStored("b")) is True
    assert ask(ref, DeleteStored("b")) is False
    assert ask(ref, QueryRuns(owner="alice")) == []

    # A pending (unwritten) run is deleted too, and is not written afterwards.
    store.up.clear()
    ref.tell(saves(rec("p")))
    assert ask(ref, StoreStatus()).backlog == 1
    store.up.set()
    assert ask(ref, DeleteStored("p")) is True
    assert ask(ref, StoreStatus()).backlog == 0
    assert ask(ref, LoadRun("p")) is None


@pytest.mark.timeout(60)
def test_no_thread_left_behind_even_when_stopping_while_down(
    tmp_path: Path, threads_before: set[threading.Thread]
) -> None:
    store = FlakyStore(tmp_path / "runs.sqlite3")
    ref = PersistenceActor.start(store, retry_initial_s=0.01, retry_max_s=0.02, stop_timeout_s=0.5)
    ref.tell(saves(rec("lost-on-purpose")))
    assert ask(ref, StoreStatus()).backlog == 1
    ref.stop(timeout=WAIT)
    for t in set(threading.enumerate()) - threads_before:
        t.join(WAIT)
    assert set(threading.enumerate()) - threads_before == set()


@pytest.mark.timeout(60)
def test_stop_flushes_what_is_pending(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    ref = start(store)
    ref.tell(saves(rec("first")))
    assert store.entered.wait(WAIT)
    ref.tell(saves(rec("last")))
    stopped = ref.stop(block=False)
    store.gate.set()
    stopped.get(timeout=WAIT)
    assert read_back(store.path, "last") == rec("last")


@pytest.mark.timeout(60)
def test_store_down_at_start_is_opened_later(
    tmp_path: Path, collector: pykka.ActorRef[Any], acks: queue.Queue[RunsPersisted]
) -> None:
    class LateStore(SQLiteStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.reachable = threading.Event()

        async def open(self) -> None:
            if not self.reachable.is_set():
                raise ConnectionError("connection refused")
            await super().open()

    store = LateStore(tmp_path / "runs.sqlite3")
    ref = start(store)
    health = ask(ref, StoreStatus())
    assert (health.up, health.backlog) == (False, 0)
    assert "connection refused" in (health.last_error or "")
    with pytest.raises(StoreUnavailable):
        ask(ref, QueryRuns(owner="alice"))
    ref.tell(saves(rec("early"), ack_to=collector))
    assert ask(ref, LoadRun("early")) == rec("early")
    store.reachable.set()
    assert acked(acks, 1) == {"early": "success"}
    assert ask(ref, StoreStatus()) == StoreHealth(up=True, backlog=0, last_error=None)
