"""CouchStore commits of live runs, on a real CouchDB.

What a commit costs (one ``_bulk_docs``, the run doc and new chunks only),
that a chunk CouchDB refuses is never acknowledged and its retry completes
the trace, that a chunk stored with other content is refused, and that
chunks left behind by another writer are never read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord
from runyard.persistence.couch_chunks import event_doc_id, pack_event_docs
from runyard.persistence.couch_layout import CouchStoreError
from runyard.persistence.couch_store import CouchStore
from tests.couch_store_fixtures import T0, Run, Stores, record
from tests.store_helpers import stored
from tests.waiting import wait_until

pytestmark = [pytest.mark.couchdb, pytest.mark.timeout(60)]


# A design doc that refuses every event chunk while it is there (CouchDB runs it
# on each write), so a test can have one _bulk_docs take the run doc but not a chunk.
REFUSE_CHUNKS = {
    "validate_doc_update": (
        "function (doc) { if (doc._id.indexOf(':e:') > 0)"
        " { throw({forbidden: 'no chunks today'}); } }"
    )
}


@pytest.fixture
def store(stores: Stores) -> CouchStore:
    return stores()


def header(run_id: str = "live") -> RunRecord:
    return record(run_id, "running", updated_at=T0)


def events(first: int, last: int) -> tuple[Event, ...]:
    return tuple(Event(seq=i, ts=T0 + i, type="log", data={"i": i}) for i in range(first, last + 1))


def commit(first: int, last: int, run_id: str = "live") -> RunWrite:
    return RunWrite(replace(header(run_id), updated_at=T0 + last), last, events(first, last))


def count_bulk_and_reads(store: CouchStore) -> list[str]:
    calls: list[str] = []
    database = store._database()
    bulk, post, get = database._bulk_docs, database.all_docs.post, database.all_docs.get

    def counted_bulk(*args: Any, **kw: Any) -> Any:
        calls.append("_bulk_docs")
        return bulk(*args, **kw)

    def counted_post(*args: Any, **kw: Any) -> Any:
        calls.append("_all_docs")
        return post(*args, **kw)

    def counted_get(*args: Any, **kw: Any) -> Any:
        calls.append("_all_docs range")
        return get(*args, **kw)

    database._bulk_docs = counted_bulk  # type: ignore[method-assign]
    database.all_docs.post = counted_post  # type: ignore[method-assign]
    database.all_docs.get = counted_get  # type: ignore[method-assign]
    return calls


def test_a_commit_of_running_runs_is_two_bulk_docs_and_no_read(
    store: CouchStore, run: Run[Any]
) -> None:
    # Event chunks, then run docs: a run doc never counts a chunk that was refused.
    ids = [f"r{i}" for i in range(20)]
    run(store.save_many([RunWrite(header(i), 0) for i in ids]))
    calls = count_bulk_and_reads(store)
    for n in range(10):
        run(store.save_many([commit(5 * n + 1, 5 * n + 5, i) for i in ids]))
    assert calls == ["_bulk_docs"] * 20
    assert stored(run, store, "r7").events == events(1, 50)


def test_a_refused_chunk_is_not_acknowledged_and_the_retry_completes_the_trace(
    store: CouchStore, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    run(store.save_many([commit(1, 5)]))
    ddoc = http.put(f"/{couch_db_name}/_design/refuse", json=REFUSE_CHUNKS)
    assert ddoc.status_code == 201, ddoc.text
    with pytest.raises(CouchStoreError, match="refused"):
        run(store.save_many([commit(6, 10)]))
    # The run doc was not written either: the store still holds the first commit, whole.
    assert stored(run, store, "live").events == events(1, 5)
    assert run(store.get_events("live", 0, 50)) == list(events(1, 5))
    rev = ddoc.json()["rev"]
    assert http.delete(f"/{couch_db_name}/_design/refuse", params={"rev": rev}).is_success
    # CouchDB forgets a deleted design doc's validation a moment later (its design
    # doc cache is updated asynchronously): wait until a chunk-like doc is taken.
    probe = f"/{couch_db_name}/probe:e:lifted"
    wait_until(lambda: http.put(probe, json={}).status_code == 201, 10, "the refusal to lift")
    # The persistence actor retries the batch, joined with the next commit.
    run(store.save_many([commit(6, 10), commit(11, 12)]))
    assert stored(run, store, "live").events == events(1, 12)


def test_a_chunk_stored_with_other_content_is_refused(
    store: CouchStore, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    run(store.save_many([commit(1, 3)]))
    # Someone wrote this store's next chunk id with other events in it.
    [chunk] = pack_event_docs("live", store._gen, events(4, 6), 100_000)
    forged = {**chunk.body, "events": [[4, T0, "log", {"forged": True}]]}
    assert http.put(f"/{couch_db_name}/{chunk.doc_id}", json=forged).status_code == 201
    with pytest.raises(CouchStoreError, match="refused"):
        run(store.save_many([commit(4, 6)]))
    with pytest.raises(CouchStoreError, match="refused"):
        run(store.save_many([commit(4, 6)]))  # and again: never acknowledged

    # The same content already there (an earlier attempt wrote it) is success.
    run(store.save_many([commit(1, 3, "twin")]))
    [same] = pack_event_docs("twin", store._gen, events(4, 6), 100_000)
    assert same.doc_id == event_doc_id("twin", 4, 6, store._gen)
    assert http.put(f"/{couch_db_name}/{same.doc_id}", json=same.body).status_code == 201
    run(store.save_many([commit(4, 6, "twin")]))
    assert stored(run, store, "twin").events == events(1, 6)


def test_chunks_another_writer_left_are_never_read(
    store: CouchStore,
    run: Run[Any],
    http: httpx.Client,
    couch_url: str,
    couch_db_name: str,
) -> None:
    run(store.save_many([commit(1, 3)]))
    # The writer died with a commit in flight: its chunk 4..9 is there, its run doc not.
    [stray] = pack_event_docs("live", store._gen, events(4, 9), 100_000)
    odd = {**stray.body, "events": [[s, T0, "log", {"stray": s}] for s in range(4, 10)]}
    assert http.put(f"/{couch_db_name}/{stray.doc_id}", json=odd).status_code == 201
    # Another node takes the run over and ends it with its own events 4..5.
    other = CouchStore(couch_url, db=couch_db_name)
    run(other.open())
    try:
        final = replace(header(), status="error", finished_at=T0 + 9, updated_at=T0 + 9)
        run(other.save_many([RunWrite(final, 5, events(4, 5))]))
        for reader in (store, other):
            assert stored(run, reader, "live").events == events(1, 5)
            assert run(reader.get_events("live", 3, 10)) == list(events(4, 5))
        assert run(other.delete("live")) is True
    finally:
        run(other.close())
    rows = http.get(f"/{couch_db_name}/_all_docs").json()["rows"]
    assert [r["id"] for r in rows if not r["id"].startswith("_design/")] == []
