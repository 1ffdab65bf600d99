"""Reading a run from CouchDB: its header, a page of its events, and a commit's check.

``CouchStore`` (``get_header``, ``get_events``) and the cluster backend
(``ReadHeader``, ``ReadEvents``) answer with these same functions. The
chunks are read in id (``last_seq``) order, a page at a time, only until
every wanted seq is there (see :mod:`runyard.persistence.couch_chunks`): a replay
page reads about what it returns, however long the trace. A commit reads
back the chunks CouchDB says are there already, to acknowledge them only if
they hold what it wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiocouch import Database

from runyard.actors.jsonsafe import dumps
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event
from runyard.persistence.couch_chunks import EVENTS_TYPE, assemble_prefix, events_range
from runyard.persistence.couch_layout import RUN_TYPE, field_part_ids, header_from_doc
from runyard.persistence.couch_requests import docs_by_id, docs_in_range

__all__ = [
    "DocsById",
    "read_event_page",
    "read_events",
    "read_header",
    "read_run_doc",
    "refused_chunks",
]

logger = logging.getLogger(__name__)

DocsById = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
"""Reads live documents by id (missing ones left out): ``couch_requests.docs_by_id``
on a database, or a store's own wrapper of it."""


async def read_run_doc(read: DocsById, run_id: str) -> dict[str, Any] | None:
    """The run doc of ``run_id``, or None if there is none (or the id names
    another kind of document)."""
    run_doc = (await read([run_id])).get(run_id)
    if run_doc is None or run_doc.get("type") != RUN_TYPE:
        return None
    return run_doc


async def read_header(read: DocsById, run_doc: Mapping[str, Any]) -> RunWrite | None:
    """The header ``run_doc`` and its field parts hold, with its committed
    ``event_count`` (a :class:`RunWrite` without events); None if a field part
    is missing (replaced by a concurrent write: read the run doc again).
    Raises :class:`~runyard.persistence.couch_layout.CouchStoreError` on an unknown status."""
    parts = list(field_part_ids(run_doc))
    header = header_from_doc(run_doc, await read(parts) if parts else {})
    return None if header is None else RunWrite(header, int(run_doc.get("event_count") or 0))


async def read_event_page(
    db: Database, run_doc: Mapping[str, Any], after_seq: int, limit: int, *, page: int
) -> tuple[list[Event], bool]:
    """``(events, complete)``: the committed events of ``run_doc``'s run after
    ``after_seq``, at most ``limit``, as a gap-free prefix; ``complete`` says
    whether that is all of them (else a chunk is not readable yet: ask again).

    ``page``: chunk documents per ``_all_docs`` request.
    """
    after_seq = max(after_seq, 0)
    stop = min(int(run_doc.get("event_count") or 0), after_seq + max(limit, 0))
    events = await _read(db, run_doc, after_seq, stop, page=page, prefix=True) or []
    return events, len(events) == max(stop - after_seq, 0)


async def read_events(
    db: Database, run_doc: Mapping[str, Any], after_seq: int, stop: int, *, page: int
) -> list[Event] | None:
    """Events ``after_seq+1 .. stop`` of ``run_doc``'s run; None if one is missing
    (a commit in flight, or one that failed and will be retried: read again).

    ``page``: chunk documents per ``_all_docs`` request.
    """
    return await _read(db, run_doc, after_seq, stop, page=page, prefix=False)


async def _read(
    db: Database,
    run_doc: Mapping[str, Any],
    after_seq: int,
    stop: int,
    *,
    page: int,
    prefix: bool,
) -> list[Event] | None:
    """Events ``after_seq+1 .. stop``: all or None, or (``prefix``) the gap-free prefix.

    A prefix read stops at the first page that reaches past ``stop``: a seq
    missing there is a chunk not readable yet, not one further on (a
    writer's chunks of one run follow each other in seq order), and the
    caller asks again rather than have this read the rest of the trace.
    """
    run_id = run_doc["_id"]
    writers = run_doc.get("writers") or []
    inline = run_doc.get("events") or []
    want = stop - after_seq
    if want <= 0:
        return []

    def assemble(chunks: list[dict[str, Any]]) -> list[Event]:
        return assemble_prefix(run_id, writers, inline, chunks, after_seq, stop)

    events = assemble([])
    if len(events) == want:
        return events
    chunks: list[dict[str, Any]] = []
    start, end = events_range(run_id, max(after_seq + 1, len(inline) + 1))
    async for docs in docs_in_range(db, start, end, page=page, first_page=1):
        chunks += docs
        last = docs[-1].get("last_seq", 0) if docs else 0
        if last >= stop:
            events = assemble(chunks)
            # Ids sort by last_seq: past ``stop``, every chunk that could hold a
            # seq up to it has been read.  At ``stop`` exactly, another writer's
            # chunk may still follow (a dead writer's stray and its successor's
            # chunk can end on the same seq).
            if len(events) == want or (prefix and last > stop):
                return events
    events = assemble(chunks)
    return events if prefix or len(events) == want else None


async def refused_chunks(
    db: Database, docs: list[tuple[dict[str, Any], int]], results: list[dict[str, Any]]
) -> set[str]:
    """The runs with a chunk or part among ``docs`` (with their sizes) that
    ``_bulk_docs`` (``results``, in order) did not store as written.

    Field parts are named by their content: "already there" (409) is as good
    as written. An event chunk that is already there is read back: the same
    content (a retried commit) is success, another is refused.
    """
    refused: set[str] = set()
    to_check: dict[str, dict[str, Any]] = {}
    for (doc, _), result in zip(docs, results, strict=True):
        if "error" not in result:
            continue
        if result["error"] != "conflict":
            refused.add(doc["run_id"])
            logger.warning("writing %s failed: %s", doc["_id"], result)
        elif doc.get("type") == EVENTS_TYPE:
            to_check[doc["_id"]] = doc
    if to_check:
        found = await docs_by_id(db, list(to_check))
        for doc_id, doc in to_check.items():
            there = found.get(doc_id)
            if there is None or any(
                there.get(key) != json.loads(dumps(value))
                for key, value in doc.items()
                if key != "_id"
            ):
                refused.add(doc["run_id"])
                logger.warning("event chunk %s is stored with other content", doc_id)
    return refused
