"""How a :class:`~actors.records.RunRecord` becomes CouchDB documents, and back.

Documents (one database, ``_id`` = run id for the run):

- the **run doc** ``<run_id>``: the summary fields, ``input``, ``result``,
  ``error``, ``options``, ``event_count`` and the events: inline as
  ``events`` (``[seq, ts, type, data]`` each) when their encoding fits in
  ``inline_bytes`` (256 KiB) and half a document, else ``trace``: the list of
  the trace chunks that hold them, in order. Times are float POSIX seconds
  (``started_at``, ``finished_at``; the latter is absent while the run has
  none, which also keeps running runs out of the purge index) plus ISO-8601
  copies for people reading the database.
- **trace chunks** (big traces only): see :mod:`persistence.couch_chunks`.
- **field parts** ``<run_id>:field:<name>:<hash>:<i>of<k>``: an ``input`` /
  ``result`` / ``error`` / ``options`` too big to stay in the run doc (spilled).

Every chunk and part is immutable and named by its content (an event range
of the append-only trace, or a hash), and each stays under ``chunk_bytes`` of
encoded JSON, measured here: CouchDB refuses documents over its
``max_document_size`` (8 MB by default in 3.x) and fails a whole
``_bulk_docs`` batch for one of them, so the server is never asked to judge.
The chunk layout is a greedy packing of the events in order, so a checkpoint
of a growing trace keeps every full chunk and writes only a new tail chunk
(and the chunks after it).

This module does no I/O, so all of that is unit-tested without a server;
:class:`~persistence.couch_store.CouchStore` decides what to read and write.
Sizes are bytes of compact UTF-8 JSON (:func:`actors.jsonsafe.dumps`), the
encoding the store's HTTP session sends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from actors.jsonsafe import dumps, dumps_safe
from actors.records import ALL_STATUSES, JSON, Event, RunRecord, RunStatus, RunSummary
from persistence.couch_chunks import (
    chunk_id,
    event_entry,
    event_from_entry,
    events_from_chunks,
    pack_chunks,
    split_text,
    utf8_len,
)

__all__ = [
    "DOC_OVERHEAD",
    "MIN_CHUNK_BYTES",
    "RUN_TYPE",
    "SUMMARY_FIELDS",
    "CouchStoreError",
    "DocLayout",
    "Plan",
    "named_ids",
    "part_ids",
    "read_record",
    "replaces_stored",
    "run_doc_meta",
    "summary_from_doc",
]

RUN_TYPE: Final = "runyard.run"
FIELD_TYPE: Final = "runyard.field"
SCHEMA: Final = 1

SPILLABLE_FIELDS: Final = ("result", "input", "error", "options")
SUMMARY_FIELDS: Final = [
    "run_id",
    "owner",
    "agent",
    "status",
    "started_at",
    "finished_at",
    "event_count",
    "error",
]

DOC_OVERHEAD: Final = 256
"""Room in every document for what is not its payload: ``_id``, ``_rev`` (added
by the server), ``type``, ``run_id`` and the JSON punctuation."""
MIN_CHUNK_BYTES: Final = 4096

# What the store remembers of a run doc it wrote or read: enough to merge with
# (``replaces_stored``) and to know the chunks and parts it names (``named_ids``).
META_KEYS: Final = ("_rev", "status", "event_count", "updated_at", "trace", "spilled")


class CouchStoreError(RuntimeError):
    """CouchDB refused something the store cannot retry its way out of, or a
    record or stored document does not fit this layout."""


def _clean(value: JSON) -> JSON:
    """``value`` made encodable: non-JSON leaves marked (repr), lone surrogates replaced."""
    return dumps_safe(value)[0]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Plan:
    """Everything one record's write needs (it does not depend on what is stored)."""

    record: RunRecord
    run_doc: dict[str, Any]
    """The run doc without ``_rev``."""
    run_doc_size: int
    docs: dict[str, dict[str, Any]]
    """Chunk and field-part documents by id (without ``_rev``); none for a small run."""
    sizes: dict[str, int]
    """Their encoded sizes (upper bounds)."""


def _run_doc(record: RunRecord) -> dict[str, Any]:
    """The run doc's fields, without its events (encodable: see ``_clean``)."""
    run_id = record.run_id
    run_doc: dict[str, Any] = {
        "_id": run_id,
        "type": RUN_TYPE,
        "schema": SCHEMA,
        "run_id": run_id,
        "owner": record.owner,
        "agent": record.agent,
        "status": record.status,
        "started_at": record.started_at,
        "started_at_iso": _iso(record.started_at),
        "updated_at": record.updated_at,
        "event_count": len(record.events),
        "error": record.error,
        "input": record.input,
        "result": record.result,
        "options": record.options,
    }
    if record.finished_at is not None:
        run_doc["finished_at"] = record.finished_at
        run_doc["finished_at_iso"] = _iso(record.finished_at)
    for name in ("owner", "agent", "error", "input", "result", "options"):
        run_doc[name] = _clean(run_doc[name])
    return run_doc


def _inline_events(events: Sequence[Event], limit: int) -> tuple[list[list[Any]], int] | None:
    """``(entries, encoded size)`` of the events as one JSON list, or None if over ``limit``.

    The size counts one comma too many: an upper bound.
    """
    entries: list[list[Any]] = []
    size = 2  # '[]'
    for event in events:
        entry, entry_size, _, _ = event_entry(event)
        size += entry_size + 1  # the comma
        if size > limit:
            return None
        entries.append(entry)
    return entries, size


@dataclass(frozen=True, slots=True)
class DocLayout:
    """The document sizes one store writes with.

    ``chunk_bytes``: the most any document may take, encoded (at least
    ``MIN_CHUNK_BYTES``, else ``ValueError``). ``inline_bytes``: a trace whose
    encoding fits in this (and in half a run doc) stays in the run doc.
    """

    chunk_bytes: int = 1_000_000
    inline_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.chunk_bytes < MIN_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be at least {MIN_CHUNK_BYTES}")

    @property
    def budget(self) -> int:
        """The payload bytes of one document: ``chunk_bytes`` less ``DOC_OVERHEAD``."""
        return self.chunk_bytes - DOC_OVERHEAD

    def plan(self, record: RunRecord) -> Plan:
        """The documents that store ``record``.

        Raises :class:`CouchStoreError` if its run doc is too big even with
        every spillable field moved out (a huge owner or agent name).
        """
        run_doc = _run_doc(record)
        inline = _inline_events(record.events, min(self.inline_bytes, self.budget // 2))
        if inline is not None:
            entries, events_size = inline
            doc: dict[str, Any] = dict(run_doc)
            docs: dict[str, dict[str, Any]] = {}
            sizes: dict[str, int] = {}
            try:
                size = self._spill(doc, docs, sizes, len(',"events":') + events_size)
            except CouchStoreError:  # not even the summary fits beside the events
                pass
            else:
                doc["events"] = entries
                return Plan(record, doc, size + DOC_OVERHEAD, docs, sizes)
        return self._chunked_plan(record, run_doc)

    def _chunked_plan(self, record: RunRecord, run_doc: dict[str, Any]) -> Plan:
        run_id = record.run_id
        docs: dict[str, dict[str, Any]] = {}
        sizes: dict[str, int] = {}
        # Every chunk also carries the run id twice (in _id and run_id).
        chunks = pack_chunks(run_id, record.events, self.budget - 2 * utf8_len(dumps(run_id)))
        for chunk in chunks:
            docs[chunk_id(run_id, chunk.ref)] = chunk.body
            sizes[chunk_id(run_id, chunk.ref)] = chunk.size + DOC_OVERHEAD
        run_doc["trace"] = [chunk.ref for chunk in chunks]
        size = self._spill(run_doc, docs, sizes)
        return Plan(record, run_doc, size + DOC_OVERHEAD, docs, sizes)

    def _spill(
        self,
        run_doc: dict[str, Any],
        docs: dict[str, dict[str, Any]],
        sizes: dict[str, int],
        extra: int = 0,
    ) -> int:
        """Move the biggest of ``SPILLABLE_FIELDS`` to parts until the run doc fits.

        ``extra``: the encoded size of what will still be added to the run doc
        (its inline events). Returns the run doc's encoded size, ``extra`` included.
        """
        run_id = run_doc["run_id"]
        spilled: dict[str, Any] = {}
        while (size := utf8_len(dumps(run_doc)) + extra) > self.budget:
            field_sizes = {
                name: utf8_len(dumps(run_doc[name])) for name in SPILLABLE_FIELDS if name in run_doc
            }
            if not field_sizes:
                raise CouchStoreError(
                    f"run {run_id}: the run doc is too big even without its fields"
                )
            name = max(field_sizes, key=lambda n: field_sizes[n])
            text = dumps(run_doc.pop(name))
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            pieces = split_text(text, self.budget - 128 - 2 * utf8_len(dumps(run_id)))
            ids = []
            for i, piece in enumerate(pieces):
                doc_id = f"{run_id}:field:{name}:{digest}:{i}of{len(pieces)}"
                docs[doc_id] = {"type": FIELD_TYPE, "run_id": run_id, "field": name, "part": piece}
                sizes[doc_id] = self.chunk_bytes
                ids.append(doc_id)
            spilled[name] = {"ids": ids}
            run_doc["spilled"] = spilled
        return size


# ------------------------------------------------------------------ stored versions


def run_doc_meta(run_doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a store remembers of a run doc (``META_KEYS``): enough to merge with."""
    return {key: run_doc[key] for key in META_KEYS if key in run_doc}


def named_ids(run_id: str, run_doc: Mapping[str, Any] | None) -> set[str]:
    """The ids of the chunks and parts ``run_doc`` (or its meta) names."""
    if not run_doc:
        return set()
    ids = {chunk_id(run_id, ref) for ref in run_doc.get("trace", [])}
    for spilled in run_doc.get("spilled", {}).values():
        ids.update(spilled["ids"])
    return ids


def replaces_stored(record: RunRecord, stored: Mapping[str, Any] | None) -> bool:
    """Whether ``record`` may replace the run doc (or meta) ``stored``; None: nothing stored.

    :meth:`RunRecord.replaces` decides: the rule of every write path.
    """
    if stored is None:
        return True
    return record.replaces(
        stored.get("status"),
        int(stored.get("event_count") or 0),
        float(stored.get("updated_at") or 0.0),
    )


# ------------------------------------------------------------------ reading


def _status(value: Any) -> RunStatus:
    if value not in ALL_STATUSES:
        raise CouchStoreError(f"unknown run status in store: {value!r}")
    return cast(RunStatus, value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _as_object(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {"value": value}


def part_ids(run_doc: Mapping[str, Any]) -> list[str]:
    """The ids of the documents to read with ``run_doc`` to rebuild its record."""
    run_id = run_doc["_id"]
    refs = [] if run_doc.get("events") is not None else run_doc.get("trace", [])
    ids = [chunk_id(run_id, ref) for ref in refs]
    ids += [doc_id for part in run_doc.get("spilled", {}).values() for doc_id in part["ids"]]
    return ids


def read_record(
    run_doc: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]
) -> RunRecord | None:
    """The record ``run_doc`` and the documents it names (``found``, by id) hold.

    None if one of them is missing from ``found`` (a concurrent write replaced
    it: read again). Raises :class:`CouchStoreError` if they contradict
    each other or hold an unknown status.
    """
    run_id = run_doc["_id"]
    ids = part_ids(run_doc)
    if any(doc_id not in found for doc_id in ids):
        return None
    inline = run_doc.get("events")
    if inline is not None:
        events = [event_from_entry(entry) for entry in inline]
    else:
        refs = run_doc.get("trace", [])
        events = events_from_chunks(refs, [found[chunk_id(run_id, ref)] for ref in refs])
    fields = dict(run_doc)
    for name, part in run_doc.get("spilled", {}).items():
        fields[name] = json.loads("".join(found[doc_id]["part"] for doc_id in part["ids"]))
    if len(events) != run_doc.get("event_count", len(events)):
        raise CouchStoreError(
            f"run {run_id}: the trace holds {len(events)} events, "
            f"the run doc says {run_doc.get('event_count')}"
        )
    return RunRecord(
        run_id=run_id,
        owner=fields["owner"],
        agent=fields["agent"],
        status=_status(fields["status"]),
        input=_as_object(fields.get("input")),
        started_at=float(fields["started_at"]),
        finished_at=_float_or_none(fields.get("finished_at")),
        events=tuple(events),
        result=fields.get("result"),
        error=fields.get("error"),
        updated_at=float(fields.get("updated_at") or 0.0),
        options=_as_object(fields.get("options") or {}),
    )


def summary_from_doc(doc: Mapping[str, Any]) -> RunSummary:
    """The summary a run doc (or its ``SUMMARY_FIELDS``) holds."""
    return RunSummary(
        run_id=doc["run_id"],
        owner=doc["owner"],
        agent=doc["agent"],
        status=_status(doc["status"]),
        started_at=float(doc["started_at"]),
        finished_at=_float_or_none(doc.get("finished_at")),
        event_count=doc.get("event_count", 0),
        error=doc.get("error"),
    )
