"""The CouchDB list query: a page of run summaries, newest first, through one Mango index.

Kept apart from :class:`~runyard.persistence.couch_store.CouchStore` because it is
the one read that two store methods share: a user's runs (``owner``, index
``by-owner``) and a workspace's (``workspace``, index ``by-workspace``).  Each
query names its index and sorts on all of the index's fields, so CouchDB
reads one index range and never scans the database.
"""

from __future__ import annotations

from typing import Any

from aiocouch import Database

from runyard.actors.records import RunStatus, RunSummary
from runyard.persistence.couch_layout import SUMMARY_FIELDS, summary_from_doc
from runyard.persistence.couch_requests import Index, find
from runyard.persistence.store import PageKey

__all__ = ["list_runs"]


async def list_runs(
    db: Database,
    index: Index,
    value: str,
    *,
    status: RunStatus | None,
    agent: str | None,
    limit: int,
    before: PageKey | None,
) -> list[RunSummary]:
    """At most ``limit`` summaries of the run docs whose first ``index`` field
    (``owner`` or ``workspace``) is ``value``, by (started_at, run_id)
    descending, strictly after ``before``; raises aiocouch's errors."""
    if limit < 1:
        return []
    ddoc, name, fields = index
    selector: dict[str, Any] = {fields[0]: value}
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
    answer = await find(
        db,
        selector,
        sort=[{f: "desc"} for f in fields],
        limit=limit,
        fields=SUMMARY_FIELDS,
        use_index=[ddoc, name],
    )
    return [summary_from_doc(doc) for doc in answer["docs"]]
