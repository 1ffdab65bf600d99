"""CouchStore's document layout, as CouchDB holds it.

Trace splitting (no document over ``chunk_bytes``), a small run in one
document, a batch of new runs in one request, and a live run's commit that
adds chunks and rewrites only its run doc. Runs against the CouchDB test
server (``couch_url``); fixtures and builders in ``tests/couch_store_fixtures.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event
from tests.couch_docs import all_docs, docs_of, encoded_size
from tests.couch_store_fixtures import T0, Run, Stores, log_events, record
from tests.store_helpers import whole

pytestmark = [pytest.mark.couchdb]


@pytest.mark.timeout(300)
def test_thirty_megabyte_trace_is_split_and_round_trips(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    store = stores()
    line = "log line ✓ 日本語 " + "x" * 3000
    events = [
        Event(seq=i, ts=T0 + i / 1000, type="log", data={"i": i, "line": line})
        for i in range(1, 10_001)
    ]
    # One event far bigger than a chunk (split into parts) and a result too big
    # for the run doc (spilled into parts).
    events[4_999] = Event(seq=5_000, ts=T0 + 5, type="blob", data={"text": "ü" * 2_500_000})
    trace = tuple(events)
    big_result = {"rows": ["r" * 100] * 20_000}

    checkpoint = record("big", "running", trace[:6_000])
    run(store.save(checkpoint))
    first_chunks = {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name) if ":e:" in d["_id"]}

    final = record("big", "success", trace, result=big_result)
    run(store.save(final))
    assert run(store.get("big")) == final
    assert run(store.list_for_user("alice"))[0].event_count == 10_000

    docs = all_docs(http, couch_db_name)
    assert sum(encoded_size(d) for d in docs) > 30_000_000
    assert max(encoded_size(d) for d in docs) <= store.chunk_bytes
    run_doc = next(d for d in docs if d["_id"] == "big")
    chunks = [d for d in docs if ":e:" in d["_id"]]
    assert "events" not in run_doc
    assert run_doc["writers"] == [[store._gen, 1]]
    assert any("part" in d for d in chunks)  # the big event's parts
    assert "result" in run_doc["spilled"]
    # The checkpoint's chunks are never rewritten: the final write added chunks
    # for the events after it, and nothing else.
    assert set(first_chunks) <= {d["_id"] for d in chunks}
    assert all(d["_rev"].startswith("1-") for d in chunks)
    assert min(d["first_seq"] for d in chunks if d["_id"] not in first_chunks) == 6_001


@pytest.mark.timeout(60)
def test_small_trace_is_one_document_and_round_trips(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    store = stores()
    events = (
        *log_events(10, 20),
        Event(seq=11, ts=T0 + 1, type="done ✓", data={"nested": {"a": [1, 2.5, None]}}),
    )
    final = record("small", "success", events, result={"ok": True})
    run(store.save(final))
    docs = docs_of(http, couch_db_name, "small")
    assert list(docs) == ["small"]
    assert len(docs["small"]["events"]) == 11
    assert "trace" not in docs["small"]
    assert run(store.get("small")) == final
    assert run(stores().get("small")) == final  # a store that never wrote it


@pytest.mark.timeout(60)
def test_a_batch_of_new_small_runs_is_one_request(stores: Stores, run: Run[Any]) -> None:
    store = stores()
    database = store._database()
    calls: list[str] = []
    for name in ("_bulk_docs", "_find"):
        original = getattr(database, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        setattr(database, name, counted)
    post = database.all_docs.post

    def counted_post(*args: Any, **kw: Any) -> Any:
        calls.append("_all_docs")
        return post(*args, **kw)

    database.all_docs.post = counted_post
    records = [record(f"n-{i:03d}", "success", log_events(11, 10)) for i in range(50)]
    run(store.save_many(whole(records)))
    assert calls == ["_bulk_docs"]
    # Their stale checkpoints arriving afterwards cost nothing at all.
    run(
        store.save_many(
            whole([record(f"n-{i:03d}", "running", log_events(5, 10)) for i in range(50)])
        )
    )
    assert calls == ["_bulk_docs"]
    assert [run(store.get(r.run_id)) for r in records[:3]] == records[:3]


@pytest.mark.timeout(120)
def test_a_live_runs_commit_rewrites_its_run_doc_and_adds_chunks_only(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    # 8 KiB documents: ~7 KB of events per chunk.
    store = stores(chunk_bytes=8192)
    events = log_events(60, 500)
    header = record("live", "running")
    run(store.save_many([RunWrite(header, 0)]))
    done = 0
    for n in (1, 3, 4, 9, 10, 25, 26, 40, 59):
        before = docs_of(http, couch_db_name, "live")
        write = RunWrite(replace(header, updated_at=T0 + n), n, events[done:n])
        run(store.save_many([write]))
        after = docs_of(http, couch_db_name, "live")
        assert {i for i in before if after[i]["_rev"] != before[i]["_rev"]} == {"live"}
        added = [after[i] for i in set(after) - set(before)]
        assert sorted(e[0] for d in added for e in d["events"]) == list(range(done + 1, n + 1))
        assert after["live"]["event_count"] == n
        assert max(encoded_size(d) for d in after.values()) <= store.chunk_bytes
        assert run(stores().get("live")) == record("live", "running", events[:n], updated_at=T0 + n)
        done = n
    final = replace(header, status="success", finished_at=T0 + 99, updated_at=T0 + 99)
    run(store.save_many([RunWrite(final, 60, events[59:])]))
    for reader in (store, stores()):
        got = run(reader.get("live"))
        assert got == replace(final, events=events)
        assert run(reader.get_events("live", 57, 10)) == list(events[57:])


@pytest.mark.timeout(60)
def test_unencodable_text_does_not_break_the_write(stores: Stores, run: Run[Any]) -> None:
    store = stores()
    lone = "\ud800"  # a lone surrogate: valid in a Python str, not in UTF-8
    bad = record("odd", "error", (Event(seq=1, ts=T0, type="log", data={"s": lone}),))
    run(store.save(bad))
    got = run(store.get("odd"))
    assert got is not None
    assert got.status == "error"
    assert got.events[0].data == {"s": "?"}
