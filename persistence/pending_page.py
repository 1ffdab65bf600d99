"""A page of stored runs with the persistence actor's pending writes merged in.

A write the store has not taken yet (it is late, or the store is failing)
must not make a run "missing" from a listing, nor show it in a state older
than the one its owner was already told: the page answers as the store will
once the pending writes are applied.
"""

from __future__ import annotations

from runyard.actors.persistence_protocol import QueryRuns, RunWrite
from runyard.actors.records import RunSummary, replaces

__all__ = ["in_scope", "merge_page", "store_limit"]


def in_scope(w: RunWrite, q: QueryRuns) -> bool:
    """Whether ``q`` asks for ``w``'s run at all: its owner's, or its workspace's."""
    if q.workspace is not None:
        return w.header.workspace == q.workspace
    return w.header.owner == q.owner


def store_limit(q: QueryRuns, mine: list[RunWrite]) -> int:
    """How many rows to ask the store for: pending versions can push stored rows
    out of the filter, so ``limit`` plus the scope's pending runs always fills the page."""
    return q.limit + len(mine)


def merge_page(stored: list[RunSummary], mine: list[RunWrite], q: QueryRuns) -> list[RunSummary]:
    """``stored`` (the store's rows for ``q``) with ``mine`` (the scope's pending
    writes: :func:`in_scope`) applied, newest first by (started_at, run_id), cut at ``q.limit``."""
    if not mine:
        return stored[: q.limit]
    pending = {w.run_id: w for w in mine}
    merged: dict[str, RunSummary] = {}
    for s in stored:
        p = pending.get(s.run_id)
        if p is None or not replaces(p.version, (p.header.epoch, s.status, s.event_count, 0.0)):
            merged[s.run_id] = s
        else:
            del pending[s.run_id]
            if _matches(p, q):
                merged[s.run_id] = p.summary()
    for p in pending.values():
        if _matches(p, q):
            merged[p.run_id] = p.summary()
    # A pending running write of a run stored as terminal elsewhere in the
    # order is not visible here; the store ignores it when it is written anyway.
    return sorted(merged.values(), key=_key, reverse=True)[: q.limit]


def _key(s: RunSummary) -> tuple[float, str]:
    return (s.started_at, s.run_id)


def _matches(w: RunWrite, q: QueryRuns) -> bool:
    r = w.header
    return (
        (q.status is None or r.status == q.status)
        and (q.agent is None or r.agent == q.agent)
        and (q.before is None or (r.started_at, r.run_id) < q.before)
    )
