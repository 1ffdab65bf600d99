"""Fencing a dead node's runs in CouchDB before another node takes them over.

A node judged dead (its lease expired) may only have paused: a long GC or
VM pause, a partition.  When it wakes it still holds its runs and goes on
writing them.  The node that claimed its lease therefore raises each run's
``epoch`` (the fencing token, :attr:`runyard.actors.records.RunRecord.epoch`) in the
run doc itself *before* it reads the run to end or resume it: from then on
every write the old owner sends carries a lower epoch and loses
(:func:`runyard.actors.records.replaces`), so what the new owner reads is final and
the ``done`` it appends is numbered after every event that was ever stored.

The raise is a compare-and-set on the run doc's ``_rev``: a write of the old
owner that lands in between makes it conflict, and it is read and raised
again.  Everything else in the doc is written back as it was read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from runyard.persistence.couch_layout import CouchStoreError

__all__ = ["fence_running"]

_ROUNDS: Final = 8

ReadDocs = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
BulkDocs = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


async def fence_running(read: ReadDocs, bulk: BulkDocs, run_ids: Sequence[str]) -> dict[str, int]:
    """Raise the epoch of each of ``run_ids`` whose run doc is still ``running``.

    Returns ``run_id -> epoch`` of those fenced; runs that are gone or
    finished are left out (their old owner finished them first: there is
    nothing to take over).  Raises :class:`CouchStoreError` if CouchDB refuses
    a doc or a run keeps conflicting (its old owner writes faster than this
    node can read: tried ``_ROUNDS`` times).
    """
    fenced: dict[str, int] = {}
    todo = list(run_ids)
    for _ in range(_ROUNDS):
        if not todo:
            return fenced
        found = await read(todo)
        docs = []
        for run_id in todo:
            doc = found.get(run_id)
            if doc is None or doc.get("status") != "running":
                continue
            kept = {k: v for k, v in doc.items() if k in ("_id", "_rev") or not k.startswith("_")}
            docs.append({**kept, "epoch": int(doc.get("epoch") or 0) + 1})
        todo = []
        for doc, result in zip(docs, await bulk(docs) if docs else [], strict=True):
            if "error" not in result:
                fenced[doc["_id"]] = doc["epoch"]
            elif result["error"] == "conflict":
                todo.append(doc["_id"])
            else:
                raise CouchStoreError(f"fencing run {doc['_id']} was refused: {result}")
    if todo:
        raise CouchStoreError(f"fencing run(s) {sorted(todo)} kept conflicting")
    return fenced
