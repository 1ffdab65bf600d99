"""The CouchDB document layout, without a server.

How a record becomes documents (run doc, inline trace, trace chunks, spilled
fields) and how they become the record again: round trips, where chunks
break, that no document outgrows ``chunk_bytes`` as CouchDB will store it
(with ``_id`` and ``_rev``), and the merge rule applied to stored versions.
``tests/test_couch_store.py`` shows the same documents on a real server.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from actors.jsonsafe import dumps
from actors.records import Event, RunRecord, RunStatus
from persistence.couch_chunks import chunk_id, event_entry, events_from_chunks, pack_chunks
from persistence.couch_layout import (
    CouchStoreError,
    DocLayout,
    Plan,
    named_ids,
    part_ids,
    read_record,
    replaces_stored,
    run_doc_meta,
    summary_from_doc,
)

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
REV = "12-" + "f" * 32  # what CouchDB 3 adds to every stored document


def record(
    status: RunStatus = "success",
    events: tuple[Event, ...] = (),
    *,
    run_id: str = "run-1",
    updated_at: float = T0 + 1,
    **fields: Any,
) -> RunRecord:
    values: dict[str, Any] = {
        "owner": "alice",
        "agent": "echo",
        "input": {"prompt": "hi"},
        "result": None,
        "error": None,
        **fields,
    }
    return RunRecord(
        run_id=run_id,
        status=status,
        started_at=T0,
        finished_at=None if status == "running" else T0 + 10,
        events=events,
        updated_at=updated_at,
        **values,
    )


def log_events(n: int, size: int = 100) -> tuple[Event, ...]:
    return tuple(
        Event(seq=i, ts=T0 + i / 100, type="log", data={"i": i, "t": "ü" * size})
        for i in range(1, n + 1)
    )


def stored(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every document of ``plan`` as CouchDB would hold it, by id."""
    docs = {doc_id: {"_id": doc_id, "_rev": REV, **body} for doc_id, body in plan.docs.items()}
    docs[plan.record.run_id] = {**plan.run_doc, "_rev": REV}
    return docs


def encoded_size(doc: dict[str, Any]) -> int:
    return len(dumps(doc).encode("utf-8"))


def read_back(plan: Plan) -> RunRecord | None:
    docs = stored(plan)
    run_doc = docs.pop(plan.record.run_id)
    assert set(part_ids(run_doc)) == set(docs)  # the run doc names all, and only, its parts
    return read_record(run_doc, docs)


# ---------------------------------------------------------------- round trips


def test_a_small_run_is_one_document_and_round_trips() -> None:
    events = (
        *log_events(10, 20),
        Event(seq=11, ts=T0 + 1, type="done ✓", data={"nested": {"a": [1, 2.5, None]}}),
    )
    final = record("success", events, result={"ok": True}, options={"k": 1})
    plan = DocLayout().plan(final)
    assert plan.docs == {}
    assert len(plan.run_doc["events"]) == 11
    assert "trace" not in plan.run_doc
    assert plan.run_doc["event_count"] == 11
    assert plan.run_doc["finished_at_iso"] == "2023-11-14T22:13:30Z"
    assert read_back(plan) == final
    assert named_ids("run-1", plan.run_doc) == set()


def test_a_running_record_has_no_finish_time_and_round_trips() -> None:
    live = record("running", log_events(3), updated_at=T0 + 3)
    plan = DocLayout().plan(live)
    assert "finished_at" not in plan.run_doc  # keeps it out of the purge index
    assert read_back(plan) == live


def test_a_big_run_is_chunked_spilled_and_round_trips_with_no_document_too_big() -> None:
    layout = DocLayout(chunk_bytes=8192)
    events = list(log_events(60, 500))
    # One event far bigger than a chunk (split into parts) ...
    events[29] = Event(seq=30, ts=T0 + 30, type="blob", data={"text": "ü" * 20_000})
    # ... and a result far too big for the run doc (spilled into parts).
    final = record("success", tuple(events), result={"rows": ["r" * 100] * 300})
    plan = layout.plan(final)

    assert "events" not in plan.run_doc
    parts = [ref for ref in plan.run_doc["trace"] if len(ref) == 4]
    assert len(parts) > 3
    assert parts == [[30, 30, i, len(parts)] for i in range(len(parts))]
    assert "result" in plan.run_doc["spilled"]
    assert "result" not in plan.run_doc
    docs = stored(plan)
    assert max(encoded_size(doc) for doc in docs.values()) <= layout.chunk_bytes
    # The sizes the store batches its requests by are upper bounds of what it sends.
    assert all(plan.sizes[i] >= encoded_size({"_id": i, **body}) for i, body in plan.docs.items())
    assert plan.run_doc_size >= encoded_size(plan.run_doc)
    assert named_ids("run-1", plan.run_doc) == set(plan.docs)
    assert read_back(plan) == final


def test_the_chunks_cover_the_trace_in_order_without_gaps() -> None:
    plan = DocLayout(chunk_bytes=8192).plan(record("stopped", log_events(100, 300)))
    ranges = [(a, b) for a, b in plan.run_doc["trace"]]
    assert ranges[0][0] == 1
    assert ranges[-1][1] == 100
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges))
    for a, b in ranges:
        body = plan.docs[f"run-1:trace:{a}-{b}"]
        assert [entry[0] for entry in body["events"]] == list(range(a, b + 1))


# ------------------------------------------------------------ chunk boundaries


def test_chunks_break_exactly_at_the_budget() -> None:
    events = tuple(Event(seq=i, ts=T0 + i, type="log", data={"t": "x" * 50}) for i in range(10, 22))
    entry_sizes = {event_entry(e)[1] for e in events}
    assert len(entry_sizes) == 1  # every entry encodes to the same size
    per_event = entry_sizes.pop() + 1  # and its comma

    exact = pack_chunks("r", events, budget=3 * per_event)
    assert [c.ref for c in exact] == [[10, 12], [13, 15], [16, 18], [19, 21]]
    assert all(c.size == 3 * per_event for c in exact)
    one_short = pack_chunks("r", events, budget=3 * per_event - 1)
    assert [c.ref for c in one_short] == [[a, a + 1] for a in range(10, 22, 2)]
    # The size a chunk claims is what its event list encodes to (less a bracket).
    for chunk in exact:
        assert len(dumps(chunk.body["events"]).encode("utf-8")) == chunk.size + 1


def test_a_longer_trace_keeps_every_full_chunk_of_the_shorter_one() -> None:
    layout = DocLayout(chunk_bytes=8192)
    events = log_events(80, 500)
    short, long = (
        layout.plan(record("running", events[:33])),
        layout.plan(record("running", events)),
    )
    assert "trace" in short.run_doc
    *full, tail = short.run_doc["trace"]
    assert full
    assert long.run_doc["trace"][: len(full)] == full
    for ref in full:
        assert short.docs[chunk_id("run-1", ref)] == long.docs[chunk_id("run-1", ref)]
    # Only the tail chunk is not named any more: that is all a checkpoint deletes.
    unused = named_ids("run-1", short.run_doc) - long.docs.keys()
    assert unused == {chunk_id("run-1", tail)}


def test_an_event_bigger_than_a_chunk_is_split_into_parts_and_joined_again() -> None:
    big = Event(seq=2, ts=T0 + 2, type="blob", data={"text": "日本語" * 5_000})
    events = (*log_events(1), big, Event(seq=3, ts=T0 + 3, type="log", data={}))
    chunks = pack_chunks("r", events, budget=4000)
    refs = [c.ref for c in chunks]
    assert refs[0] == [1, 1]
    assert refs[-1] == [3, 3]
    parts = refs[1:-1]
    assert len(parts) > 3
    assert parts == [[2, 2, i, len(parts)] for i in range(len(parts))]
    assert all(len(dumps(c.body).encode("utf-8")) <= 4000 for c in chunks)
    assert events_from_chunks(refs, [c.body for c in chunks]) == list(events)


def test_a_chunk_read_back_keeps_only_the_events_its_ref_names() -> None:
    # A chunk document is immutable, but the reader trusts the ref, not the body.
    body = {"events": [[1, T0, "log", {}], [2, T0, "log", {}], [3, T0, "log", {}]]}
    assert [e.seq for e in events_from_chunks([[2, 3]], [body])] == [2, 3]


# ----------------------------------------------------------------- size limits


def test_chunk_bytes_has_a_floor() -> None:
    with pytest.raises(ValueError, match="at least 4096"):
        DocLayout(chunk_bytes=4095)


def test_a_trace_stays_inline_up_to_inline_bytes() -> None:
    layout = DocLayout(chunk_bytes=64_000, inline_bytes=2_000)
    events = log_events(40, 20)
    inline = [
        n for n in range(1, 41) if "events" in layout.plan(record("running", events[:n])).run_doc
    ]
    fits = max(inline)
    assert inline == list(range(1, fits + 1))  # inline up to a length, chunked after it
    plan = layout.plan(record("running", events[:fits]))
    assert len(dumps(plan.run_doc["events"]).encode("utf-8")) <= 2_000
    assert len(dumps([event_entry(e)[0] for e in events[: fits + 1]]).encode("utf-8")) > 1_990
    chunked = layout.plan(record("running", events[: fits + 1]))
    assert "events" not in chunked.run_doc
    assert len(chunked.run_doc["trace"]) == 1


def test_a_trace_inline_takes_at_most_half_a_document() -> None:
    layout = DocLayout(chunk_bytes=8192, inline_bytes=1_000_000)
    plan = layout.plan(record("running", log_events(8, 500)))
    assert "trace" in plan.run_doc  # ~8 KB of events: more than half of 8 KiB
    assert "events" in layout.plan(record("running", log_events(3, 500))).run_doc


def test_big_fields_are_spilled_biggest_first_and_named_by_their_content() -> None:
    layout = DocLayout(chunk_bytes=8192)
    big_input = {"prompt": "p" * 20_000}
    plan = layout.plan(record("error", input=big_input, error="e" * 3_000, result="small"))
    spilled = plan.run_doc["spilled"]
    assert list(spilled) == ["input"]  # the run doc fits once the biggest is out
    assert plan.run_doc["error"] == "e" * 3_000
    assert plan.run_doc["result"] == "small"
    ids = spilled["input"]["ids"]
    assert len(ids) >= 3  # 20 KB in parts of at most 8 KiB
    assert all(doc_id.startswith("run-1:field:input:") for doc_id in ids)
    assert "".join(plan.docs[i]["part"] for i in ids) == dumps(big_input)
    assert max(encoded_size(doc) for doc in stored(plan).values()) <= 8192
    # The same content gets the same ids (a rewrite costs nothing); new content, new ids.
    assert layout.plan(record("error", input=big_input, error="x")).run_doc["spilled"] == spilled
    other = layout.plan(record("error", input={"prompt": "q" * 20_000}))
    assert set(other.run_doc["spilled"]["input"]["ids"]).isdisjoint(ids)
    assert read_back(plan) == record("error", input=big_input, error="e" * 3_000, result="small")


def test_a_run_doc_too_big_without_its_fields_is_refused() -> None:
    with pytest.raises(CouchStoreError, match="too big even without its fields"):
        DocLayout(chunk_bytes=8192).plan(record("success", log_events(2), owner="o" * 9_000))


def test_values_json_cannot_hold_are_marked_and_lone_surrogates_replaced() -> None:
    lone = "\ud800"  # valid in a Python str, not in UTF-8
    odd = Event(seq=1, ts=T0, type=f"log{lone}", data={"s": lone}, data_json=f'{{"s":"{lone}"}}')
    plan = DocLayout().plan(record("error", (odd,), result={"n": float("nan")}, error=lone))
    json.dumps(plan.run_doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    got = read_back(plan)
    assert got is not None
    assert got.events[0].type == "log?"
    assert got.events[0].data == {"s": "?"}
    assert got.result == {"n": {"__repr__": "nan"}}
    assert got.error == "?"


# ----------------------------------------------------------------- reading back


def test_a_missing_part_means_read_again() -> None:
    plan = DocLayout(chunk_bytes=8192).plan(record("success", log_events(30, 500)))
    docs = stored(plan)
    run_doc = docs.pop("run-1")
    docs.pop(next(iter(docs)))
    assert read_record(run_doc, docs) is None


def test_documents_that_contradict_each_other_are_an_error() -> None:
    plan = DocLayout().plan(record("success", log_events(3)))
    with pytest.raises(CouchStoreError, match="holds 3 events, the run doc says 4"):
        read_record({**plan.run_doc, "event_count": 4}, {})
    with pytest.raises(CouchStoreError, match="unknown run status"):
        read_record({**plan.run_doc, "status": "paused"}, {})


def test_a_summary_reads_the_summary_fields() -> None:
    plan = DocLayout().plan(record("error", log_events(4), error="boom"))
    summary = summary_from_doc(plan.run_doc)
    assert summary == record("error", log_events(4), error="boom").summary()


# ------------------------------------------------------------------ merge rule


def meta_of(rec: RunRecord) -> dict[str, Any]:
    """What a store remembers of ``rec`` once written (its run doc's meta)."""
    return {**run_doc_meta(DocLayout(chunk_bytes=8192).plan(rec).run_doc), "_rev": REV}


def test_the_meta_holds_what_the_merge_and_the_cleanup_need() -> None:
    big = record("running", log_events(30, 500), updated_at=T0 + 30)
    meta = meta_of(big)
    assert set(meta) == {"_rev", "status", "event_count", "updated_at", "trace"}
    assert named_ids("run-1", meta) == set(DocLayout(chunk_bytes=8192).plan(big).docs)


def test_a_finished_record_replaces_a_running_one_never_the_other_way() -> None:
    running = record("running", log_events(9), updated_at=T0 + 50)
    finished = record("stopped", log_events(2), updated_at=T0 + 5)
    assert replaces_stored(finished, meta_of(running))
    assert not replaces_stored(running, meta_of(finished))
    # Of two terminal versions, the later write.
    assert replaces_stored(record("error", error="late"), meta_of(finished))


def test_a_running_record_never_shrinks_the_stored_trace() -> None:
    stored_meta = meta_of(record("running", log_events(5), updated_at=T0 + 5))
    assert not replaces_stored(record("running", log_events(4), updated_at=T0 + 9), stored_meta)
    assert replaces_stored(record("running", log_events(6), updated_at=T0 + 1), stored_meta)
    # As many events: the newer one.
    assert replaces_stored(record("running", log_events(5), updated_at=T0 + 5), stored_meta)
    assert not replaces_stored(record("running", log_events(5), updated_at=T0 + 4), stored_meta)


def test_anything_replaces_nothing_stored() -> None:
    assert replaces_stored(record("running"), None)
    assert replaces_stored(record("running", updated_at=0.0), {"_rev": REV})
