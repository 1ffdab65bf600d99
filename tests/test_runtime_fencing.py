"""A node judged dead that was only paused: once another node fenced its run,
the run is dropped here, its streams are told to come back, and nothing it
still emits is stored or delivered (real CouchDB 3.5, else pouchdb-server)."""

from __future__ import annotations

import pytest

from runyard.actors.messages import Caller, GetRun, StartRun, Subscribe
from runyard.actors.records import Event
from runyard.actors.runtime import Runtime
from runyard.actors.stream_items import Closing, Finished
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.couch_store import CouchStore
from tests.runtime_helpers import Gate, catalog_with, config
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(60)]

ALICE = Caller("alice")


async def test_a_fenced_run_is_dropped_by_its_old_owner_and_every_delivered_event_is_stored(
    couch_url: str, couch_db_name: str
) -> None:
    gate = Gate()
    zombie = Runtime(
        config(node_id="zombie"),
        catalog=catalog_with(gated=gate.agent),
        persistence=PersistenceActor.start(CouchStore(couch_url, db=couch_db_name)),
    )
    await zombie.start()
    other = CouchStore(couch_url, db=couch_db_name)
    await other.open()
    try:
        started = await zombie.ask(StartRun(ALICE, "gated", {}), timeout=10)
        run_id = started.run_id
        sub = await zombie.ask(Subscribe(ALICE, run_id), timeout=10)
        await gate.emit(3)
        seen: list[Event] = []
        async for item in sub:
            assert isinstance(item, Event)
            seen.append(item)
            if item.seq == 3:
                break

        # Another node claimed the zombie's lease: it fences the run, then ends it.
        [fenced] = await other.fence_unfinished("zombie")
        assert fenced.event_count == 3
        await other.save_many([fenced.interrupted("interrupted: node zombie stopped", 1e9)])

        # The zombie goes on: its next commit is refused, so the run is dropped
        # here and the stream is told to come back, with nothing past seq 3.
        await gate.emit(2)
        rest = [item async for item in sub]
        assert not any(isinstance(i, Event) for i in rest), rest
        assert isinstance(rest[-1], Closing), rest

        async def dropped() -> bool:
            record = await zombie.ask(GetRun(ALICE, run_id), timeout=10)
            return bool(record.finished)

        await wait_until_async(dropped, 20, "the zombie to read the run from the store")
        stored = await other.get(run_id)
        assert stored is not None
        assert stored.status == "error"
        # Every event a client got is stored with the same seq; the done follows.
        assert [(e.seq, e.type) for e in stored.events[: len(seen)]] == [
            (e.seq, e.type) for e in seen
        ]
        assert [e.type for e in stored.events[len(seen) :]] == ["done"]
        # A stream opened on the zombie now is the stored run's.
        again = await zombie.ask(Subscribe(ALICE, run_id), timeout=10)
        items = [item async for item in again]
        assert isinstance(items[-1], Finished)
        assert items[-1].record.status == "error"
    finally:
        await zombie.shutdown(grace_s=0.1)
        await other.close()
