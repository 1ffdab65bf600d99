"""``CouchStore``: the :class:`~persistence.store.RunStore` on one CouchDB database.

What the documents hold, and how big each may be, is
:mod:`persistence.couch_layout` and :mod:`persistence.couch_chunks` (no I/O);
the requests are :mod:`persistence.couch_requests`. This module decides what
to read and write, and in which order.

A write goes in three steps: missing chunks and parts first, then the run doc
(its ``_rev`` decides races), then the chunks and parts the run doc no longer
names are deleted (also when a trace moves from chunks to inline). A reader
therefore never meets a run doc that names a chunk not yet written; if a chunk
vanished under it (a concurrent rewrite), it reads again. Chunks left unnamed
by an interrupted or out-raced write are removed by ``delete`` (it scans the
run's id range); ``purge_older_than`` removes what the run docs name.

The store remembers the ``_rev``, status, event count and chunk names of the
run docs it last wrote or read (a bounded LRU). A batch of small runs is
therefore one ``_bulk_docs``: known runs carry their remembered ``_rev``,
unknown ones none (a new run needs none); a conflict re-reads only those runs
and merges. A big trace's stored run doc is read before its chunks are written,
and a write its stored version beats is dropped without a request.

``_rev`` conflicts on run docs are resolved by reading the stored doc again and
merging with :meth:`~actors.records.RunRecord.replaces`: a terminal status
always beats ``running`` and is never replaced by a ``running`` write; of two
``running`` versions the one with more events wins, then the newer
``updated_at`` (a stale checkpoint never shrinks a stored trace).

Portability (checked against Apache CouchDB 3.5 behaviour): sequences are never
read, ``_find`` is always sorted and paged until a page is short (bookmarks
are opaque and the last one repeats), every delete carries its rev, and list
queries sort on all fields of their index.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Final
from urllib.parse import urlsplit

from aiocouch import CouchDB, Database

from actors.persistence_protocol import RunWrite
from actors.records import Event, RunRecord, RunStatus, RunSummary
from persistence.couch_layout import (
    RUN_TYPE,
    SUMMARY_FIELDS,
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
from persistence.couch_requests import (
    INDEX_BY_FINISHED,
    INDEX_BY_OWNER,
    INDEX_BY_STATUS,
    bulk_docs,
    docs_by_id,
    find,
    find_all,
    open_database,
    ping,
    revs_by_id,
)
from persistence.store import PageKey

__all__ = ["CouchStore", "CouchStoreError"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 8
_READ_ATTEMPTS = 4
_META_CACHE_SIZE: Final = 20_000


class CouchStore:
    """The :class:`~persistence.store.RunStore` on CouchDB, through aiocouch."""

    commit_window_s = 0.05
    """One ``_bulk_docs`` per 50 ms at most: a round trip to CouchDB costs milliseconds."""

    def __init__(
        self,
        url: str,
        db: str = "runyard_runs",
        *,
        chunk_bytes: int = 1_000_000,
        request_timeout_s: float = 120.0,
        idle_timeout_s: float | None = 10.0,
        find_page: int = 200,
        inline_bytes: int = 256 * 1024,
    ) -> None:
        self.layout = DocLayout(chunk_bytes, inline_bytes)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CouchDB URL must be http(s)://[user:password@]host[:port]")
        self._url = url.rstrip("/")
        self.db_name = db
        self._timeout = request_timeout_s
        # A frozen server must fail a request within this, not the 120 s total.
        self._idle_timeout = idle_timeout_s
        self._find_page = find_page
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Run id -> what this store last wrote or read of its run doc (``run_doc_meta``).

        A hint, never trusted for correctness: a stale ``_rev`` only costs a
        conflict and a read. Dropping a write because of it is safe because what
        it holds was stored once, and a stored run only ever moves up the
        ``RunRecord.replaces`` order (until it is deleted, which forgets it here).
        """
        self._couch: CouchDB | None = None
        self._db: Database | None = None

    @property
    def chunk_bytes(self) -> int:
        """The most one document may take, encoded (bytes)."""
        return self.layout.chunk_bytes

    @property
    def inline_bytes(self) -> int:
        """A trace whose encoding fits in this (and in half a run doc) stays in the run doc."""
        return self.layout.inline_bytes

    def __repr__(self) -> str:  # never show the credentials
        parts = urlsplit(self._url)
        return f"CouchStore({parts.scheme}://{parts.hostname}:{parts.port}, db={self.db_name!r})"

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._db is not None:
            return
        self._couch, self._db = await open_database(
            self._url, self.db_name, timeout_s=self._timeout, idle_timeout_s=self._idle_timeout
        )

    async def close(self) -> None:
        couch, self._couch, self._db = self._couch, None, None
        if couch is not None:
            await couch.close()

    async def ping(self) -> None:
        await ping(self._url, self._database())

    def _database(self) -> Database:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._db

    # ------------------------------------------------------------- requests

    async def _docs_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Every read by id goes through here (tests stand a stale read in for it)."""
        return await docs_by_id(self._database(), ids)

    async def _bulk(
        self, docs: list[dict[str, Any]], sizes: list[int] | None = None
    ) -> list[dict[str, Any]]:
        # About 8 full chunks per request.
        return await bulk_docs(self._database(), docs, sizes, max_bytes=8 * self.chunk_bytes)

    # ---------------------------------------------------------------- writes

    async def save(self, record: RunRecord) -> None:
        await self._save_records([record])

    async def save_many(self, writes: list[RunWrite]) -> None:
        # The layout stores whole records: a write of new events is applied to
        # the stored record first.  (Costs a read per continued run.)
        records = []
        for write in writes:
            stored = None if write.first_seq == 1 else await self.get(write.run_id)
            records.append(write.applied_to(stored))
        await self._save_records(records)

    async def get_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        record = await self.get(run_id)
        return [] if record is None else list(record.events[after_seq : after_seq + limit])

    async def _save_records(self, records: list[RunRecord]) -> None:
        latest: dict[str, RunRecord] = {}
        for record in records:
            current = latest.get(record.run_id)
            latest[record.run_id] = record if current is None else current.newest(record)
        pending = [self.layout.plan(record) for record in latest.values()]
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

    async def _write_round(self, plans: list[Plan], must_read: set[str]) -> list[Plan]:
        """One merge-write pass; returns the plans that lost a ``_rev`` race."""
        stored = await self._stored(plans, must_read)
        # A run whose stored version beats the record is left alone: nothing is written.
        live = [p for p in plans if replaces_stored(p.record, stored.get(p.record.run_id))]
        if not live:
            return []
        named = {
            p.record.run_id: named_ids(p.record.run_id, stored.get(p.record.run_id)) for p in live
        }
        await self._write_parts(live, named)
        conflicted, unused = await self._write_run_docs(live, stored, named, must_read)
        await self._delete_unused(unused)
        return conflicted

    async def _stored(
        self, plans: list[Plan], must_read: set[str]
    ) -> dict[str, dict[str, Any] | None]:
        """What is stored of each plan's run (``run_doc_meta``; None: nothing), where known.

        It comes from ``_known`` (what this store last wrote or read of it), from
        a read (after a conflict, and before the chunks of a big trace are
        written, so a losing write leaves none behind), or stays unknown (left
        out): a small run unknown here is written without ``_rev`` (a new run
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
                stored[run_id] = None if doc is None else run_doc_meta(doc)
                self._remember(run_id, stored[run_id])
            must_read.difference_update(to_read)
        return stored

    async def _write_parts(self, live: list[Plan], named: dict[str, set[str]]) -> None:
        """Step 1: the chunks and parts the run docs will name, unless stored ones name them.

        They are named by their content, so "already there" (409, e.g. left by
        an out-raced write) is as good as written.
        """
        missing = [
            ({"_id": doc_id, **body}, plan.sizes[doc_id])
            for plan in live
            for doc_id, body in plan.docs.items()
            if doc_id not in named[plan.record.run_id]
        ]
        if not missing:
            return
        docs = [doc for doc, _ in missing]
        results = await self._bulk(docs, [size for _, size in missing])
        failed_runs: set[str] = set()
        for doc, result in zip(docs, results, strict=True):
            if "error" in result and result["error"] != "conflict":
                failed_runs.add(doc["run_id"])
                logger.warning("writing %s failed: %s", doc["_id"], result)
        if failed_runs:
            raise CouchStoreError(f"trace chunks of {sorted(failed_runs)} were refused")

    async def _write_run_docs(
        self,
        live: list[Plan],
        stored: dict[str, dict[str, Any] | None],
        named: dict[str, set[str]],
        must_read: set[str],
    ) -> tuple[list[Plan], set[str]]:
        """Step 2: the run docs. Returns the plans that conflicted and the ids of
        the chunks and parts the written run docs no longer name.

        A conflict means someone wrote since we read (or the run we did not
        know exists): the run is read and merged again in the next round.
        """
        run_docs = []
        for plan in live:
            old = stored.get(plan.record.run_id)
            run_docs.append(plan.run_doc if old is None else {**plan.run_doc, "_rev": old["_rev"]})
        results = await self._bulk(run_docs, [plan.run_doc_size for plan in live])
        conflicted: list[Plan] = []
        unused: set[str] = set()
        for plan, result in zip(live, results, strict=True):
            run_id = plan.record.run_id
            if "error" not in result:
                self._remember(run_id, {**run_doc_meta(plan.run_doc), "_rev": result["rev"]})
                unused |= named[run_id] - plan.docs.keys()
            elif result["error"] == "conflict":
                self._remember(run_id, None)
                must_read.add(run_id)
                conflicted.append(plan)
            else:
                raise CouchStoreError(f"run {run_id} was refused: {result}")
        return conflicted, unused

    async def _delete_unused(self, unused: set[str]) -> None:
        """Step 3: what the new run docs no longer name (e.g. the previous tail
        chunk, or every chunk of a trace that now fits in the run doc)."""
        if not unused:
            return
        revs = await revs_by_id(self._database(), unused)
        deletions = [{"_id": i, "_rev": r, "_deleted": True} for i, r in revs.items()]
        for result in await self._bulk(deletions):
            if "error" in result and result["error"] not in ("conflict", "not_found"):
                logger.warning("deleting unused trace chunk failed: %s", result)

    # ----------------------------------------------------------------- reads

    async def get(self, run_id: str) -> RunRecord | None:
        for attempt in range(_READ_ATTEMPTS):
            run_doc = (await self._docs_by_id([run_id])).get(run_id)
            if run_doc is None or run_doc.get("type") != RUN_TYPE:
                return None
            self._remember(run_id, run_doc_meta(run_doc))
            record = await self._record(run_doc)
            if record is not None:
                return record
            # A chunk vanished under us: a writer replaced it; read the new run doc.
            await asyncio.sleep(0.05 * (attempt + 1))
        raise CouchStoreError(f"run {run_id}: its trace chunks keep changing under the reader")

    async def _record(self, run_doc: dict[str, Any]) -> RunRecord | None:
        """The record ``run_doc`` holds; None if one of its chunks or parts vanished."""
        ids = part_ids(run_doc)
        return read_record(run_doc, await self._docs_by_id(ids) if ids else {})

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
        answer = await find(
            self._database(),
            selector,
            sort=[{f: "desc"} for f in fields],
            limit=limit,
            fields=SUMMARY_FIELDS,
            use_index=[ddoc, name],
        )
        return [summary_from_doc(doc) for doc in answer["docs"]]

    async def find_unfinished(self, node: str | None = None) -> list[RunWrite]:
        rows = await find_all(
            self._database(), {"status": "running"}, INDEX_BY_STATUS, ["_id"], page=self._find_page
        )
        records = []
        for row in rows:
            record = await self.get(row["_id"])
            if record is None or record.status != "running":
                continue
            if node is None or record.node in (None, node):
                records.append(RunWrite(replace(record, events=()), len(record.events)))
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
            answer = await find(
                self._database(),
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
        parts = {doc_id for doc in run_docs for doc_id in named_ids(doc["_id"], doc)}
        revs = await revs_by_id(self._database(), parts)
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
