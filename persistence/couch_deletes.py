"""Deleting runs from CouchDB: a run doc with every chunk and part named after it.

A run's documents all have ids ``<run_id>`` or ``<run_id>:<kind>:...`` (event
chunks, field parts, and the stop requests other nodes record for it, see
:mod:`runyard.persistence.couch_cluster_docs`), so one ``_all_docs`` range read finds
them all, strays of interrupted or out-raced writes included: nothing has to
name them. Chunks go first and the run doc
last, so a failure leaves a run that is readable or gone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiocouch import Database

from runyard.persistence.couch_cluster_docs import request_id
from runyard.persistence.couch_layout import RUN_TYPE, CouchStoreError
from runyard.persistence.couch_requests import INDEX_BY_FINISHED, find, get_doc

__all__ = ["delete_run", "own_rows", "purge_finished"]

Bulk = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
"""``_bulk_docs`` of some documents: one result per document, in order."""

_MAX_ROUNDS = 8
_RANGE_READS = 8


async def own_rows(db: Database, run_id: str) -> list[dict[str, Any]]:
    """``_all_docs`` rows (``id``, ``value.rev``) of the run doc and of every chunk,
    part and request of ``run_id`` (the layout before event chunks, ``:trace:``, too)."""
    response = await db.all_docs.get(
        startkey=json.dumps(run_id), endkey=json.dumps(f"{run_id}:\ufff0")
    )
    own = re.compile(re.escape(run_id) + r"(:(e|field|trace|request):.*)?\Z")
    return [row for row in response.rows if own.match(row["id"])]


async def _with_recent(
    db: Database, run_id: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``rows`` and the run doc and stop request, if the range read missed them.

    A range read answers from one copy of each shard: on a CouchDB cluster
    a document written a moment ago may not be on it yet. The two documents
    a delete must not miss (the run doc: else "no such run"; the stop
    request, written by another node) are read by id, a quorum read.
    """
    have = {row["id"] for row in rows}
    wanted = [doc_id for doc_id in (run_id, request_id(run_id)) if doc_id not in have]
    found = await asyncio.gather(*(get_doc(db, doc_id) for doc_id in wanted))
    extra = [{"id": doc["_id"], "value": {"rev": doc["_rev"]}} for doc in found if doc is not None]
    return rows + extra


def _deletion(row: dict[str, Any]) -> dict[str, Any]:
    return {"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}


async def delete_run(db: Database, run_id: str, bulk: Bulk) -> bool:
    """Delete the run and everything named after it; False if there was no run doc.

    Raises :class:`CouchStoreError` if CouchDB refuses or it keeps conflicting.
    """
    for _ in range(_MAX_ROUNDS):
        rows = await _with_recent(db, run_id, await own_rows(db, run_id))
        if not any(row["id"] == run_id for row in rows):
            if rows:  # a run doc already gone: clear what it left
                await bulk([_deletion(row) for row in rows])
            return False
        rows.sort(key=lambda row: row["id"] == run_id)
        results = await bulk([_deletion(row) for row in rows])
        if results[-1].get("error") is None:
            return True
        if results[-1]["error"] != "conflict":
            raise CouchStoreError(f"deleting run {run_id} failed: {results[-1]}")
    raise CouchStoreError(f"deleting run {run_id} kept conflicting")


async def purge_finished(
    db: Database, cutoff: float, *, batch: int, bulk: Bulk, forget: Callable[[str], None]
) -> int:
    """Delete finished runs with ``finished_at < cutoff``, ``batch`` run docs per
    ``_bulk_docs``; returns how many. ``forget`` is told each run id first."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    ddoc, name, fields = INDEX_BY_FINISHED
    total = 0
    while True:
        answer = await find(
            db,
            {"finished_at": {"$lt": cutoff}, "type": RUN_TYPE, "status": {"$ne": "running"}},
            sort=[{f: "asc"} for f in fields],
            limit=batch,
            fields=["_id", "_rev", "type"],
            use_index=[ddoc, name],
        )
        docs = [doc for doc in answer["docs"] if doc.get("type") == RUN_TYPE]
        deleted = await _delete_runs(db, docs, bulk, forget)
        total += deleted
        if len(answer["docs"]) < batch or deleted == 0:
            return total


async def _delete_runs(
    db: Database, run_docs: list[dict[str, Any]], bulk: Bulk, forget: Callable[[str], None]
) -> int:
    run_ids = {doc["_id"] for doc in run_docs}
    deletions: list[dict[str, Any]] = []
    for start in range(0, len(run_docs), _RANGE_READS):
        group = run_docs[start : start + _RANGE_READS]
        for rows in await asyncio.gather(*(own_rows(db, d["_id"]) for d in group)):
            deletions += [_deletion(row) for row in rows if row["id"] not in run_ids]
    for run_id in run_ids:
        forget(run_id)
    deletions += [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in run_docs]
    results = await bulk(deletions)
    return sum(
        1
        for doc, result in zip(deletions, results, strict=True)
        if doc["_id"] in run_ids and "error" not in result
    )
