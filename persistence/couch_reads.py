"""Reading a run's event chunks from CouchDB: a replay, and a commit's check.

The chunks are read in id (``last_seq``) order, a page at a time, only until
every wanted seq is there (see :mod:`persistence.couch_chunks`): a replay
page reads about what it returns, however long the trace. A commit reads
back the chunks CouchDB says are there already, to acknowledge them only if
they hold what it wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiocouch import Database

from actors.jsonsafe import dumps
from actors.records import Event
from persistence.couch_chunks import EVENTS_TYPE, assemble_events, events_range
from persistence.couch_requests import docs_by_id, docs_in_range

__all__ = ["read_events", "refused_chunks"]

logger = logging.getLogger(__name__)


async def read_events(
    db: Database, run_doc: Mapping[str, Any], after_seq: int, stop: int, *, page: int
) -> list[Event] | None:
    """Events ``after_seq+1 .. stop`` of ``run_doc``'s run; None if one is missing
    (a commit in flight, or one that failed and will be retried: read again).

    ``page``: chunk documents per ``_all_docs`` request.
    """
    run_id = run_doc["_id"]
    writers = run_doc.get("writers") or []
    inline = run_doc.get("events") or []
    if stop <= after_seq:
        return []
    events = assemble_events(run_id, writers, inline, [], after_seq, stop)
    if events is not None:
        return events
    chunks: list[dict[str, Any]] = []
    start, end = events_range(run_id, max(after_seq + 1, len(inline) + 1))
    async for docs in docs_in_range(db, start, end, page=page):
        chunks += docs
        if docs and docs[-1].get("last_seq", 0) >= stop:
            events = assemble_events(run_id, writers, inline, chunks, after_seq, stop)
            if events is not None:
                return events
    return assemble_events(run_id, writers, inline, chunks, after_seq, stop)


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
