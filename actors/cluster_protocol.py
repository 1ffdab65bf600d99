"""The language between the runtime and a shared store's cluster backend (scale-out).

Several runyard nodes share one CouchDB database.  Each node runs one
*cluster backend* (``runyard.persistence.couch_cluster.CouchCluster``, an actor on
the server's event loop with its own CouchDB session) that:

- keeps this node's **lease** document alive (renewed every ``lease_s / 3``)
  and reads every node's lease;
- runs **one changes follower** per node (CouchDB ``_changes``), and tells
  the runtime what other nodes did: run docs written or deleted, stop
  requests for this node's runs, leases renewed;
- records **stop requests** for runs of other nodes, and **claims** an
  expired node's lease, with the lease document's ``_rev`` as the lock;
- reads headers and event pages of runs for the mirrors of remote runs.

``actors`` never imports ``persistence``: the runtime holds the backend as an
actor ref and speaks only these messages.  The store remains the single
source of truth; the follower is how a node hears about it without polling.

The committed mark of a remote run is its run doc's ``event_count``: a
writer stores a commit's event chunks before the run doc that counts them
(see ``runyard.persistence.couch_store``), so every event up to that count can be
read once the run doc change is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from runyard.actors.persistence_protocol import RunWrite

__all__ = [
    "ClaimNode",
    "Follow",
    "LeaseState",
    "LeasesSeen",
    "ListNodes",
    "NodeLease",
    "NodeStatus",
    "ReadEvents",
    "ReadHeader",
    "ReadStopRequests",
    "RequestStop",
    "RunDeleted",
    "RunDocChanged",
    "StopRequested",
]

LeaseState = Literal["alive", "stopped", "taken_over"]
"""``alive``: renewed by its node; ``stopped``: its node drained and left;
``taken_over``: another node claimed it after it expired (``taken_over_by``)."""


@dataclass(frozen=True, slots=True)
class NodeLease:
    """One node's lease document as stored.

    Whether a lease has *expired* is judged by each observer on its own
    monotonic clock (unchanged ``rev`` for longer than ``lease_s``), never by
    comparing ``renewed_at`` with another machine's wall clock.
    """

    node_id: str
    rev: str
    """The document's ``_rev``: a claim must name it (optimistic lock)."""
    state: LeaseState
    lease_s: float
    renewed_at: float
    """The node's own wall clock at the last renewal (POSIX seconds; for people)."""
    live_runs: int
    draining: bool
    taken_over_by: str | None = None


# -- runtime -> backend --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Follow:
    """Start following: tell ``to`` (the registry) every :class:`RunDocChanged`,
    :class:`RunDeleted` and :class:`StopRequested`, and ``membership`` every
    :class:`LeasesSeen`.  Reply: None once the lease is written and the
    follower has its starting point (changes after the reply are all seen)."""

    to: Any
    membership: Any


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What this node's next lease renewal writes (one-way)."""

    live_runs: int
    draining: bool


@dataclass(frozen=True, slots=True)
class RequestStop:
    """Record that ``by`` asked to stop ``run_id``, which runs on ``node``.

    Reply: None once the request is stored (the 202); raises
    :class:`~runyard.actors.errors.StoreUnavailable` if it could not be.  The owner
    sees it through its follower (:class:`StopRequested`) and stops the run."""

    run_id: str
    node: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReadStopRequests:
    """Reply: ``frozenset[str]``, those of ``run_ids`` with a recorded stop request.

    A takeover asks this before it restarts a dead node's runs: a stop asked
    of the dead owner was never carried out, and must not be lost."""

    run_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClaimNode:
    """Claim the expired ``lease`` for this node: write it ``taken_over`` with
    ``lease.rev``.  Reply: True if this node won (exactly one claimer can),
    False if the lease changed meanwhile (renewed, or claimed by another)."""

    lease: NodeLease


@dataclass(frozen=True, slots=True)
class ListNodes:
    """Reply: every stored lease, ``tuple[NodeLease, ...]``."""


@dataclass(frozen=True, slots=True)
class ReadHeader:
    """Reply: the run's header and committed ``event_count`` (a
    :class:`RunWrite` without events), or None if there is no such run."""

    run_id: str


@dataclass(frozen=True, slots=True)
class ReadEvents:
    """Reply: ``list[Event]``, at most ``limit`` committed events with
    ``seq > after_seq``, in order and without gaps (fewer if not all are
    readable yet: ask again)."""

    run_id: str
    after_seq: int
    limit: int


# -- backend -> runtime (one-way) ------------------------------------------


@dataclass(frozen=True, slots=True)
class RunDocChanged:
    """A run doc was written by another node (this node's own writes are not told).

    ``write`` carries the header (``header.node`` is the owner) and the
    committed ``event_count``; no events."""

    write: RunWrite


@dataclass(frozen=True, slots=True)
class RunDeleted:
    """A run doc was deleted (the run is gone from the store)."""

    run_id: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Another node recorded a stop request for a run of this node."""

    run_id: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class LeasesSeen:
    """Every lease as the backend read it now (sent at start, then at every
    renewal tick, ``lease_s / 3``), so expiry can be judged on time alone."""

    leases: tuple[NodeLease, ...]
