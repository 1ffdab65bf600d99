"""Shared helpers for the store-path tests: real SQLite stores that count or fail on cue.

The wrappers subclass the real store only to count calls or to refuse writes
on command; every byte still goes through SQLite.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pykka

from runyard.actors.persistence_protocol import RunsPersisted, RunWrite, SaveRuns
from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.persistence.sqlite_store import SQLiteStore
from runyard.persistence.store import RunStore

T0 = 1_700_000_000.0
WAIT = 20.0


class CountingStore(SQLiteStore):
    """Counts save_many calls; the first one can be held at a gate."""

    def __init__(self, path: Path, *, hold_first: bool = False) -> None:
        super().__init__(path)
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()

    async def save_many(self, records: list[RunWrite]) -> None:
        self.calls.append(len(records))
        self.entered.set()
        if not self.gate.wait(WAIT):
            raise TimeoutError("gate never opened")
        await super().save_many(records)


class FlakyStore(SQLiteStore):
    """Writes, pings and gets fail until ``up`` is set: a store that is down.

    ``list_for_user`` keeps working so that the merge of pending records into
    a stored page can be checked while writes are failing.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.up = threading.Event()
        self.failures = 0

    async def save_many(self, records: list[RunWrite]) -> None:
        if not self.up.is_set():
            self.failures += 1
            raise ConnectionError("store is down")
        await super().save_many(records)

    async def ping(self) -> None:
        if not self.up.is_set():
            raise ConnectionError("store is down")
        await super().ping()

    async def get(self, run_id: str) -> RunRecord | None:
        if not self.up.is_set():
            raise ConnectionError("store is down")
        return await super().get(run_id)


class AckCollector(pykka.ThreadingActor):
    def __init__(self, out: queue.Queue[RunsPersisted]) -> None:
        super().__init__()
        self.out = out

    def on_receive(self, message: Any) -> None:
        if isinstance(message, RunsPersisted):
            self.out.put(message)


def rec(
    run_id: str,
    *,
    status: RunStatus = "success",
    owner: str = "alice",
    started_at: float = T0,
    events: int = 3,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        owner=owner,
        agent="echo",
        status=status,
        input={"i": run_id},
        started_at=started_at,
        finished_at=None if status == "running" else started_at + 1,
        events=tuple(
            Event(seq=s, ts=started_at + s / 100, type="log", data={"s": s})
            for s in range(1, events + 1)
        ),
        result=None if status == "running" else {"ok": run_id},
    )


async def read_back_async(path: Path, run_id: str) -> RunRecord | None:
    """Read the file directly, as a restarted server would."""
    store = SQLiteStore(path)
    await store.open()
    try:
        return await store.get(run_id)
    finally:
        await store.close()


def read_back(path: Path, run_id: str) -> RunRecord | None:
    """:func:`read_back_async` for a test with no event loop."""
    return asyncio.run(read_back_async(path, run_id))


def saves(*records: RunRecord, ack_to: pykka.ActorRef[Any] | None = None) -> SaveRuns:
    """A ``SaveRuns`` of whole records (each record's header and entire trace)."""
    return SaveRuns(tuple(RunWrite.of(r) for r in records), ack_to=ack_to)


def whole(records: list[RunRecord]) -> list[RunWrite]:
    """Writes of whole records (header and entire trace), for ``RunStore.save_many``."""
    return [RunWrite.of(r) for r in records]


def stored(
    run: Callable[[Coroutine[Any, Any, Any]], Any], store: RunStore, run_id: str
) -> RunRecord:
    """``run_id``'s record as ``store`` reads it back (``run`` drives the coroutine).

    Fails the test, naming the run, when the store does not have it.
    """
    got: RunRecord | None = run(store.get(run_id))
    assert got is not None, f"run {run_id} is not in the store"
    return got
