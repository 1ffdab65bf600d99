"""What a subscription or a lifecycle feed delivers after the replay.

These are items in a subscriber's queue (:class:`~runyard.actors.subscription.Subscription`,
:class:`~runyard.actors.feed.Feed`), not requests: nobody sends them to an actor.  The
SSE layer turns each into a control frame (``done``, ``lagged``, ``closing``,
``run_*``).
"""

from __future__ import annotations

from dataclasses import dataclass

from runyard.actors.records import RunRecord, RunSummary


@dataclass(frozen=True, slots=True)
class Finished:
    """The run is over: the last item of a subscription."""

    record: RunRecord


@dataclass(frozen=True, slots=True)
class Lagged:
    """The subscriber fell behind and was cut off; resume with ``after_seq=last_seq``."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class Closing:
    """The server is shutting down; the run may go on elsewhere later."""

    last_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class RunChange:
    """One lifecycle change of one of the watcher's runs."""

    kind: str
    """``started``, ``stopping``, ``finished`` or ``deleted``."""
    summary: RunSummary
