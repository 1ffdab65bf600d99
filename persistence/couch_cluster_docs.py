"""The documents of runyard's scale-out in the runs database: leases and stop requests.

They share the database with the runs (:mod:`runyard.persistence.couch_layout`), and
their ids keep them apart from those:

- a **lease** ``runyard-node:<node_id>`` (``type`` ``runyard.node``): one per
  node, renewed by it, claimed by another once it expired; all of them are
  one ``_all_docs`` range read;
- a **stop request** ``<run_id>:request:stop`` (``type`` ``runyard.request``):
  named after its run, so deleting the run deletes it too
  (:func:`runyard.persistence.couch_deletes.own_rows`).

A run id never holds a colon (the registry makes them from hex uuids), so an
id without one is a run doc, even once deleted (a tombstone carries no
``type``): that is how the changes follower tells a deleted run from a
deleted chunk without reading anything.

Neither kind has a field any of CouchStore's Mango indexes is built on
(``owner``, ``workspace``, ``status``, ``finished_at``; a JSON index holds only documents
that have all its fields), so no run query ever meets them. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from runyard.actors.cluster_protocol import LeaseState, NodeLease

__all__ = [
    "LEASE_PREFIX",
    "LEASE_TYPE",
    "REQUEST_TYPE",
    "DocKind",
    "doc_kind",
    "lease_body",
    "lease_from_doc",
    "lease_id",
    "lease_range",
    "request_doc",
    "request_id",
    "request_run_id",
]

LEASE_TYPE: Final = "runyard.node"
REQUEST_TYPE: Final = "runyard.request"
LEASE_PREFIX: Final = "runyard-node:"

_REQUEST_ID = re.compile(r"([^:]+):request:stop\Z")
_STATES: Final = frozenset(get_args(LeaseState))

DocKind = Literal["run", "request", "lease", "other"]


def lease_id(node_id: str) -> str:
    """The ``_id`` of ``node_id``'s lease."""
    return f"{LEASE_PREFIX}{node_id}"


def lease_range() -> tuple[str, str]:
    """``(startkey, endkey)`` of the ``_all_docs`` range holding every lease."""
    return LEASE_PREFIX, f"{LEASE_PREFIX}\ufff0"


def lease_body(
    node_id: str,
    state: LeaseState,
    *,
    lease_s: float,
    renewed_at: float,
    live_runs: int,
    draining: bool,
    taken_over_by: str | None = None,
) -> dict[str, Any]:
    """A lease document without ``_rev`` (``renewed_at``: POSIX seconds, the writer's clock)."""
    return {
        "_id": lease_id(node_id),
        "type": LEASE_TYPE,
        "node_id": node_id,
        "state": state,
        "lease_s": lease_s,
        "renewed_at": renewed_at,
        "live_runs": live_runs,
        "draining": draining,
        "taken_over_by": taken_over_by,
    }


def lease_from_doc(doc: Mapping[str, Any]) -> NodeLease | None:
    """The lease a stored document holds; None if it is not a well-formed lease
    (a person's edit, a future schema): the caller skips it."""
    try:
        state = doc["state"]
        taken_over_by = doc.get("taken_over_by")
        if doc.get("type") != LEASE_TYPE or state not in _STATES:
            return None
        return NodeLease(
            node_id=str(doc["node_id"]),
            rev=str(doc["_rev"]),
            state=state,
            lease_s=float(doc["lease_s"]),
            renewed_at=float(doc["renewed_at"]),
            live_runs=int(doc["live_runs"]),
            draining=bool(doc["draining"]),
            taken_over_by=None if taken_over_by is None else str(taken_over_by),
        )
    except (KeyError, TypeError, ValueError):
        return None


def request_id(run_id: str) -> str:
    """The ``_id`` of the stop request of ``run_id`` (one per run: a repeat is the same)."""
    return f"{run_id}:request:stop"


def request_run_id(doc_id: str) -> str | None:
    """The run a stop request's ``_id`` names; None if ``doc_id`` is no stop request."""
    match = _REQUEST_ID.match(doc_id)
    return None if match is None else match.group(1)


def request_doc(
    run_id: str, *, node: str, by: str, reason: str, requested_at: float
) -> dict[str, Any]:
    """A stop request document without ``_rev``: ``by`` asked to stop ``run_id``,
    which runs on ``node`` (``requested_at``: POSIX seconds)."""
    return {
        "_id": request_id(run_id),
        "type": REQUEST_TYPE,
        "run_id": run_id,
        "node": node,
        "by": by,
        "reason": reason,
        "requested_at": requested_at,
    }


def doc_kind(doc_id: str) -> DocKind:
    """What a document is, from its ``_id`` alone (deleted ones included):
    ``run`` (a run doc), ``request`` (a stop request), ``lease``, or
    ``other`` (event chunks, field parts, design docs)."""
    if doc_id.startswith("_"):
        return "other"
    if ":" not in doc_id:
        return "run"
    if doc_id.startswith(LEASE_PREFIX):
        return "lease"
    if _REQUEST_ID.match(doc_id):
        return "request"
    return "other"
