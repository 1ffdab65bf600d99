"""``RuntimeStats``: the runtime's counters and gauges, as plain numbers.

Operators scrape ``GET /metrics``; the runtime must not pay for that on its
hot path nor import a metrics library (imports point web -> persistence ->
actors; docs/design.md).  So the registry, the run actors and their logs
bump plain ints on one shared object (everything that writes it runs on the
event loop thread, so there is nothing to lock), and ``runyard.web.metrics`` reads
the object when Prometheus scrapes.  An ``emit`` costs one attribute
increment more; a commit fanned out to S subscribers, one multiplication.

The :class:`~runyard.actors.runtime.Runtime` owns one (``runtime.stats``) and hands
it down; a registry or run actor built without one gets a private throwaway
object, so tests that build actors by hand need not care.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RuntimeStats"]


@dataclass(slots=True)
class RuntimeStats:
    """Counters only ever grow (since the process started); gauges go up and down."""

    starts: int = 0
    """Runs started on this node (a run resumed here after a takeover counts too)."""
    finished: Counter[str] = field(default_factory=Counter)
    """Runs that ended on this node, by final status (success, error, stopped)."""
    stops: int = 0
    """Runs asked to stop (by a user, the store timing out a start, or shutdown); once per run."""
    events_emitted: int = 0
    """Events appended to a run's trace (agents' emits and the runtime's own events)."""
    events_delivered: int = 0
    """Live events handed to subscribers' queues (an event sent to 3 streams counts 3;
    replays are not counted)."""
    lagged: int = 0
    """Subscribers cut off because their queue overflowed (``event: lagged``)."""

    live_by_agent: Counter[str] = field(default_factory=Counter)
    """Gauge: live runs on this node, by agent name."""
    subscribers: int = 0
    """Gauge: subscriptions joined to this node's runs' live logs."""
