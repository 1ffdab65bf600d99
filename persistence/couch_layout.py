"""How a run becomes CouchDB documents, and back.

Documents (one database, ``_id`` = run id for the run):

- the **run doc** ``<run_id>``: the header (summary fields, ``input``,
  ``result``, ``error``, ``options``, and once the run ended
  ``schema_warnings`` and ``ops_log`` when it has them), ``event_count`` (the committed trace
  length: readers never return events past it) and ``writers`` (which
  writer's event chunks hold which seqs, see :mod:`runyard.persistence.couch_chunks`).
  A finished run written whole in one commit keeps its events inline as
  ``events`` (``[seq, ts, type, data]`` each) when their encoding fits in
  ``inline_bytes`` (256 KiB) and half a document: one document per run. A
  later write of such a run keeps them there and appends chunks. Times are
  float POSIX seconds (``started_at``, ``finished_at``; the latter is absent
  while the run has none, which also keeps running runs out of the purge
  index) plus ISO-8601 copies for people reading the database.
- **event chunks** ``<run_id>:e:...``: every other event, appended once by the
  commit that brought it; see :mod:`runyard.persistence.couch_chunks`.
- **field parts** ``<run_id>:field:<name>:<hash>:<i>of<k>``: an ``input`` /
  ``result`` / ``error`` / ``options`` / ``schema_warnings`` / ``ops_log`` too
  big to stay in the run doc (spilled).

Each chunk and part stays under ``chunk_bytes`` of encoded JSON, measured
here: CouchDB refuses documents over its ``max_document_size`` (8 MB by
default in 3.x) and fails a whole ``_bulk_docs`` batch for one of them, so
the server is never asked to judge.

This module does no I/O, so all of that is unit-tested without a server;
:class:`~runyard.persistence.couch_store.CouchStore` decides what to read and write.
Sizes are bytes of compact UTF-8 JSON (:func:`runyard.actors.jsonsafe.dumps`), the
encoding the store's HTTP session sends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from runyard.actors.jsonsafe import dumps, dumps_safe
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import (
    ALL_STATUSES,
    JSON,
    TERMINAL_STATUSES,
    Event,
    RunRecord,
    RunStatus,
    RunSummary,
    Version,
    replaces,
)
from runyard.persistence.couch_chunks import (
    CHUNK_OVERHEAD,
    event_entry,
    pack_event_docs,
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
    "WritePlan",
    "field_part_ids",
    "header_from_doc",
    "run_doc_meta",
    "stored_version",
    "summary_from_doc",
    "write_wins",
]

RUN_TYPE: Final = "runyard.run"
FIELD_TYPE: Final = "runyard.field"
SCHEMA: Final = 2

SPILLABLE_FIELDS: Final = ("result", "input", "error", "options", "schema_warnings", "ops_log")
SUMMARY_FIELDS: Final = [
    "run_id",
    "owner",
    "agent",
    "status",
    "started_at",
    "finished_at",
    "event_count",
    "error",
    "workspace",
]

DOC_OVERHEAD: Final = 256
"""Room in every document for what is not its payload: ``_id``, ``_rev`` (added
by the server), ``type``, ``run_id`` and the JSON punctuation."""
MIN_CHUNK_BYTES: Final = 4096

# What the store remembers of a run doc it wrote or read: enough to merge with
# (``write_wins``), to plan the next commit (``writers``, ``inline``: how many
# events the run doc holds itself) and to know its field parts.
META_KEYS: Final = ("_rev", "epoch", "status", "event_count", "updated_at", "writers", "spilled")


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
class WritePlan:
    """Everything one commit of one run writes, given what is stored of it."""

    write: RunWrite
    run_doc: dict[str, Any]
    """The run doc without ``_rev``."""
    run_doc_size: int
    docs: dict[str, dict[str, Any]]
    """Event chunks and field parts by id (without ``_rev``)."""
    sizes: dict[str, int]
    """Their encoded sizes (upper bounds)."""


_OPTIONAL: Final = ("schema_warnings", "ops_log")


def _run_doc(header: RunRecord, event_count: int) -> dict[str, Any]:
    """The run doc's fields, without events or writers (encodable: see ``_clean``)."""
    run_id = header.run_id
    run_doc: dict[str, Any] = {
        "_id": run_id,
        "type": RUN_TYPE,
        "schema": SCHEMA,
        "run_id": run_id,
        "owner": header.owner,
        "agent": header.agent,
        "status": header.status,
        "started_at": header.started_at,
        "started_at_iso": _iso(header.started_at),
        "updated_at": header.updated_at,
        "event_count": event_count,
        "error": header.error,
        "input": header.input,
        "result": header.result,
        "options": header.options,
    }
    if header.node is not None:
        run_doc["node"] = header.node
    if header.workspace is not None:  # absent, not null: keeps it out of the workspace index
        run_doc["workspace"] = header.workspace
    if header.epoch:
        run_doc["epoch"] = header.epoch
    if header.finished_at is not None:
        run_doc["finished_at"] = header.finished_at
        run_doc["finished_at_iso"] = _iso(header.finished_at)
    # Absent unless the run has them: a running run's doc stays as it was.
    if header.schema_warnings is not None:
        run_doc["schema_warnings"] = header.schema_warnings
    if header.ops_log:
        run_doc["ops_log"] = header.ops_log
    for name in ("owner", "agent", "error", "input", "result", "options", *_OPTIONAL):
        if name in run_doc:
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


def _writers_after(writers: Sequence[Sequence[Any]], gen: str, first: int) -> list[list[Any]]:
    """``writers`` once ``gen`` has written chunks from seq ``first`` on."""
    current = [list(w) for w in writers]
    if current and current[-1][0] == gen and current[-1][1] <= first:
        return current
    return [w for w in current if w[1] < first] + [[gen, first]]


@dataclass(frozen=True, slots=True)
class DocLayout:
    """The document sizes one store writes with.

    ``chunk_bytes``: the most any document may take, encoded (at least
    ``MIN_CHUNK_BYTES``, else ``ValueError``). ``inline_bytes``: the trace of a
    run written whole whose encoding fits in this (and in half a run doc)
    stays in the run doc.
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

    def plan_write(
        self,
        write: RunWrite,
        stored: Mapping[str, Any] | None,
        gen: str,
        *,
        trim: bool = True,
        carry: Sequence[Sequence[Any]] = (),
    ) -> WritePlan:
        """The documents that apply ``write`` onto ``stored`` (its ``run_doc_meta``;
        None: nothing stored, or not known: a conflict will tell).

        ``gen`` names this writer's chunks. ``trim``: leave out the events
        ``stored`` already counts (False after a commit whose chunks may not all
        have been written). ``carry``: the stored run doc's inline events
        (``stored["inline"]`` of them), which a run doc keeps.

        Raises :class:`CouchStoreError` if the run doc is too big even with
        every spillable field moved out (a huge owner or agent name).
        """
        run_doc = _run_doc(write.header, write.event_count)
        writers: list[list[Any]] = [list(w) for w in (stored or {}).get("writers", [])]
        docs: dict[str, dict[str, Any]] = {}
        sizes: dict[str, int] = {}
        whole = write.first_seq == 1 and write.header.status in TERMINAL_STATUSES
        if whole and not writers:
            inline = _inline_events(write.events, min(self.inline_bytes, self.budget // 2))
            if inline is not None:
                doc = dict(run_doc)
                try:
                    size = self._spill(doc, docs, sizes, len(',"events":') + inline[1])
                except CouchStoreError:  # not even the summary fits beside the events
                    docs.clear()
                    sizes.clear()
                else:
                    doc["events"] = inline[0]
                    return WritePlan(write, doc, size + DOC_OVERHEAD, docs, sizes)
        stored_count = int((stored or {}).get("event_count") or 0)
        if int((stored or {}).get("inline") or 0) > len(carry):
            # The run doc's own events would be lost: write them again as chunks.
            if write.first_seq > 1:
                raise CouchStoreError(f"run {write.run_id}: the stored inline events are needed")
            trim = False
        new = [e for e in write.events if e.seq > stored_count] if trim else list(write.events)
        if new:
            writers = _writers_after(writers, gen, new[0].seq)
            budget = self.budget - 2 * utf8_len(dumps(write.run_id)) - CHUNK_OVERHEAD
            for chunk in pack_event_docs(write.run_id, gen, new, budget):
                docs[chunk.doc_id] = chunk.body
                sizes[chunk.doc_id] = chunk.size + DOC_OVERHEAD + CHUNK_OVERHEAD
        if writers:
            run_doc["writers"] = writers
        extra = 0
        if carry:
            extra = len(',"events":') + utf8_len(dumps(list(carry)))
        size = self._spill(run_doc, docs, sizes, extra)
        if carry:
            run_doc["events"] = list(carry)
        return WritePlan(write, run_doc, size + DOC_OVERHEAD, docs, sizes)

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
    """What a store remembers of a run doc (``META_KEYS`` and ``inline``, the
    number of events it holds itself): enough to merge with and plan the next commit."""
    meta = {key: run_doc[key] for key in META_KEYS if key in run_doc}
    meta["inline"] = len(run_doc.get("events") or ())
    return meta


def field_part_ids(run_doc: Mapping[str, Any] | None) -> set[str]:
    """The ids of the field parts ``run_doc`` (or its meta) names."""
    if not run_doc:
        return set()
    return {i for part in run_doc.get("spilled", {}).values() for i in part["ids"]}


def stored_version(stored: Mapping[str, Any]) -> Version:
    """The :data:`~runyard.actors.records.Version` of a run doc or its meta."""
    return (
        int(stored.get("epoch") or 0),
        stored.get("status"),
        int(stored.get("event_count") or 0),
        float(stored.get("updated_at") or 0.0),
    )


def write_wins(write: RunWrite, stored: Mapping[str, Any] | None) -> bool:
    """Whether ``write`` may replace the run doc (or meta) ``stored``; None: nothing
    stored. :func:`runyard.actors.records.replaces` decides: the rule of every write path."""
    return stored is None or replaces(write.version, stored_version(stored))


# ------------------------------------------------------------------ reading


def _status(value: Any) -> RunStatus:
    if value not in ALL_STATUSES:
        raise CouchStoreError(f"unknown run status in store: {value!r}")
    return cast(RunStatus, value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _as_object(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {"value": value}


def _as_list_or_none(value: JSON) -> list[Any] | None:
    return value if value is None or isinstance(value, list) else [value]


def header_from_doc(
    run_doc: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]
) -> RunRecord | None:
    """The header (a record without events) ``run_doc`` and its field parts
    (``found``, by id) hold; None if a part is missing from ``found`` (a
    concurrent write replaced it: read again). Raises :class:`CouchStoreError`
    on an unknown status."""
    fields = dict(run_doc)
    for name, part in run_doc.get("spilled", {}).items():
        if any(doc_id not in found for doc_id in part["ids"]):
            return None
        fields[name] = json.loads("".join(found[doc_id]["part"] for doc_id in part["ids"]))
    return RunRecord(
        run_id=run_doc["_id"],
        owner=fields["owner"],
        agent=fields["agent"],
        status=_status(fields["status"]),
        input=_as_object(fields.get("input")),
        started_at=float(fields["started_at"]),
        finished_at=_float_or_none(fields.get("finished_at")),
        events=(),
        result=fields.get("result"),
        error=fields.get("error"),
        updated_at=float(fields.get("updated_at") or 0.0),
        options=_as_object(fields.get("options") or {}),
        node=run_doc.get("node"),
        epoch=int(run_doc.get("epoch") or 0),
        schema_warnings=_as_list_or_none(fields.get("schema_warnings")),
        ops_log=_as_object(fields.get("ops_log") or {}),
        workspace=run_doc.get("workspace"),
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
        workspace=doc.get("workspace"),
    )
