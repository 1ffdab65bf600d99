"""Node leases in CouchDB: this node's own (written, renewed, left) and everyone's (read, claimed).

A lease is one document per node (:mod:`runyard.persistence.couch_cluster_docs`),
and its ``_rev`` is the lock: a renewal names the rev it last wrote, a claim
the rev its claimer saw. CouchDB accepts one update of a rev, so of several
claimers of one expired lease one gets a 201, the others a 409.

On a CouchDB cluster a write that reaches fewer copies than a quorum is a
202: stored somewhere, not known to have won (two writers of one rev can
each reach one copy, and CouchDB later picks one branch as the winner). So
a 202 is never trusted: this node's own lease is re-read before its next
renewal, and a claim with a 202 has lost and is taken back (see
``_withdraw``). Measured on a 3-node CouchDB 3.5 cluster, three claimers
each through another node, 3 x 30 rounds: 8 to 12 claims of 30 rounds got
a 202 and were withdrawn, and every round had exactly one winner (once,
the loser's branch still showed 0.3 s later); trusting a 202 when no
competing branch was seen gave two winners in 2 rounds of 30.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from aiocouch import Database

from runyard.actors.cluster_protocol import LeaseState, NodeLease, NodeStatus
from runyard.persistence.couch_cluster_docs import lease_body, lease_from_doc, lease_id, lease_range
from runyard.persistence.couch_layout import CouchStoreError
from runyard.persistence.couch_requests import (
    delete_rev,
    docs_by_id,
    docs_in_range,
    get_doc,
    put_doc,
)

__all__ = ["OwnLease", "claim_lease", "read_leases"]

logger = logging.getLogger("runyard.cluster")

_WRITE_ATTEMPTS: Final = 4


async def read_leases(db: Database) -> tuple[NodeLease, ...]:
    """Every well-formed lease in the database, by node id (one ``_all_docs`` range read)."""
    start, end = lease_range()
    leases: list[NodeLease] = []
    async for docs in docs_in_range(db, start, end, page=1000):
        for doc in docs:
            lease = lease_from_doc(doc)
            if lease is None:
                logger.warning("ignoring the malformed lease document %s", doc.get("_id"))
            else:
                leases.append(lease)
    return tuple(leases)


async def claim_lease(db: Database, lease: NodeLease, by: str) -> bool:
    """Write ``lease`` ``taken_over`` by ``by``, naming ``lease.rev``; True if this won.

    False if the lease changed since it was read (renewed, or claimed by
    another). Raises aiocouch/aiohttp errors if CouchDB could not be asked.
    """
    body = lease_body(
        lease.node_id,
        "taken_over",
        lease_s=lease.lease_s,
        renewed_at=lease.renewed_at,
        live_runs=lease.live_runs,
        draining=lease.draining,
        taken_over_by=by,
    )
    status, rev = await put_doc(db, {**body, "_rev": lease.rev})
    if status == 202 and rev is not None:
        await _withdraw(db, lease, rev)
    return status == 201


async def _withdraw(db: Database, lease: NodeLease, rev: str) -> None:
    """Take back a claim that reached only a minority of copies (a 202).

    Only a claim stored on a quorum (a 201) wins: each copy takes one
    update of a rev, so at most one claimer has a quorum. A minority branch
    is deleted, so that CouchDB cannot pick it as the document's winner over
    the real one. If every claimer had a minority (each copy took another),
    all branches are gone and so would be the lease: it is written back as
    it was, a new rev, so observers wait one more lease period and claim
    again.
    """
    logger.warning(
        "the claim of node %s's lease reached only a minority of CouchDB copies "
        "(another claim raced it): withdrawn",
        lease.node_id,
    )
    doc_id = lease_id(lease.node_id)
    await delete_rev(db, doc_id, rev)
    if await get_doc(db, doc_id) is None:
        original = lease_body(
            lease.node_id,
            lease.state,
            lease_s=lease.lease_s,
            renewed_at=lease.renewed_at,
            live_runs=lease.live_runs,
            draining=lease.draining,
            taken_over_by=lease.taken_over_by,
        )
        await put_doc(db, original)


class OwnLease:
    """This node's lease document: :meth:`write` (on follow and at each renewal)
    and :meth:`leave` (on stop).

    Keeps the rev it last wrote; a write that meets another rev (a claim,
    or an edit) reads the document and writes over it. Finding it claimed
    while renewing is logged as an ERROR naming the claimer: this node was
    judged dead while it lives (a long pause, a partition), and the runtime
    must deal with the runs it still holds.
    """

    def __init__(self, db: Database, node_id: str, lease_s: float) -> None:
        self._db = db
        self.node_id = node_id
        self.lease_s = lease_s
        self.rev: str | None = None
        """The rev this node last wrote; None before the first write, or after a
        202 (the next write reads the document first)."""
        self.written = False
        """Whether a lease was ever written by this instance (only then does stop leave one)."""

    async def write(self, status: NodeStatus, *, renewing: bool) -> None:
        """Write this node's lease ``alive`` with ``status``.

        ``renewing``: this node wrote it before in this life, so finding it
        ``taken_over`` is an error (at start it is the past of a previous life).
        Raises :class:`CouchStoreError` if it keeps conflicting, aiocouch or
        aiohttp errors if CouchDB could not be asked.
        """
        await self._put("alive", status, renewing=renewing)
        self.written = True

    async def leave(self, status: NodeStatus) -> None:
        """Write this node's lease ``stopped`` (a drained node that left), unless
        another node has claimed it meanwhile (the claim stays for all to see)."""
        if self.written:
            await self._put("stopped", status, renewing=True)

    async def _put(self, state: LeaseState, status: NodeStatus, *, renewing: bool) -> None:
        for _ in range(_WRITE_ATTEMPTS):
            body: dict[str, Any] = lease_body(
                self.node_id,
                state,
                lease_s=self.lease_s,
                renewed_at=time.time(),
                live_runs=status.live_runs,
                draining=status.draining,
            )
            if self.rev is not None:
                body["_rev"] = self.rev
            code, rev = await put_doc(self._db, body)
            if code in (201, 202):
                self.rev = rev if code == 201 else None
                return
            current = (await docs_by_id(self._db, [body["_id"]])).get(body["_id"])
            self.rev = None if current is None else current["_rev"]
            lease = None if current is None else lease_from_doc(current)
            if lease is not None and lease.state == "taken_over":
                if state == "stopped":
                    return
                log = logger.error if renewing else logger.info
                log(
                    "the lease of node %s was taken over by node %s (it was judged dead); "
                    "writing a fresh alive lease",
                    self.node_id,
                    lease.taken_over_by,
                )
        raise CouchStoreError(f"the lease {lease_id(self.node_id)} kept conflicting")
