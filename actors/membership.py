"""Membership: which nodes sharing the store are alive, and taking over the dead.

Every node renews a lease in the store (the cluster backend does the I/O,
:mod:`runyard.actors.cluster_protocol`) and reads everyone's leases every
``lease_s / 3``.  A lease is judged *expired* by each observer on its own
monotonic clock: its ``_rev`` has not changed for ``lease_s`` since this
observer first saw that revision.  No wall clocks are compared, so clock
skew between machines cannot kill a node; the price is that a node that
has just started waits a full ``lease_s`` before it declares anyone dead.

An expired node's live runs are taken over by exactly one survivor: every
survivor that notices claims the lease with the revision it saw
(:class:`~runyard.actors.cluster_protocol.ClaimNode`), the store accepts one claim,
and the winner asks the registry to take the runs over
(:class:`TakeOverNode`): each ends ``error`` "interrupted: node X stopped…"
with its committed events, or starts again here when its restart policy
allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from runyard.actors.asyncio_actor import AsyncioActor, ask
from runyard.actors.cluster_protocol import ClaimNode, LeasesSeen, LeaseState, NodeLease

__all__ = ["LeaseWatch", "ListMembers", "MemberInfo", "MembershipActor", "TakeOverNode"]

logger = logging.getLogger("runyard.membership")


@dataclass(frozen=True, slots=True)
class TakeOverNode:
    """To the registry: this node won the claim on ``node_id``'s lease; end or
    restart that node's live runs (one-way)."""

    node_id: str
    error: str


@dataclass(frozen=True, slots=True)
class ListMembers:
    """Reply: ``tuple[MemberInfo, ...]``, every known node, this one included."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    node_id: str
    state: LeaseState
    lease_age_s: float
    """Seconds since this node saw that lease renewed (its own monotonic clock)."""
    lease_s: float
    live_runs: int
    draining: bool
    expired: bool
    taken_over_by: str | None


class LeaseWatch:
    """Expiry of leases as one observer sees them (no I/O; ``now`` is monotonic seconds)."""

    def __init__(self, self_id: str) -> None:
        self._self_id = self_id
        self._leases: dict[str, NodeLease] = {}
        self._changed_at: dict[str, float] = {}

    def observe(self, leases: tuple[NodeLease, ...], now: float) -> None:
        seen = {lease.node_id: lease for lease in leases}
        for node_id, lease in seen.items():
            old = self._leases.get(node_id)
            if old is None or old.rev != lease.rev:
                self._changed_at[node_id] = now
        for gone in set(self._leases) - set(seen):
            self._changed_at.pop(gone, None)
        self._leases = seen

    def age(self, node_id: str, now: float) -> float:
        return now - self._changed_at.get(node_id, now)

    def is_expired(self, lease: NodeLease, now: float) -> bool:
        return lease.state == "alive" and self.age(lease.node_id, now) >= lease.lease_s

    def expired(self, now: float) -> list[NodeLease]:
        """Other nodes' ``alive`` leases unchanged for their whole ``lease_s``."""
        return [
            lease
            for lease in self._leases.values()
            if lease.node_id != self._self_id and self.is_expired(lease, now)
        ]

    def members(self, now: float) -> tuple[MemberInfo, ...]:
        return tuple(
            MemberInfo(
                node_id=lease.node_id,
                state=lease.state,
                lease_age_s=round(self.age(lease.node_id, now), 3),
                lease_s=lease.lease_s,
                live_runs=lease.live_runs,
                draining=lease.draining,
                expired=self.is_expired(lease, now),
                taken_over_by=lease.taken_over_by,
            )
            for lease in sorted(self._leases.values(), key=lambda lease: lease.node_id)
        )


class MembershipActor(AsyncioActor):
    """Judges leases and claims expired ones; the winner tells the registry."""

    def __init__(
        self,
        *,
        node_id: str,
        cluster: pykka.ActorRef[Any],
        registry: pykka.ActorRef[Any],
        monotonic: Callable[[], float] = time.monotonic,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self._node_id = node_id
        self._cluster = cluster
        self._registry = registry
        self._monotonic = monotonic
        self._watch = LeaseWatch(node_id)
        self._claiming: dict[str, asyncio.Future[None]] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, LeasesSeen):
            return self._seen(message)
        if isinstance(message, ListMembers):
            return self._watch.members(self._monotonic())
        return super().on_receive(message)

    def _seen(self, msg: LeasesSeen) -> None:
        now = self._monotonic()
        self._watch.observe(msg.leases, now)
        for lease in self._watch.expired(now):
            if lease.node_id not in self._claiming:
                claim = asyncio.ensure_future(self._claim(lease), loop=self.actor_loop)
                self._claiming[lease.node_id] = claim

    async def _claim(self, lease: NodeLease) -> None:
        try:
            won = await ask(self._cluster, ClaimNode(lease))
        except Exception as exc:  # the store is down: the next tick tries again
            logger.warning("could not claim the expired lease of node %s: %s", lease.node_id, exc)
            won = False
        finally:
            self._claiming.pop(lease.node_id, None)
        if not won:
            return
        logger.warning(
            "node %s has not renewed its lease for %g s: taking over its live runs",
            lease.node_id,
            lease.lease_s,
        )
        error = (
            f"interrupted: node {lease.node_id} stopped (its lease expired) before the run finished"
        )
        self._registry.tell(TakeOverNode(lease.node_id, error))
