"""``CouchStore``: the :class:`~runyard.persistence.store.RunStore` on one CouchDB database.

What the documents hold, and how big each may be, is
:mod:`runyard.persistence.couch_layout` and :mod:`runyard.persistence.couch_chunks` (no I/O);
the requests are :mod:`runyard.persistence.couch_requests`. This module decides what
to read and write, and in which order.

A commit (``save_many``) is two ``_bulk_docs`` for all its runs: first each
run's new events as event chunks (never rewritten, named by their seqs and
this store's ``gen``) and new field parts, then the run docs (header,
``event_count``, ``writers``), each with its remembered ``_rev``; a run whose
chunk was refused gets no run doc, so a stored ``event_count`` never counts a
missing event, even if the process dies before it retries. A run doc's ``_rev`` decides
races; a chunk is acknowledged only once it is stored with exactly this
content (a 409 on a chunk is read back and compared), else ``save_many``
raises and the persistence actor retries the batch: the same chunk ids
again, so a retry is idempotent. Until a run's chunks are known to be stored,
its next commit writes all its events again (not only those past the stored
``event_count``). A reader cuts the trace at the run doc's ``event_count``.

The store remembers the ``_rev``, version, ``writers`` and field parts of the
run docs it last wrote or read (a bounded LRU). Known runs carry their
remembered ``_rev``, unknown ones none (a new run needs none); a conflict
re-reads only those runs and merges: ``_rev`` conflicts are resolved by
reading the stored doc again and applying :func:`runyard.actors.records.replaces`: a
terminal status always beats ``running`` and is never replaced by a
``running`` write; of two ``running`` versions the one with more events wins,
then the newer ``updated_at``. A write whose header loses is skipped whole,
its events included (chunks written by a losing attempt are ignored by
readers: ``writers`` does not name them for those seqs).

Portability (checked against Apache CouchDB 3.5): sequences are never read,
``_find`` is sorted and paged until a page is short (bookmarks are opaque),
every delete carries its rev, and list queries sort on all fields of their index.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final
from urllib.parse import urlsplit

from aiocouch import CouchDB, Database

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import TERMINAL_STATUSES, Event, RunRecord, RunStatus, RunSummary
from runyard.persistence.couch_chunks import EVENTS_TYPE
from runyard.persistence.couch_deletes import delete_run, purge_finished
from runyard.persistence.couch_fencing import fence_running
from runyard.persistence.couch_layout import (
    RUN_TYPE,
    CouchStoreError,
    DocLayout,
    WritePlan,
    field_part_ids,
    header_from_doc,
    run_doc_meta,
    stored_version,
    write_wins,
)
from runyard.persistence.couch_listing import list_runs
from runyard.persistence.couch_reads import (
    read_event_page,
    read_events,
    read_header,
    read_run_doc,
    refused_chunks,
)
from runyard.persistence.couch_requests import (
    INDEX_BY_OWNER,
    INDEX_BY_STATUS,
    INDEX_BY_WORKSPACE,
    bulk_docs,
    docs_by_id,
    find_all,
    open_database,
    ping,
    revs_by_id,
)
from runyard.persistence.store import PageKey

__all__ = ["CouchStore", "CouchStoreError"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 8
_READ_ATTEMPTS = 4
_META_CACHE_SIZE: Final = 20_000


class CouchStore:
    """The :class:`~runyard.persistence.store.RunStore` on CouchDB, through aiocouch."""

    commit_window_s = 0.05
    """A commit is two ``_bulk_docs`` round trips: one still unacknowledged after
    50 ms stops holding the next batch back."""
    commit_gap_s = 0.05
    """Every commit is a ``_changes`` row that each node's follower reads (then
    the run doc and the chunk): at most one per 50 ms from this node, as with
    the fixed window this replaced (a commit per event of a 25 ms ticker made
    the other nodes' delivery tail three times longer; docs/performance.md)."""
    awaits_nothing = False

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
        self._range_page = max(8, min(500, 32_000_000 // self.layout.chunk_bytes))
        """Event chunks per range read: about 32 MB of them at most."""
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Run id -> what this store last wrote or read of its run doc (``run_doc_meta``).

        A hint, never trusted for correctness: a stale ``_rev`` only costs a
        conflict and a read. Dropping a write because of it is safe because what
        it holds was stored once, and a stored run only ever moves up the
        ``RunRecord.replaces`` order (until it is deleted, which forgets it here).
        """
        self._gen = secrets.token_hex(4)
        """This store's name on the event chunks it writes (see couch_chunks)."""
        self._unsure: set[str] = set()
        """Runs whose last commit's chunks may not all be stored: their next
        commit writes all its events, not only those past the stored count."""
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

    def _remember(self, run_id: str, meta: dict[str, Any] | None) -> None:
        if meta is None:
            self._known.pop(run_id, None)
            return
        self._known[run_id] = meta
        self._known.move_to_end(run_id)
        while len(self._known) > _META_CACHE_SIZE:
            self._known.popitem(last=False)

    # ---------------------------------------------------------------- writes

    async def save(self, record: RunRecord) -> None:
        await self.save_many([RunWrite.of(record)])

    async def save_many(self, writes: list[RunWrite]) -> set[str]:
        latest: dict[str, RunWrite] = {}
        for write in writes:
            current = latest.get(write.run_id)
            latest[write.run_id] = write if current is None else current.then(write)
        pending = list(latest.values())
        must_read: set[str] = set()
        fenced: set[str] = set()
        for _ in range(_MAX_ROUNDS):
            if not pending:
                return fenced
            pending = await self._write_round(pending, must_read, fenced)
        raise CouchStoreError(
            f"{len(pending)} run(s) still conflicting after {_MAX_ROUNDS} rounds: "
            + ", ".join(w.run_id for w in pending[:5])
        )

    async def _write_round(
        self, writes: list[RunWrite], must_read: set[str], fenced: set[str]
    ) -> list[RunWrite]:
        """One merge-write pass (one ``_bulk_docs`` of event chunks, then one of run
        docs); returns the writes that lost a ``_rev`` race, and adds those that
        lost to a higher epoch to ``fenced``. Raises :class:`CouchStoreError` if a
        document was refused."""
        stored, carry = await self._stored(writes, must_read)
        fenced.update(
            w.run_id
            for w in writes
            if (meta := stored.get(w.run_id)) is not None
            and stored_version(meta)[0] > w.header.epoch
        )
        plans = [
            self.layout.plan_write(
                write,
                stored.get(write.run_id),
                self._gen,
                trim=write.run_id not in self._unsure,
                carry=carry.get(write.run_id, ()),
            )
            for write in writes
            # A run whose stored version beats the write is left alone, events and all.
            if write_wins(write, stored.get(write.run_id))
        ]
        if not plans:
            return []
        extra: list[tuple[dict[str, Any], int]] = []
        for plan in plans:
            have = field_part_ids(stored.get(plan.write.run_id))
            extra += [
                ({"_id": doc_id, **body}, plan.sizes[doc_id])
                for doc_id, body in plan.docs.items()
                if doc_id not in have
            ]
            if any(body.get("type") == EVENTS_TYPE for body in plan.docs.values()):
                self._unsure.add(plan.write.run_id)
        # Chunks first, run docs after: `_bulk_docs` is not atomic, and a run doc
        # must never count events whose chunk was refused (a crash before the
        # retry would leave that gap for good).  One more round trip per commit.
        results = await self._bulk([doc for doc, _ in extra], [size for _, size in extra])
        refused = await refused_chunks(self._database(), extra, results)
        plans = [plan for plan in plans if plan.write.run_id not in refused]
        run_docs = [self._with_rev(plan.run_doc, stored.get(plan.write.run_id)) for plan in plans]
        run_results = await self._bulk(run_docs, [plan.run_doc_size for plan in plans])
        conflicted, unused = self._apply_run_results(plans, stored, run_results, refused, must_read)
        self._unsure -= {plan.write.run_id for plan in plans} - refused
        if refused:
            raise CouchStoreError(f"documents of run(s) {sorted(refused)} were refused")
        await self._delete_unused(unused)
        return conflicted

    @staticmethod
    def _with_rev(run_doc: dict[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
        return run_doc if stored is None else {**run_doc, "_rev": stored["_rev"]}

    async def _stored(
        self, writes: list[RunWrite], must_read: set[str]
    ) -> tuple[dict[str, dict[str, Any] | None], dict[str, list[Any]]]:
        """What is stored of each write's run (``run_doc_meta``; None: nothing),
        where known, and the inline events of the run docs that were read.

        It comes from ``_known`` (what this store last wrote or read of it) or a
        read: after a conflict, to carry a run doc's inline events over, and
        before the event chunks of a run unknown here are written (so a losing
        write leaves none behind). Else a run unknown here is left out: it is
        written without ``_rev`` (a new run costs that one request); if it
        exists, the conflict sends it round again with a read.
        """
        stored: dict[str, dict[str, Any] | None] = {}
        to_read: list[str] = []
        for write in writes:
            run_id = write.run_id
            known = self._known.get(run_id)
            if run_id in must_read or (
                known.get("inline") and write.first_seq > 1
                if known is not None
                else bool(write.events) and not _whole(write)
            ):
                to_read.append(run_id)
            elif known is not None:
                stored[run_id] = known
        carry: dict[str, list[Any]] = {}
        if to_read:
            found = await self._docs_by_id(to_read)
            for run_id in to_read:
                doc = found.get(run_id)
                stored[run_id] = None if doc is None else run_doc_meta(doc)
                if doc is not None and doc.get("events"):
                    carry[run_id] = doc["events"]
                self._remember(run_id, stored[run_id])
            must_read.difference_update(to_read)
        return stored, carry

    def _apply_run_results(
        self,
        plans: list[WritePlan],
        stored: dict[str, dict[str, Any] | None],
        results: list[dict[str, Any]],
        refused: set[str],
        must_read: set[str],
    ) -> tuple[list[RunWrite], set[str]]:
        """Remember what the run docs' results say; returns the writes that
        conflicted (read and merged again in the next round) and the field
        parts the written run docs no longer name."""
        conflicted: list[RunWrite] = []
        unused: set[str] = set()
        for plan, result in zip(plans, results, strict=True):
            run_id = plan.write.run_id
            if "error" not in result:
                self._remember(run_id, {**run_doc_meta(plan.run_doc), "_rev": result["rev"]})
                unused |= field_part_ids(stored.get(run_id)) - field_part_ids(plan.run_doc)
            elif result["error"] == "conflict":
                self._remember(run_id, None)
                must_read.add(run_id)
                conflicted.append(plan.write)
            else:
                refused.add(run_id)
                logger.warning("run doc %s was refused: %s", run_id, result)
        return conflicted, unused

    async def _delete_unused(self, unused: set[str]) -> None:
        """Field parts the new run docs no longer name (a field that changed)."""
        if not unused:
            return
        revs = await revs_by_id(self._database(), unused)
        deletions = [{"_id": i, "_rev": r, "_deleted": True} for i, r in revs.items()]
        for result in await self._bulk(deletions):
            if "error" in result and result["error"] not in ("conflict", "not_found"):
                logger.warning("deleting an unused field part failed: %s", result)

    # ----------------------------------------------------------------- reads

    async def get_header(self, run_id: str) -> RunWrite | None:
        run_doc = await self._run_doc(run_id)
        return None if run_doc is None else await read_header(self._docs_by_id, run_doc)

    async def get(self, run_id: str) -> RunRecord | None:
        for attempt in range(_READ_ATTEMPTS):
            run_doc = await self._run_doc(run_id)
            if run_doc is None:
                return None
            header = await read_header(self._docs_by_id, run_doc)
            events = await read_events(
                self._database(),
                run_doc,
                0,
                int(run_doc.get("event_count") or 0),
                page=self._range_page,
            )
            if header is not None and events is not None:
                return replace(header.header, events=tuple(events))
            # A commit is in flight (or failed and will be retried): read again.
            await asyncio.sleep(0.05 * (attempt + 1))
        raise CouchStoreError(f"run {run_id}: its stored events keep missing under the reader")

    async def get_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        if limit < 1:
            return []
        for attempt in range(_READ_ATTEMPTS):
            run_doc = await self._run_doc(run_id)
            if run_doc is None:
                return []
            events, complete = await read_event_page(
                self._database(), run_doc, after_seq, limit, page=self._range_page
            )
            if complete:
                return events
            await asyncio.sleep(0.05 * (attempt + 1))
        raise CouchStoreError(f"run {run_id}: its stored events keep missing under the reader")

    async def _run_doc(self, run_id: str) -> dict[str, Any] | None:
        run_doc = await read_run_doc(self._docs_by_id, run_id)
        if run_doc is not None:
            self._remember(run_id, run_doc_meta(run_doc))
        return run_doc

    async def list_for_user(
        self,
        owner: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        return await list_runs(
            self._database(),
            INDEX_BY_OWNER,
            owner,
            status=status,
            agent=agent,
            limit=limit,
            before=before,
        )

    async def list_for_workspace(
        self,
        workspace: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        return await list_runs(
            self._database(),
            INDEX_BY_WORKSPACE,
            workspace,
            status=status,
            agent=agent,
            limit=limit,
            before=before,
        )

    async def find_unfinished(self, node: str | None = None) -> list[RunWrite]:
        rows = await find_all(
            self._database(), {"status": "running"}, INDEX_BY_STATUS, ["_id"], page=self._find_page
        )
        found = await self._docs_by_id([row["_id"] for row in rows])
        parts = [i for doc in found.values() for i in field_part_ids(doc)]
        part_docs = await self._docs_by_id(parts) if parts else {}
        writes = []
        for doc in found.values():
            header = header_from_doc(doc, part_docs) if doc.get("type") == RUN_TYPE else None
            if header is None or header.status != "running":
                continue
            if node is None or header.node in (None, node):
                writes.append(RunWrite(header, int(doc.get("event_count") or 0)))
        return writes

    async def fence_unfinished(self, node: str) -> list[RunWrite]:
        """Raise the epoch of ``node``'s running runs (:mod:`runyard.persistence.couch_fencing`),
        then read them again: what the old owner stored before the fence is final."""
        mine = await self.find_unfinished(node)
        for write in mine:
            self._forget(write.run_id)  # the next write of it must read its new _rev
        fenced = await fence_running(self._docs_by_id, self._bulk, [w.run_id for w in mine])
        return [
            w for w in await self.find_unfinished(node) if fenced.get(w.run_id) == w.header.epoch
        ]

    # --------------------------------------------------------------- deletes

    async def delete(self, run_id: str) -> bool:
        self._forget(run_id)
        try:
            return await delete_run(self._database(), run_id, self._bulk)
        finally:
            self._forget(run_id)

    async def purge_older_than(self, cutoff: float, *, batch: int = 500) -> int:
        return await purge_finished(
            self._database(), cutoff, batch=batch, bulk=self._bulk, forget=self._forget
        )

    def _forget(self, run_id: str) -> None:
        self._remember(run_id, None)
        self._unsure.discard(run_id)


def _whole(write: RunWrite) -> bool:
    """A finished run written whole: it wins against anything stored."""
    return write.first_seq == 1 and write.header.status in TERMINAL_STATUSES
