"""A run only the store holds is replayed in pages, never loaded whole per reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runyard.actors import Evict, Finished, GetRun, Runtime, Subscribe
from runyard.actors.records import Event, RunRecord
from runyard.actors.stored_replay import PAGE_EVENTS, StoredReplay
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from tests.runtime_helpers import ALICE, BOB, collect, config, run_to_end

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

N = 5000


class ReadCountingStore(SQLiteStore):
    """Counts whole-record reads and event pages (the bytes still go through SQLite)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.whole_reads = 0
        self.pages: list[tuple[int, int]] = []

    async def get(self, run_id: str) -> RunRecord | None:
        self.whole_reads += 1
        return await super().get(run_id)

    async def get_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        self.pages.append((after_seq, limit))
        return await super().get_events(run_id, after_seq, limit)


async def _evicted_run(tmp_path: Path) -> tuple[Runtime, ReadCountingStore, RunRecord]:
    store = ReadCountingStore(tmp_path / "runs.sqlite3")
    runtime = Runtime(config(), persistence=PersistenceActor.start(store))
    await runtime.start()
    record, _ = await run_to_end(runtime, ALICE, "chatty", {"n": N, "batch": 500})
    assert await runtime.ask(Evict(record.run_id)) == 1  # only the store holds it now
    store.whole_reads = 0
    return runtime, store, record


async def test_a_stored_run_streams_exactly_in_pages(tmp_path: Path) -> None:
    runtime, store, record = await _evicted_run(tmp_path)
    try:
        sub = await runtime.ask(Subscribe(ALICE, record.run_id), timeout=5)
        assert isinstance(sub, StoredReplay)
        events, terminal = await collect(sub)
        assert [e.seq for e in events] == list(range(1, N + 2))
        assert events == list(record.events)
        assert isinstance(terminal, Finished)
        assert terminal.record.status == "success"
        assert terminal.record.events == (record.events[-1],)  # its `done`
        assert store.whole_reads == 0  # never the whole record
        assert len(store.pages) >= (N + 1) // PAGE_EVENTS
        assert all(limit <= PAGE_EVENTS for _, limit in store.pages)
        # A resume reads from its cursor on, not from the start.
        store.pages.clear()
        sub = await runtime.ask(Subscribe(ALICE, record.run_id, after_seq=N - 10), timeout=5)
        events, _ = await collect(sub)
        assert [e.seq for e in events] == list(range(N - 9, N + 2))
        assert store.pages[0][0] == N - 10
    finally:
        await runtime.shutdown(grace_s=0.1)


async def test_a_cursor_past_the_end_of_a_stored_run_still_ends_with_its_done(
    tmp_path: Path,
) -> None:
    runtime, _, record = await _evicted_run(tmp_path)
    try:
        sub = await runtime.ask(Subscribe(ALICE, record.run_id, after_seq=N + 50), timeout=5)
        events, terminal = await collect(sub)
        assert events == []
        assert isinstance(terminal, Finished)
        assert terminal.record.events[-1].type == "done"
        assert terminal.record.events[-1].seq == N + 1
        assert sub.end_seq == N + 1
    finally:
        await runtime.shutdown(grace_s=0.1)


async def test_a_stored_run_is_still_refused_to_others_and_read_whole_by_get(
    tmp_path: Path,
) -> None:
    from runyard.actors import NotOwner

    runtime, _, record = await _evicted_run(tmp_path)
    try:
        with pytest.raises(NotOwner):
            await runtime.ask(Subscribe(BOB, record.run_id), timeout=5)
        got: Any = await runtime.ask(GetRun(ALICE, record.run_id), timeout=5)
        assert len(got.events) == N + 1
    finally:
        await runtime.shutdown(grace_s=0.1)


async def test_read_run_pages_a_stored_run_and_the_body_is_the_same_json(tmp_path: Path) -> None:
    import json

    from runyard.actors import ReadRun
    from runyard.web.routes.runs import _paged_record
    from runyard.web.wire import record_json

    runtime, store, record = await _evicted_run(tmp_path)
    try:
        found = await runtime.ask(ReadRun(ALICE, record.run_id), timeout=5)
        assert isinstance(found, StoredReplay)
        assert (found.header.status, found.end_seq) == ("success", N + 1)
        body = b"".join([chunk async for chunk in _paged_record(found)])
        assert json.loads(body) == json.loads(record_json(record))
        assert store.whole_reads == 0
    finally:
        await runtime.shutdown(grace_s=0.1)
