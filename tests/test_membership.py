"""Lease expiry as one observer judges it: by its own monotonic clock, never by wall clocks."""

from __future__ import annotations

import pytest

from runyard.actors.cluster_protocol import NodeLease
from runyard.actors.membership import LeaseWatch

pytestmark = pytest.mark.timeout(10)


def lease(node: str, rev: str, *, state: str = "alive", lease_s: float = 15.0) -> NodeLease:
    return NodeLease(
        node_id=node,
        rev=rev,
        state=state,  # type: ignore[arg-type]
        lease_s=lease_s,
        # A wall clock far in the past: it must not matter.
        renewed_at=0.0,
        live_runs=1,
        draining=False,
    )


def test_a_lease_expires_only_after_lease_s_without_a_new_revision() -> None:
    watch = LeaseWatch("me")
    watch.observe((lease("me", "1"), lease("b", "1")), now=100.0)
    assert watch.expired(114.9) == []
    watch.observe((lease("me", "2"), lease("b", "2")), now=110.0)  # b renewed
    assert watch.expired(124.9) == []
    assert [x.node_id for x in watch.expired(125.0)] == ["b"]


def test_a_node_never_declares_itself_expired() -> None:
    watch = LeaseWatch("me")
    watch.observe((lease("me", "1"),), now=0.0)
    assert watch.expired(1000.0) == []


def test_stopped_and_taken_over_leases_are_not_claimed_again() -> None:
    watch = LeaseWatch("me")
    watch.observe((lease("b", "1", state="stopped"), lease("c", "1", state="taken_over")), 0.0)
    assert watch.expired(1000.0) == []


def test_a_newly_started_observer_waits_a_whole_lease_before_judging() -> None:
    # Whatever the stored renewed_at says, the first sighting starts the count.
    watch = LeaseWatch("me")
    watch.observe((lease("b", "7", lease_s=3.0),), now=500.0)
    assert watch.expired(502.9) == []
    assert len(watch.expired(503.0)) == 1


def test_members_report_age_and_expiry() -> None:
    watch = LeaseWatch("me")
    watch.observe((lease("b", "1", lease_s=3.0), lease("me", "1")), now=10.0)
    members = {m.node_id: m for m in watch.members(now=14.0)}
    assert members["b"].lease_age_s == 4.0
    assert members["b"].expired
    assert not members["me"].expired
    assert [m.node_id for m in watch.members(14.0)] == ["b", "me"]
