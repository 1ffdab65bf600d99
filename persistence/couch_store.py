"""``CouchStore``: the :class:`~persistence.store.RunStore` on one CouchDB database.

Documents (one database, ``_id`` = run id for the run):

- the **run doc** ``<run_id>``: the summary fields, ``input``, ``result``,
  ``error``, ``options``, ``event_count`` and the events: inline as
  ``events`` (``[seq, ts, type, data]`` each) when their encoding fits in
  ``inline_bytes`` (256 KiB) and half a document, else ``trace``: the list of
  the trace chunks that hold them, in order. Times are float POSIX seconds
  (``started_at``, ``finished_at``; the latter is absent while the run has
  none, which also keeps running runs out of the purge index) plus ISO-8601
  copies for people reading the database.
- **trace chunks** ``<run_id>:trace:<first>-<last>`` (big traces only): the events ``first..last``
  as ``[seq, ts, type, data]``. An event too big for one chunk is split into
  text parts ``<run_id>:trace:<seq>-<seq>:<i>of<k>``.
- **field parts** ``<run_id>:field:<name>:<hash>:<i>of<k>``: an ``input`` /
  ``result`` / ``error`` / ``options`` too big to stay in the run doc.

Every chunk and part is immutable and named by its content (an event range
of the append-only trace, or a hash), and each stays under ``chunk_bytes`` of
encoded JSON, measured here: CouchDB refuses documents over its
``max_document_size`` (8 MB by default in 3.x) and fails a whole
``_bulk_docs`` batch for one of them, so the server is never asked to judge.
The chunk layout is a greedy packing of the events in order, so a checkpoint
of a growing trace keeps every full chunk and writes only a new tail chunk
(and the chunks after it). A write goes in three steps: missing chunks and
parts first, then the run doc (its ``_rev`` decides races), then the chunks
and parts the run doc no longer names are deleted (also when a trace moves
from chunks to inline). A reader therefore never meets a run doc that names a
chunk not yet written; if a chunk vanished under it (a concurrent rewrite), it
reads again. Chunks left unnamed by an interrupted or out-raced write are
removed by ``delete`` (it scans the run's id range); ``purge_older_than``
removes what the run docs name.

The store remembers the ``_rev``, status, event count and chunk names of the
run docs it last wrote or read (a bounded LRU). A batch of small runs is
therefore one ``_bulk_docs``: known runs carry their remembered ``_rev``,
unknown ones none (a new run needs none); a conflict re-reads only those runs
and merges. A big trace's stored run doc is read before its chunks are written,
and a write its stored version beats is dropped without a request.

``_rev`` conflicts on run docs are resolved by reading the stored doc again and
merging: a terminal status always beats ``running`` and is never replaced by a
``running`` write; of two ``running`` versions the one with more events wins,
then the newer ``updated_at`` (a stale checkpoint never shrinks a stored trace).

Portability (checked against Apache CouchDB 3.5 behaviour): sequences are never
read, ``_find`` is always sorted and paged until a page is short (bookmarks
are opaque and the last one repeats), every delete carries its rev, and list
queries sort on all fields of their index.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast
from urllib.parse import urlsplit

import aiohttp
from aiocouch import CouchDB, NotFoundError

from actors.jsonsafe import make_safe
from actors.records import (
    ALL_STATUSES,
    JSON,
    TERMINAL_STATUSES,
    Event,
    RunRecord,
    RunStatus,
    RunSummary,
)
from persistence.store import PageKey

__all__ = ["CouchStore", "CouchStoreError"]

logger = logging.getLogger(__name__)

RUN_TYPE: Final = "runyard.run"
TRACE_TYPE: Final = "runyard.trace"
FIELD_TYPE: Final = "runyard.field"
SCHEMA: Final = 1

# Mango indexes: (design doc, index name, fields). Queries sort on *all* fields of
# the index they use (equality fields too), which every CouchDB 3 accepts.
INDEX_BY_OWNER: Final = ("runyard-by-owner", "by-owner", ["owner", "started_at", "run_id"])
INDEX_BY_STATUS: Final = ("runyard-by-status", "by-status", ["status", "run_id"])
INDEX_BY_FINISHED: Final = ("runyard-by-finished", "by-finished", ["finished_at"])
INDEXES: Final = (INDEX_BY_OWNER, INDEX_BY_STATUS, INDEX_BY_FINISHED)

# Only server admins may read or write (a new CouchDB 3 database is admin-only
# too, pouchdb-server's and older CouchDBs' are public).
ADMIN_ONLY_SECURITY: Final = {
    "admins": {"names": [], "roles": ["_admin"]},
    "members": {"names": [], "roles": ["_admin"]},
}

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

# Room in every chunk/part for what is not its payload: ``_id``, ``_rev``
# (added by the server), ``type``, ``run_id`` and the JSON punctuation.
_DOC_OVERHEAD = 256
_MIN_CHUNK_BYTES = 4096
_BULK_MAX_DOCS = 500
_MAX_ROUNDS = 8
_READ_ATTEMPTS = 4

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def _dumps(value: Any) -> str:
    """The one wire encoding (compact UTF-8): chunk sizes are measured with it."""
    return _ENCODER.encode(value)


class CouchStoreError(RuntimeError):
    """CouchDB refused something this store cannot retry its way out of."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _clean_text(text: str) -> str:
    """Lone surrogates cannot travel as UTF-8: replace them (defensive, rare)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _clean(value: JSON) -> JSON:
    """``value`` made encodable: non-JSON leaves marked (repr), lone surrogates replaced."""
    if value is None or type(value) is int or type(value) is bool:
        return value
    if type(value) is str:
        return _clean_text(value)
    value = make_safe(value)
    text = _dumps(value)
    cleaned = _clean_text(text)
    return value if cleaned is text else json.loads(cleaned)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _split_text(text: str, budget: int) -> list[str]:
    """Split ``text`` into pieces whose JSON string encoding is at most ``budget`` bytes."""
    pieces: list[str] = []
    pos = 0
    step = max(1, budget // 2)
    while pos < len(text):
        piece = text[pos : pos + step]
        size = _utf8_len(_dumps(piece))
        while size > budget:
            step = max(1, min(len(piece) - 1, len(piece) * budget // size - 8))
            piece = text[pos : pos + step]
            size = _utf8_len(_dumps(piece))
        pieces.append(piece)
        pos += len(piece)
    return pieces


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One trace chunk document to be (or already) stored."""

    ref: list[Any]
    """What the run doc stores: ``[first, last]`` or ``[seq, seq, i, k]`` for a part."""
    body: dict[str, Any] = field(compare=False)
    """The document without ``_id``/``_rev``."""
    size: int = field(compare=False)
    """Its encoded size, at most the budget."""


def _chunk_id(run_id: str, ref: Sequence[Any]) -> str:
    if len(ref) == 2:
        return f"{run_id}:trace:{ref[0]}-{ref[1]}"
    return f"{run_id}:trace:{ref[0]}-{ref[1]}:{ref[2]}of{ref[3]}"


def _event_entry(event: Event) -> tuple[list[Any], int, str, str]:
    """``([seq, ts, type, data], encoded size, head, data_json)``.

    The event's own data encoding is reused for the size: nothing is encoded twice.
    """
    data_json, data = event.data_json, event.data
    try:
        data_size = len(data_json.encode("utf-8"))
    except UnicodeEncodeError:
        data_json = _clean_text(data_json)
        data = json.loads(data_json)
        data_size = len(data_json.encode("utf-8"))
    type_ = _clean_text(event.type)
    seq, ts = event.seq, event.ts
    if type(seq) is int and type(ts) is float and math.isfinite(ts):
        # What the encoder writes for them (int and float repr), without a call to it.
        head = f"[{seq!r},{ts!r},{_encode_str(type_)}]"
    else:
        head = _dumps([seq, ts, type_])  # '[seq,ts,"type"]'
    # The entry is head without its ']' + ',' + data + ']'.
    return (
        [event.seq, event.ts, type_, data],
        len(head.encode("utf-8")) + data_size + 1,
        head,
        data_json,
    )


def _layout(run_id: str, events: Sequence[Event], budget: int) -> list[_Chunk]:
    """Greedy packing of the events, in order, into chunks of at most ``budget`` bytes.

    Deterministic: the same trace prefix always gives the same full chunks, so a
    longer trace only changes the last chunk and adds new ones. An event too big
    for a chunk of its own is split into text parts, each a chunk.
    """
    chunks: list[_Chunk] = []
    batch: list[list[Any]] = []
    size = 0
    first = 0

    def close() -> None:
        nonlocal batch, size
        if batch:
            ref = [first, batch[-1][0]]
            body = {"type": TRACE_TYPE, "run_id": run_id, "events": batch}
            chunks.append(_Chunk(ref, body, size))
        batch, size = [], 0

    for event in events:
        entry, entry_size, head, data_json = _event_entry(event)
        entry_size += 1  # the comma
        if entry_size > budget:
            close()
            texts = _split_text(f"{head[:-1]},{data_json}]", budget - 64)
            for i, text in enumerate(texts):
                ref = [event.seq, event.seq, i, len(texts)]
                body = {"type": TRACE_TYPE, "run_id": run_id, "part": text}
                chunks.append(_Chunk(ref, body, budget))
            continue
        if batch and size + entry_size > budget:
            close()
        if not batch:
            first = event.seq
        batch.append(entry)
        size += entry_size
    close()
    return chunks


def _events_from_chunks(
    refs: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]
) -> list[Event]:
    events: list[Event] = []
    parts: list[str] = []
    for ref, doc in zip(refs, docs, strict=True):
        if len(ref) == 2:
            for seq, ts, type_, data in doc["events"]:
                if ref[0] <= seq <= ref[1]:
                    events.append(Event(seq=seq, ts=float(ts), type=type_, data=data))
            continue
        parts.append(doc["part"])
        if ref[2] == ref[3] - 1:
            seq, ts, type_, data = json.loads("".join(parts))
            events.append(Event(seq=seq, ts=float(ts), type=type_, data=data))
            parts = []
    return events


# --------------------------------------------------------------------------- run docs


@dataclass(slots=True)
class _Plan:
    """Everything one record's write needs (it does not depend on what is stored)."""

    record: RunRecord
    run_doc: dict[str, Any]
    """The run doc without ``_rev``."""
    run_doc_size: int
    docs: dict[str, dict[str, Any]]
    """Chunk and field-part documents by id (without ``_rev``); none for a small run."""
    sizes: dict[str, int]
    """Their encoded sizes (upper bounds)."""


# What the store remembers of a run doc it wrote or read: enough to merge with
# (``_wins``) and to know the chunks and parts it names (``_referenced_ids``).
_META_KEYS: Final = ("_rev", "status", "event_count", "updated_at", "trace", "spilled")
_META_CACHE_SIZE: Final = 20_000


def _meta(run_doc: dict[str, Any]) -> dict[str, Any]:
    return {key: run_doc[key] for key in _META_KEYS if key in run_doc}


def _referenced_ids(run_id: str, run_doc: dict[str, Any] | None) -> set[str]:
    if not run_doc:
        return set()
    ids = {_chunk_id(run_id, ref) for ref in run_doc.get("trace", [])}
    for spilled in run_doc.get("spilled", {}).values():
        ids.update(spilled["ids"])
    return ids


def _rank(status: Any, event_count: int, updated_at: float) -> tuple[bool, int, float]:
    """The merge order of two versions of a run: terminal, then more events, then newer."""
    return (status in TERMINAL_STATUSES, event_count, updated_at)


def _wins(record: RunRecord, stored: dict[str, Any] | None) -> bool:
    """Whether ``record`` may replace ``stored`` (the merge rule of every write).

    A terminal record always wins; a ``running`` one never replaces a terminal
    one (a stale checkpoint must not resurrect a finished run) and never shrinks
    a stored ``running`` trace; between two running versions with as many
    events, the newer ``updated_at`` wins.
    """
    if not stored:
        return True
    if record.status in TERMINAL_STATUSES:
        return True
    return _rank(record.status, len(record.events), record.updated_at) >= _rank(
        stored.get("status"),
        int(stored.get("event_count") or 0),
        float(stored.get("updated_at") or 0.0),
    )


def _better(a: RunRecord, b: RunRecord) -> RunRecord:
    """Of two records of the same run in one batch, the one that must end up stored."""
    if a.finished != b.finished:
        return a if a.finished else b
    if a.finished:
        return b  # both terminal: the later one in the batch
    rank_a = _rank(a.status, len(a.events), a.updated_at)
    return b if _rank(b.status, len(b.events), b.updated_at) >= rank_a else a


def _status(value: Any) -> RunStatus:
    if value not in ALL_STATUSES:
        raise CouchStoreError(f"unknown run status in store: {value!r}")
    return cast(RunStatus, value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _as_object(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {"value": value}


# --------------------------------------------------------------------------- store


class CouchStore:
    """The :class:`~persistence.store.RunStore` on CouchDB, through aiocouch."""

    def __init__(
        self,
        url: str,
        db: str = "runyard_runs",
        *,
        chunk_bytes: int = 1_000_000,
        request_timeout_s: float = 120.0,
        find_page: int = 200,
        inline_bytes: int = 256 * 1024,
    ) -> None:
        if chunk_bytes < _MIN_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be at least {_MIN_CHUNK_BYTES}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CouchDB URL must be http(s)://[user:password@]host[:port]")
        self._url = url.rstrip("/")
        self.db_name = db
        self.chunk_bytes = chunk_bytes
        self._budget = chunk_bytes - _DOC_OVERHEAD
        self._timeout = request_timeout_s
        self._find_page = find_page
        self.inline_bytes = inline_bytes
        """A trace whose encoding fits in this (and in half a run doc) stays in the run doc."""
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Run id -> what this store last wrote or read of its run doc (``_META_KEYS``).

        A hint, never trusted for correctness: a stale ``_rev`` only costs a
        conflict and a read. Dropping a write because of it is safe because what
        it holds was stored once, and a stored run only ever moves up the
        ``_wins`` order (until it is deleted, which forgets it here).
        """
        self._couch: Any = None
        self._db: Any = None

    def __repr__(self) -> str:  # never show the credentials
        parts = urlsplit(self._url)
        return f"CouchStore({parts.scheme}://{parts.hostname}:{parts.port}, db={self.db_name!r})"

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._db is not None:
            return
        # Credentials stay in the URL: aiohttp sends them as basic auth on every
        # request (its ``auth=`` parameter, which aiocouch's user/password use,
        # is deprecated). The session encodes JSON bodies compactly in UTF-8:
        # that is the encoding the chunk sizes are measured in.
        couch = CouchDB(
            self._url,
            json_serialize=_dumps,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )
        try:
            try:
                db = await couch[self.db_name]
            except NotFoundError:
                db = await couch.create(self.db_name, exists_ok=True)
            await self._secure(db)
            for ddoc, name, fields in INDEXES:
                await db.index({"fields": fields}, ddoc=ddoc, name=name, type="json")
        except BaseException:
            await couch.close()
            raise
        self._couch, self._db = couch, db

    async def _secure(self, db: Any) -> None:
        security = await db._get_security()
        admins = security.get("admins") or {}
        members = security.get("members") or {}
        if members.get("names") or members.get("roles"):
            return  # access already restricted (by us or by the operator)
        try:
            await db._put_security(
                {
                    "admins": {
                        "names": list(admins.get("names") or []),
                        "roles": sorted({*(admins.get("roles") or []), "_admin"}),
                    },
                    "members": ADMIN_ONLY_SECURITY["members"],
                }
            )
        except Exception as exc:
            raise CouchStoreError(
                f"database {self.db_name!r} is readable by anyone and its _security "
                f"could not be set ({exc}); set members in its _security"
            ) from exc

    async def close(self) -> None:
        couch, self._couch, self._db = self._couch, None, None
        if couch is not None:
            await couch.close()

    async def ping(self) -> None:
        await self._database().info()

    def _database(self) -> Any:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._db

    # ------------------------------------------------------------- requests

    async def _docs_by_id(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The live documents among ``ids`` (missing and deleted ones are left out)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            keys = list(ids[start : start + 100])
            response = await self._database().all_docs.post(keys, include_docs=True)
            for row in response.rows:
                doc = row.get("doc")
                if doc is not None and "error" not in row:
                    found[row["id"]] = doc
        return found

    async def _revs_by_id(self, ids: Iterable[str]) -> dict[str, str]:
        """Current revs of the live documents among ``ids``."""
        keys = sorted(set(ids))
        revs: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            response = await self._database().all_docs.post(keys[start : start + 500])
            for row in response.rows:
                value = row.get("value") or {}
                if "error" not in row and not value.get("deleted"):
                    revs[row["id"]] = value["rev"]
        return revs

    async def _bulk(
        self, docs: list[dict[str, Any]], sizes: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """``_bulk_docs`` in requests of at most ~8 chunks' worth; results in order."""
        results: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        size = 0
        limit = 8 * self.chunk_bytes
        for i, doc in enumerate(docs):
            doc_size = 256 if sizes is None else sizes[i]
            if batch and (size + doc_size > limit or len(batch) >= _BULK_MAX_DOCS):
                results += await self._database()._bulk_docs(batch)
                batch, size = [], 0
            batch.append(doc)
            size += doc_size
        if batch:
            results += await self._database()._bulk_docs(batch)
        return results

    async def _find(self, selector: dict[str, Any], **params: Any) -> dict[str, Any]:
        return cast(dict[str, Any], await self._database()._find(selector, **params))

    # ---------------------------------------------------------------- writes

    async def save(self, record: RunRecord) -> None:
        await self.save_many([record])

    async def save_many(self, records: list[RunRecord]) -> None:
        latest: dict[str, RunRecord] = {}
        for record in records:
            current = latest.get(record.run_id)
            latest[record.run_id] = record if current is None else _better(current, record)
        pending = [self._plan(record) for record in latest.values()]
        must_read: set[str] = set()
        for _ in range(_MAX_ROUNDS):
            if not pending:
                return
            pending = await self._write_round(pending, must_read)
        raise CouchStoreError(
            f"{len(pending)} run(s) still conflicting after {_MAX_ROUNDS} rounds: "
            + ", ".join(p.record.run_id for p in pending[:5])
        )

    def _remember(self, run_id: str, meta: dict[str, Any] | None) -> None:
        if meta is None:
            self._known.pop(run_id, None)
            return
        self._known[run_id] = meta
        self._known.move_to_end(run_id)
        while len(self._known) > _META_CACHE_SIZE:
            self._known.popitem(last=False)

    async def _write_round(self, plans: list[_Plan], must_read: set[str]) -> list[_Plan]:
        """One merge-write pass; returns the plans that lost a ``_rev`` race.

        What is stored of a run comes from ``_known`` (what this store last wrote
        or read of it), from a read (after a conflict, and before the chunks of a
        big trace are written, so a losing write leaves none behind), or stays
        unknown: a small run unknown here is written without ``_rev`` (a new run
        costs that one request); if it exists, the conflict sends it round again
        with a read.
        """
        stored: dict[str, dict[str, Any] | None] = {}
        to_read: list[str] = []
        for plan in plans:
            run_id = plan.record.run_id
            if run_id in must_read or (plan.docs and run_id not in self._known):
                to_read.append(run_id)
            elif run_id in self._known:
                stored[run_id] = self._known[run_id]
        if to_read:
            found = await self._docs_by_id(to_read)
            for run_id in to_read:
                doc = found.get(run_id)
                stored[run_id] = None if doc is None else _meta(doc)
                self._remember(run_id, stored[run_id])
            must_read.difference_update(to_read)
        # A run whose stored version beats the record is left alone: nothing is written.
        live = [p for p in plans if _wins(p.record, stored.get(p.record.run_id))]
        if not live:
            return []
        named = {
            p.record.run_id: _referenced_ids(p.record.run_id, stored.get(p.record.run_id))
            for p in live
        }

        # 1. chunks and parts the run docs will name, if the stored run doc does not
        #    name them already. They are named by their content, so "already there"
        #    (409, e.g. left by an out-raced write) is as good as written.
        missing = [
            ({"_id": doc_id, **body}, plan.sizes[doc_id])
            for plan in live
            for doc_id, body in plan.docs.items()
            if doc_id not in named[plan.record.run_id]
        ]
        if missing:
            docs = [doc for doc, _ in missing]
            results = await self._bulk(docs, [size for _, size in missing])
            failed_runs: set[str] = set()
            for doc, result in zip(docs, results, strict=True):
                if "error" in result and result["error"] != "conflict":
                    failed_runs.add(doc["run_id"])
                    logger.warning("writing %s failed: %s", doc["_id"], result)
            if failed_runs:
                raise CouchStoreError(f"trace chunks of {sorted(failed_runs)} were refused")

        # 2. the run docs; a conflict means someone wrote since we read (or the run
        #    we did not know exists): read it and merge again.
        run_docs = []
        for plan in live:
            old = stored.get(plan.record.run_id)
            run_docs.append(plan.run_doc if old is None else {**plan.run_doc, "_rev": old["_rev"]})
        results = await self._bulk(run_docs, [plan.run_doc_size for plan in live])
        conflicted: list[_Plan] = []
        unused: set[str] = set()
        for plan, result in zip(live, results, strict=True):
            run_id = plan.record.run_id
            if "error" not in result:
                self._remember(run_id, {**_meta(plan.run_doc), "_rev": result["rev"]})
                unused |= named[run_id] - plan.docs.keys()
            elif result["error"] == "conflict":
                self._remember(run_id, None)
                must_read.add(run_id)
                conflicted.append(plan)
            else:
                raise CouchStoreError(f"run {run_id} was refused: {result}")

        # 3. what the new run docs no longer name (e.g. the previous tail chunk, or
        #    every chunk of a trace that now fits in the run doc).
        if unused:
            revs = await self._revs_by_id(unused)
            deletions = [{"_id": i, "_rev": r, "_deleted": True} for i, r in revs.items()]
            for result in await self._bulk(deletions):
                if "error" in result and result["error"] not in ("conflict", "not_found"):
                    logger.warning("deleting unused trace chunk failed: %s", result)
        return conflicted

    def _plan(self, record: RunRecord) -> _Plan:
        run_id = record.run_id
        docs: dict[str, dict[str, Any]] = {}
        sizes: dict[str, int] = {}
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

        # A small trace stays in the run doc: one document per run.
        inline: list[list[Any]] | None = []
        events_size = 2  # '[]'
        limit = min(self.inline_bytes, self._budget // 2)
        for event in record.events:
            entry, entry_size, _, _ = _event_entry(event)
            events_size += entry_size + 1  # the comma (one too many: an upper bound)
            if events_size > limit:
                inline = None
                break
            cast(list[list[Any]], inline).append(entry)
        run_doc_size = 0
        if inline is not None:
            snapshot = dict(run_doc)
            try:
                run_doc_size = self._spill(run_doc, docs, sizes, len(',"events":') + events_size)
            except CouchStoreError:  # not even the summary fits beside the events
                run_doc, inline = snapshot, None
                docs.clear()
                sizes.clear()
        if inline is None:
            # Every chunk also carries the run id twice (in _id and run_id).
            budget = self._budget - 2 * _utf8_len(_dumps(run_id))
            chunks = _layout(run_id, record.events, budget)
            for chunk in chunks:
                docs[_chunk_id(run_id, chunk.ref)] = chunk.body
                sizes[_chunk_id(run_id, chunk.ref)] = chunk.size + _DOC_OVERHEAD
            run_doc["trace"] = [chunk.ref for chunk in chunks]
            run_doc_size = self._spill(run_doc, docs, sizes)
        else:
            run_doc["events"] = inline
        return _Plan(record, run_doc, run_doc_size + _DOC_OVERHEAD, docs, sizes)

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
        while (size := _utf8_len(_dumps(run_doc)) + extra) > self._budget:
            field_sizes = {
                name: _utf8_len(_dumps(run_doc[name]))
                for name in SPILLABLE_FIELDS
                if name in run_doc
            }
            if not field_sizes:
                raise CouchStoreError(
                    f"run {run_id}: the run doc is too big even without its fields"
                )
            name = max(field_sizes, key=lambda n: field_sizes[n])
            text = _dumps(run_doc.pop(name))
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            pieces = _split_text(text, self._budget - 128 - 2 * _utf8_len(_dumps(run_id)))
            ids = []
            for i, piece in enumerate(pieces):
                doc_id = f"{run_id}:field:{name}:{digest}:{i}of{len(pieces)}"
                docs[doc_id] = {"type": FIELD_TYPE, "run_id": run_id, "field": name, "part": piece}
                sizes[doc_id] = self.chunk_bytes
                ids.append(doc_id)
            spilled[name] = {"ids": ids}
            run_doc["spilled"] = spilled
        return size

    # ----------------------------------------------------------------- reads

    async def get(self, run_id: str) -> RunRecord | None:
        for attempt in range(_READ_ATTEMPTS):
            run_doc = (await self._docs_by_id([run_id])).get(run_id)
            if run_doc is None or run_doc.get("type") != RUN_TYPE:
                return None
            self._remember(run_id, _meta(run_doc))
            record = await self._record(run_doc)
            if record is not None:
                return record
            # A chunk vanished under us: a writer replaced it; read the new run doc.
            await asyncio.sleep(0.05 * (attempt + 1))
        raise CouchStoreError(f"run {run_id}: its trace chunks keep changing under the reader")

    async def _record(self, run_doc: dict[str, Any]) -> RunRecord | None:
        run_id = run_doc["_id"]
        inline = run_doc.get("events")
        refs = [] if inline is not None else run_doc.get("trace", [])
        spilled = run_doc.get("spilled", {})
        ids = [_chunk_id(run_id, ref) for ref in refs]
        ids += [doc_id for part in spilled.values() for doc_id in part["ids"]]
        found = await self._docs_by_id(ids) if ids else {}
        if len(found) != len(ids):
            return None
        if inline is not None:
            events = [
                Event(seq=seq, ts=float(ts), type=type_, data=data)
                for seq, ts, type_, data in inline
            ]
        else:
            events = _events_from_chunks(refs, [found[_chunk_id(run_id, ref)] for ref in refs])
        fields = dict(run_doc)
        for name, part in spilled.items():
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

    async def list_for_user(
        self,
        owner: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        if limit < 1:
            return []
        selector: dict[str, Any] = {"owner": owner}
        if before is not None:
            started, run_id = float(before[0]), before[1]
            # The $lte bounds the index range; the $or breaks ties by run_id.
            selector["started_at"] = {"$lte": started}
            selector["$or"] = [
                {"started_at": {"$lt": started}},
                {"started_at": started, "run_id": {"$lt": run_id}},
            ]
        if status is not None:
            selector["status"] = status
        if agent is not None:
            selector["agent"] = agent
        ddoc, name, fields = INDEX_BY_OWNER
        answer = await self._find(
            selector,
            sort=[{f: "desc"} for f in fields],
            limit=limit,
            fields=SUMMARY_FIELDS,
            use_index=[ddoc, name],
        )
        return [
            RunSummary(
                run_id=doc["run_id"],
                owner=doc["owner"],
                agent=doc["agent"],
                status=_status(doc["status"]),
                started_at=float(doc["started_at"]),
                finished_at=_float_or_none(doc.get("finished_at")),
                event_count=doc.get("event_count", 0),
                error=doc.get("error"),
            )
            for doc in answer["docs"]
        ]

    async def _find_all(
        self, selector: dict[str, Any], index: tuple[str, str, list[str]], fields: list[str]
    ) -> list[dict[str, Any]]:
        """Every match, page by page, until a page is short (never trusting a bookmark)."""
        ddoc, name, index_fields = index
        docs: list[dict[str, Any]] = []
        bookmark: str | None = None
        while True:
            params: dict[str, Any] = {
                "sort": [{f: "asc"} for f in index_fields],
                "limit": self._find_page,
                "fields": fields,
                "use_index": [ddoc, name],
            }
            if bookmark is not None:
                params["bookmark"] = bookmark
            answer = await self._find(selector, **params)
            docs += answer["docs"]
            if len(answer["docs"]) < self._find_page:
                return docs
            bookmark = answer["bookmark"]

    async def find_unfinished(self) -> list[RunRecord]:
        rows = await self._find_all({"status": "running"}, INDEX_BY_STATUS, ["_id"])
        records = []
        for row in rows:
            record = await self.get(row["_id"])
            if record is not None and record.status == "running":
                records.append(record)
        return records

    # --------------------------------------------------------------- deletes

    async def delete(self, run_id: str) -> bool:
        self._remember(run_id, None)
        try:
            return await self._delete(run_id)
        finally:
            self._remember(run_id, None)

    async def _delete(self, run_id: str) -> bool:
        for _ in range(_MAX_ROUNDS):
            # The run doc and everything named after it, orphans of an
            # interrupted write included.
            response = await self._database().all_docs.get(
                startkey=json.dumps(run_id), endkey=json.dumps(f"{run_id}:\ufff0")
            )
            own = re.compile(re.escape(run_id) + r"(:(trace|field):.*)?\Z")
            rows = [row for row in response.rows if own.match(row["id"])]
            if not any(row["id"] == run_id for row in rows):
                if rows:  # a run doc already gone: clear what it left
                    await self._bulk([_deletion(row) for row in rows])
                return False
            # Chunks first, the run doc last: a failure leaves a readable-or-gone run.
            rows.sort(key=lambda row: row["id"] == run_id)
            results = await self._bulk([_deletion(row) for row in rows])
            if results[-1].get("error") is None:
                return True
            if results[-1]["error"] != "conflict":
                raise CouchStoreError(f"deleting run {run_id} failed: {results[-1]}")
        raise CouchStoreError(f"deleting run {run_id} kept conflicting")

    async def purge_older_than(self, cutoff: float, *, batch: int = 500) -> int:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        ddoc, name, fields = INDEX_BY_FINISHED
        total = 0
        while True:
            answer = await self._find(
                {"finished_at": {"$lt": cutoff}, "type": RUN_TYPE, "status": {"$ne": "running"}},
                sort=[{f: "asc"} for f in fields],
                limit=batch,
                fields=["_id", "_rev", "type", "trace", "spilled"],
                use_index=[ddoc, name],
            )
            docs = answer["docs"]
            deleted = await self._delete_runs(docs)
            total += deleted
            if len(docs) < batch or deleted == 0:
                return total

    async def _delete_runs(self, run_docs: list[dict[str, Any]]) -> int:
        run_docs = [doc for doc in run_docs if doc.get("type") == RUN_TYPE]
        for doc in run_docs:
            self._remember(doc["_id"], None)
        parts = {doc_id for doc in run_docs for doc_id in _referenced_ids(doc["_id"], doc)}
        revs = await self._revs_by_id(parts)
        deletions = [{"_id": i, "_rev": r, "_deleted": True} for i, r in revs.items()]
        deletions += [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in run_docs]
        results = await self._bulk(deletions)
        return sum(
            1
            for doc, result in zip(deletions, results, strict=True)
            if doc["_id"] in {d["_id"] for d in run_docs} and "error" not in result
        )


def _deletion(row: dict[str, Any]) -> dict[str, Any]:
    return {"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}
