"""Two CouchStores writing one run: ``_rev`` races and stale checkpoints.

A terminal status always wins over a running checkpoint, whichever write
reaches CouchDB first, and a stale running write never shrinks the trace.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from runyard.actors.records import Event
from runyard.persistence.couch_chunks import EVENTS_TYPE, event_doc_id
from tests.couch_docs import all_docs
from tests.couch_store_fixtures import T0, Run, Stores, log_events, record
from tests.store_helpers import whole

pytestmark = [pytest.mark.couchdb, pytest.mark.timeout(60)]


def test_stale_writers_lose_to_the_terminal_status(stores: Stores, run: Run[Any]) -> None:
    events = tuple(Event(seq=i, ts=T0 + i, type="log", data={"i": i}) for i in range(1, 9))
    a, b = stores(), stores()
    run(a.save(record("r", "running", events[:2])))

    # b read the run doc while it was running (its _rev is now stale) ...
    snapshot = run(b._docs_by_id(["r"]))
    stale_read = b._docs_by_id
    reads = 0

    async def first_read_is_stale(ids: Any) -> dict[str, dict[str, Any]]:
        nonlocal reads
        reads += 1
        return snapshot if reads == 1 else await stale_read(ids)

    b._docs_by_id = first_read_is_stale  # type: ignore[method-assign]
    # ... then a finished the run ...
    final = record("r", "stopped", events[:5], updated_at=T0 + 5)
    run(a.save(final))
    # ... and b's later checkpoint, written with the stale _rev, conflicts, re-reads
    # and gives way: the terminal status and its trace stay.
    run(b.save(record("r", "running", events, updated_at=T0 + 9)))
    assert reads == 2
    assert run(a.get("r")) == final

    # The other way round: b's running write got in first, a's terminal write
    # with a stale _rev conflicts, re-reads and wins.
    run(a.save(record("s", "running", events[:1])))
    snapshot = run(a._docs_by_id(["s"]))
    run(b.save(record("s", "running", events[:6], updated_at=T0 + 6)))
    reads = 0
    stale_read = a._docs_by_id
    a._docs_by_id = first_read_is_stale  # type: ignore[method-assign]
    done = record("s", "error", events[:7], updated_at=T0 + 7)
    run(a.save(done))
    assert run(b.get("s")) == done

    # Truly concurrent: a flood of running checkpoints against one terminal write.
    async def race() -> None:
        checkpoints = [
            b.save(record("t", "running", events[:n], updated_at=T0 + n)) for n in range(1, 8)
        ]
        await asyncio.gather(
            *checkpoints[:3], a.save(record("t", "success", events)), *checkpoints[3:]
        )

    run(race())
    assert run(a.get("t")) == record("t", "success", events)


def test_stale_running_writes_after_a_terminal_one_change_nothing(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    writer = stores(chunk_bytes=8192)
    small, big = log_events(3, 100), log_events(40, 500)
    finals = [
        record("s", "success", small, updated_at=T0 + 5),
        record("b", "stopped", big, updated_at=T0 + 5),
    ]
    run(writer.save_many(whole(finals)))
    before = {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name)}
    stale = [
        record(run_id, "running", events, updated_at=T0 + 50)
        for run_id, events in (("s", big), ("b", big + log_events(41)[40:]), ("s", small[:1]))
    ]
    # Through the store that knows the runs finished, and through one that must read.
    for store in (writer, stores(chunk_bytes=8192)):
        for stale_record in stale:
            run(store.save(stale_record))
        run(store.save_many(whole(stale)))
        assert {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name)} == before
        assert [run(store.get(r.run_id)) for r in finals] == finals

    # Between two running versions, a stale one never shrinks the stored trace.
    run(writer.save(record("r", "running", big[:20], updated_at=T0 + 20)))
    run(stores(chunk_bytes=8192).save(record("r", "running", big[:2], updated_at=T0 + 30)))
    run(writer.save(record("r", "running", big[:1], updated_at=T0 + 40)))
    assert run(stores().get("r")) == record("r", "running", big[:20], updated_at=T0 + 20)


def test_a_dead_writers_stray_chunk_ending_on_the_same_seq_never_hides_the_successors(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    # A node died mid-commit: its chunk for seq 3 is stored, its run doc (2 events)
    # is not.  The node that takes the run over writes its `done` as seq 3, in a
    # chunk of its own that also ends on seq 3.  A replay page from seq 2 must
    # find the successor's chunk whichever of the two sorts first.
    events = tuple(Event(seq=i, ts=T0 + i, type="log", data={"i": i}) for i in range(1, 4))
    dead, successor = stores(), stores()
    run(dead.save(record("r", "running", events[:2])))
    stray_id = event_doc_id("r", 3, 3, "00000000")  # sorts before any other writer's
    stray = {"type": EVENTS_TYPE, "run_id": "r", "gen": "00000000", "first_seq": 3}
    stray |= {"last_seq": 3, "events": [[3, T0 + 3, "log", {"i": "stray"}]]}
    assert http.put(f"/{couch_db_name}/{stray_id}", json=stray).status_code in (201, 202)
    stored = run(successor.get_header("r"))
    assert stored is not None
    run(successor.save_many([stored.interrupted("interrupted: node dead stopped", T0 + 9)]))
    page = run(successor.get_events("r", 2, 1))
    assert [(e.seq, e.type) for e in page] == [(3, "done")]
    assert [e.type for e in run(dead.get_events("r", 0, 10))] == ["log", "log", "done"]
