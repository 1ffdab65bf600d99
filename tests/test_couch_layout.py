"""The CouchDB document layout, without a server.

How a run's commits become documents (run doc, inline events, event chunks,
spilled fields) and how they become the record again: round trips, where
chunks break, that no document outgrows ``chunk_bytes`` as CouchDB will store
it (with ``_id`` and ``_rev``), which writer's chunks a reader trusts, and the
merge rule applied to stored versions. ``tests/test_couch_store.py`` and
``tests/test_couch_commits.py`` show the same documents on a real server.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from typing import Any

import pytest

from runyard.actors.jsonsafe import dumps
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.persistence.couch_chunks import (
    CHUNK_OVERHEAD,
    EVENTS_TYPE,
    assemble_events,
    event_doc_id,
    event_entry,
    events_range,
    pack_event_docs,
    writer_of,
)
from runyard.persistence.couch_layout import (
    CouchStoreError,
    DocLayout,
    WritePlan,
    field_part_ids,
    header_from_doc,
    run_doc_meta,
    summary_from_doc,
    write_wins,
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


def stored(plan: WritePlan) -> dict[str, dict[str, Any]]:
    """Every document of ``plan`` as CouchDB would hold it, by id."""
    docs = {doc_id: {"_id": doc_id, "_rev": REV, **body} for doc_id, body in plan.docs.items()}
    docs[plan.write.run_id] = {**plan.run_doc, "_rev": REV}
    return docs


def encoded_size(doc: dict[str, Any]) -> int:
    return len(dumps(doc).encode("utf-8"))


def read(run_doc: Mapping[str, Any], docs: Mapping[str, Mapping[str, Any]]) -> RunRecord | None:
    """What a reader makes of a run doc and the documents beside it (by id)."""
    header = header_from_doc(run_doc, docs)
    chunks = [d for d in docs.values() if d.get("type") == EVENTS_TYPE]
    events = assemble_events(
        run_doc["_id"],
        run_doc.get("writers", []),
        run_doc.get("events", []),
        chunks,
        0,
        run_doc["event_count"],
    )
    if header is None or events is None:
        return None
    return dataclasses.replace(header, events=tuple(events))


def read_back(plan: WritePlan) -> RunRecord | None:
    docs = stored(plan)
    return read(docs.pop(plan.write.run_id), docs)


def whole(rec: RunRecord) -> RunWrite:
    return RunWrite.of(rec)


# ---------------------------------------------------------------- round trips


def test_a_small_finished_run_written_whole_is_one_document_and_round_trips() -> None:
    events = (
        *log_events(10, 20),
        Event(seq=11, ts=T0 + 1, type="done ✓", data={"nested": {"a": [1, 2.5, None]}}),
    )
    rec = record("success", events, result={"ok": True})
    plan = DocLayout().plan_write(whole(rec), None, "g1")
    assert plan.docs == {}
    assert len(plan.run_doc["events"]) == 11
    assert "writers" not in plan.run_doc
    assert plan.run_doc["event_count"] == 11
    assert read_back(plan) == rec


def test_a_running_run_keeps_its_events_in_chunks_of_its_writer() -> None:
    rec = record("running", log_events(5))
    plan = DocLayout().plan_write(whole(rec), None, "g1")
    assert "events" not in plan.run_doc
    assert "finished_at" not in plan.run_doc
    assert plan.run_doc["writers"] == [["g1", 1]]
    assert list(plan.docs) == [event_doc_id("run-1", 1, 5, "g1")]
    assert read_back(plan) == rec


def test_a_commit_adds_chunks_for_its_new_events_only() -> None:
    layout = DocLayout(chunk_bytes=8192)
    events = log_events(30, 300)
    first = layout.plan_write(whole(record("running", events[:10])), None, "g1")
    docs = stored(first)
    meta = run_doc_meta(docs["run-1"])
    # A whole record again (a checkpoint): only events 11.. are new.
    again = layout.plan_write(whole(record("running", events[:20])), meta, "g1")
    seqs = [e[0] for d in again.docs.values() for e in d["events"]]
    assert seqs == list(range(11, 21))
    assert again.run_doc["writers"] == [["g1", 1]]
    docs.update(stored(again))
    # Another writer (a node that took the run over) continues: its own entry.
    meta = run_doc_meta(docs["run-1"])
    write = RunWrite(dataclasses.replace(record("error"), events=()), 30, events[20:])
    taken = layout.plan_write(write, meta, "g2")
    assert taken.run_doc["writers"] == [["g1", 1], ["g2", 21]]
    docs.update(stored(taken))
    got = read(docs.pop("run-1"), docs)
    assert got == record("error", events)
    # Not trimmed (its previous chunks may be missing): all of the write's events.
    untrimmed = layout.plan_write(whole(record("running", events[:20])), meta, "g1", trim=False)
    assert sum(len(d["events"]) for d in untrimmed.docs.values()) == 20


def test_a_big_run_is_chunked_spilled_and_round_trips_with_no_document_too_big() -> None:
    layout = DocLayout(chunk_bytes=8192)
    events = (*log_events(40, 500), Event(seq=41, ts=T0, type="blob", data={"x": "y" * 30_000}))
    rec = record("success", events, result={"rows": ["r" * 100] * 200})
    plan = layout.plan_write(whole(rec), None, "g1")
    assert "events" not in plan.run_doc
    assert "result" in plan.run_doc["spilled"]
    assert len(plan.docs) > 10
    assert max(encoded_size(doc) for doc in stored(plan).values()) <= layout.chunk_bytes
    assert read_back(plan) == rec


# ------------------------------------------------------------------ event chunks


def test_chunks_cover_the_events_in_order_and_break_at_the_budget() -> None:
    events = log_events(100, 300)
    chunks = pack_event_docs("r", "g", events, budget=4000)
    seqs = [e[0] for c in chunks for e in c.body["events"]]
    assert seqs == list(range(1, 101))
    for chunk, following in itertools.pairwise(chunks):
        assert chunk.size <= 4000
        # The next event would not have fitted: the chunk is as full as it can be.
        next_size = event_entry(events[following.body["first_seq"] - 1])[1] + 1
        assert chunk.size + next_size > 4000
        assert len(dumps(chunk.body["events"]).encode("utf-8")) <= chunk.size + 1
    assert [c.doc_id for c in pack_event_docs("r", "g", events, 4000)] == [
        c.doc_id for c in chunks
    ]  # deterministic: a retried commit writes the same ids


def test_chunk_ids_sort_by_their_last_seq_so_a_replay_is_one_range() -> None:
    ids = [event_doc_id("r", a, b, "g") for a, b in ((1, 9), (10, 10), (11, 120), (121, 1000))]
    assert ids == sorted(ids)
    start, end = events_range("r", 11)
    assert [i for i in ids if start <= i <= end] == ids[2:]  # chunks with events from 11 on
    assert event_doc_id("r", 7, 7, "g", (2, 11)) == "r:e:000000000007:000000000007:g:000002of000011"


def test_an_event_bigger_than_a_chunk_is_split_into_parts_and_joined_again() -> None:
    big = Event(seq=2, ts=T0 + 2, type="blob", data={"text": "日本語" * 5_000})
    events = (*log_events(1), big, Event(seq=3, ts=T0 + 3, type="log", data={}))
    chunks = pack_event_docs("r", "g", events, budget=4000)
    parts = [c.body for c in chunks if "part" in c.body]
    assert len(parts) > 3
    assert [(p["i"], p["k"]) for p in parts] == [(i, len(parts)) for i in range(len(parts))]
    # The payload within the budget; the ids, seqs and part numbers within CHUNK_OVERHEAD.
    assert all(len(dumps(c.body).encode("utf-8")) <= 4000 + CHUNK_OVERHEAD for c in chunks)
    bodies = [c.body for c in chunks]
    assert assemble_events("r", [["g", 1]], [], bodies, 0, 3) == list(events)
    assert assemble_events("r", [["g", 1]], [], bodies[:-2], 0, 2) is None  # a part missing


def test_a_reader_takes_each_seq_from_its_writer_and_ignores_strays() -> None:
    ours = pack_event_docs("r", "a", log_events(6), 100_000)
    # A writer that died left chunk 4..9 with other events; "b" took over from 4.
    stray = [
        {**c.body, "gen": "dead"}
        for c in pack_event_docs("r", "dead", log_events(9, 7)[3:], 100_000)
    ]
    taken = pack_event_docs("r", "b", log_events(6)[3:], 100_000)
    other_run = pack_event_docs("r2", "a", log_events(6), 100_000)
    bodies = [c.body for c in (*ours, *taken, *other_run)] + stray
    writers = [["a", 1], ["b", 4]]
    assert writer_of(writers, 3) == "a"
    assert writer_of(writers, 4) == "b"
    assert assemble_events("r", writers, [], bodies, 0, 6) == list(log_events(6))
    # Events past the committed count are never returned; a missing one means read again.
    assert assemble_events("r", writers, [], bodies, 2, 4) == list(log_events(6)[2:4])
    assert assemble_events("r", [["a", 1]], [], [c.body for c in taken], 0, 6) is None


def test_overlapping_chunks_of_a_retried_commit_read_once() -> None:
    events = log_events(15)
    bodies = [
        c.body
        for part in (events[:5], events[5:10], events[5:15])  # 6..10, then 6..15 joined
        for c in pack_event_docs("r", "g", part, 100_000)
    ]
    assert assemble_events("r", [["g", 1]], [], bodies, 0, 15) == list(events)
    inline = [event_entry(e)[0] for e in events[:3]]
    assert assemble_events("r", [["g", 4]], inline, bodies, 0, 15) == list(events)


# ----------------------------------------------------------------- size limits


def test_chunk_bytes_has_a_floor() -> None:
    with pytest.raises(ValueError, match="at least 4096"):
        DocLayout(chunk_bytes=4095)


def test_a_trace_stays_inline_up_to_inline_bytes() -> None:
    layout = DocLayout(chunk_bytes=64_000, inline_bytes=2_000)
    events = log_events(40, 20)

    def plan(n: int) -> WritePlan:
        return layout.plan_write(whole(record("success", events[:n])), None, "g")

    inline = [n for n in range(1, 41) if "events" in plan(n).run_doc]
    fits = max(inline)
    assert inline == list(range(1, fits + 1))  # inline up to a length, chunked after it
    assert len(dumps(plan(fits).run_doc["events"]).encode("utf-8")) <= 2_000
    assert len(dumps([event_entry(e)[0] for e in events[: fits + 1]]).encode("utf-8")) > 1_990
    assert len(plan(fits + 1).docs) == 1


def test_a_trace_inline_takes_at_most_half_a_document() -> None:
    layout = DocLayout(chunk_bytes=8192, inline_bytes=1_000_000)
    assert (
        "events"
        not in layout.plan_write(whole(record("success", log_events(8, 500))), None, "g").run_doc
    )
    assert (
        "events"
        in layout.plan_write(whole(record("success", log_events(3, 500))), None, "g").run_doc
    )


def test_a_run_docs_inline_events_are_carried_over_when_it_continues() -> None:
    layout = DocLayout()
    events = log_events(6)
    first = stored(layout.plan_write(whole(record("success", events[:3])), None, "g"))
    meta = run_doc_meta(first["run-1"])
    assert meta["inline"] == 3
    later = RunWrite(dataclasses.replace(record("error"), events=()), 6, events[3:])
    with pytest.raises(CouchStoreError, match="inline events are needed"):
        layout.plan_write(later, meta, "g")
    plan = layout.plan_write(later, meta, "g", carry=first["run-1"]["events"])
    assert plan.run_doc["events"] == first["run-1"]["events"]
    assert plan.run_doc["writers"] == [["g", 4]]
    assert read_back(plan) == record("error", events)
    # A whole rewrite that must be chunked writes the inline events as chunks too.
    rewrite = layout.plan_write(whole(record("running", events)), meta, "g")
    assert read_back(rewrite) == record("running", events)


def test_big_fields_are_spilled_biggest_first_and_named_by_their_content() -> None:
    layout = DocLayout(chunk_bytes=8192)
    big_input = {"prompt": "p" * 20_000}

    def plan(rec: RunRecord) -> WritePlan:
        return layout.plan_write(whole(rec), None, "g")

    first = plan(record("error", input=big_input, error="e" * 3_000, result="small"))
    spilled = first.run_doc["spilled"]
    assert list(spilled) == ["input"]  # the run doc fits once the biggest is out
    assert first.run_doc["error"] == "e" * 3_000
    assert first.run_doc["result"] == "small"
    ids = spilled["input"]["ids"]
    assert len(ids) >= 3  # 20 KB in parts of at most 8 KiB
    assert all(doc_id.startswith("run-1:field:input:") for doc_id in ids)
    assert "".join(first.docs[i]["part"] for i in ids) == dumps(big_input)
    assert max(encoded_size(doc) for doc in stored(first).values()) <= 8192
    assert field_part_ids(first.run_doc) == set(ids)
    # The same content gets the same ids (a rewrite costs nothing); new content, new ids.
    assert plan(record("error", input=big_input, error="x")).run_doc["spilled"] == spilled
    other = plan(record("error", input={"prompt": "q" * 20_000}))
    assert set(other.run_doc["spilled"]["input"]["ids"]).isdisjoint(ids)
    assert read_back(first) == record("error", input=big_input, error="e" * 3_000, result="small")


def test_a_run_doc_too_big_without_its_fields_is_refused() -> None:
    with pytest.raises(CouchStoreError, match="too big even without its fields"):
        DocLayout(chunk_bytes=8192).plan_write(
            whole(record("success", log_events(2), owner="o" * 9_000)), None, "g"
        )


def test_values_json_cannot_hold_are_marked_and_lone_surrogates_replaced() -> None:
    lone = "\ud800"  # valid in a Python str, not in UTF-8
    odd = Event(seq=1, ts=T0, type=f"log{lone}", data={"s": lone}, data_json=f'{{"s":"{lone}"}}')
    rec = record("error", (odd,), result={"n": float("nan")}, error=lone)
    plan = DocLayout().plan_write(whole(rec), None, "g")
    json.dumps(plan.run_doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    got = read_back(plan)
    assert got is not None
    assert got.events[0].type == "log?"
    assert got.events[0].data == {"s": "?"}
    assert got.result == {"n": {"__repr__": "nan"}}
    assert got.error == "?"


# ----------------------------------------------------------------- reading back


def test_a_missing_part_means_read_again() -> None:
    rec = record("success", log_events(30, 500), input={"p": "x" * 9_000})
    docs = stored(DocLayout(chunk_bytes=8192).plan_write(whole(rec), None, "g"))
    run_doc = docs.pop("run-1")
    assert read(run_doc, docs) == rec
    for doc_id in (next(iter(field_part_ids(run_doc))), next(i for i in docs if ":e:" in i)):
        assert read(run_doc, {k: v for k, v in docs.items() if k != doc_id}) is None


def test_an_unknown_status_is_an_error() -> None:
    plan = DocLayout().plan_write(whole(record("success", log_events(3))), None, "g")
    with pytest.raises(CouchStoreError, match="unknown run status"):
        header_from_doc({**plan.run_doc, "status": "paused"}, {})


def test_a_summary_reads_the_summary_fields() -> None:
    plan = DocLayout().plan_write(whole(record("error", log_events(4), error="boom")), None, "g")
    summary = summary_from_doc(plan.run_doc)
    assert summary == record("error", log_events(4), error="boom").summary()


# ----------------------------------------------------------------- stored versions


def meta_of(rec: RunRecord) -> dict[str, Any]:
    return run_doc_meta({**DocLayout().plan_write(whole(rec), None, "g").run_doc, "_rev": REV})


def test_the_meta_holds_what_the_merge_and_the_next_commit_need() -> None:
    meta = meta_of(record("running", log_events(3)))
    assert meta == {
        "_rev": REV,
        "status": "running",
        "event_count": 3,
        "updated_at": T0 + 1,
        "writers": [["g", 1]],
        "inline": 0,
    }


def test_a_finished_write_replaces_a_running_one_never_the_other_way() -> None:
    running, done = record("running", log_events(9)), record("stopped", log_events(2))
    assert write_wins(whole(done), meta_of(running))
    assert not write_wins(whole(running), meta_of(done))
    assert write_wins(whole(record("error", updated_at=T0 + 2)), meta_of(done))


def test_a_running_write_never_shrinks_the_stored_trace() -> None:
    stored_meta = meta_of(record("running", log_events(5), updated_at=T0 + 5))
    assert not write_wins(whole(record("running", log_events(4), updated_at=T0 + 9)), stored_meta)
    assert not write_wins(whole(record("running", log_events(5), updated_at=T0 + 4)), stored_meta)
    assert write_wins(whole(record("running", log_events(5), updated_at=T0 + 5)), stored_meta)
    assert write_wins(whole(record("running", log_events(6), updated_at=T0 + 1)), stored_meta)


def test_anything_replaces_nothing_stored() -> None:
    assert write_wins(whole(record("running")), None)
