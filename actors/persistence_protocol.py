"""The runtime <-> persistence protocol.

The runtime never imports a store: it talks to whatever persistence actor it
was handed (``persistence/actor.py`` implements one) through these messages
only, so ``actors`` stays free of database code and imports point one way
(web -> persistence -> actors; docs/design.md).

=======================  ================================================
message                  reply
=======================  ================================================
``SaveRuns``             tell; acks with ``RunsPersisted`` to ``ack_to``
``LoadRun``              ``RunRecord | None``
``LoadHeader``           ``RunWrite | None`` (no events)
``LoadEvents``           ``list[Event]`` (one page)
``QueryRuns``            ``list[RunSummary]``
``DeleteStored``         ``bool``
``RecoverInterrupted``   ``tuple[str, ...]`` (run ids)
``PurgeStored``          ``int`` (runs purged)
``StoreStatus``          ``StoreHealth``
=======================  ================================================

Store failures come back as :class:`~runyard.actors.errors.StoreUnavailable`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runyard.actors.records import (
    TERMINAL_STATUSES,
    Event,
    RunRecord,
    RunStatus,
    RunSummary,
    Version,
    replaces,
)

if TYPE_CHECKING:
    import pykka


@dataclass(frozen=True, slots=True)
class RunWrite:
    """One run's change in one commit: its header as of now, and its new events.

    ``header`` is the run without its trace (``header.events == ()``);
    ``event_count`` is the trace length once this write is applied, and
    ``events`` are the last ``len(events)`` of the trace, contiguous (seqs
    ``first_seq .. event_count``).  Events never change once written, so a
    store appends them and never rewrites one; a live run's writes carry only
    what it emitted since its previous write, which keeps a commit's cost
    proportional to what is new, not to the trace.
    """

    header: RunRecord
    event_count: int
    events: tuple[Event, ...] = ()

    @classmethod
    def of(cls, record: RunRecord) -> RunWrite:
        """A whole record as one write (its header and its entire trace)."""
        return cls(dataclasses.replace(record, events=()), len(record.events), record.events)

    @property
    def run_id(self) -> str:
        return self.header.run_id

    @property
    def first_seq(self) -> int:
        return self.event_count - len(self.events) + 1

    @property
    def version(self) -> Version:
        return (self.header.epoch, self.header.status, self.event_count, self.header.updated_at)

    def then(self, later: RunWrite) -> RunWrite:
        """This write followed by ``later`` (of the same run), as one write.

        The header is the one the merge rule (:func:`runyard.actors.records.replaces`)
        keeps; the events are both writes' events, which must join up: a gap
        would lose events, so it is a :class:`ValueError`.
        """
        header = later.header if replaces(later.version, self.version) else self.header
        if later.event_count <= self.event_count:
            return RunWrite(header, self.event_count, self.events)  # nothing new in it
        if later.first_seq <= self.first_seq:
            return RunWrite(header, later.event_count, later.events)  # it covers this one
        if later.first_seq > self.event_count + 1:
            msg = (
                f"run {self.run_id}: a write of events {later.first_seq}.. cannot follow "
                f"one that ends at {self.event_count}"
            )
            raise ValueError(msg)
        skip = self.event_count + 1 - later.first_seq
        return RunWrite(header, later.event_count, self.events + later.events[skip:])

    def without_events(self) -> RunWrite:
        """The same version, carrying no events (a header and its ``event_count``)."""
        return RunWrite(self.header, self.event_count)

    def summary(self) -> RunSummary:
        return dataclasses.replace(self.header.summary(), event_count=self.event_count)

    def applied_to(self, stored: RunRecord | None) -> RunRecord:
        """What the store holds once this write is applied to ``stored``."""
        if stored is not None and not replaces(self.version, stored.version):
            return stored
        before = stored.events[: self.first_seq - 1] if stored is not None else ()
        return dataclasses.replace(self.header, events=before + self.events)

    def interrupted(self, error: str, now: float) -> RunWrite:
        """This (stored, running) run ended ``error`` because its process died.

        Every stored event stays; a closing ``done`` event follows them, numbered
        after every seq any client can have received (clients only ever get
        stored events), so a replay ends the way every stream does.
        """
        done = Event(
            seq=self.event_count + 1,
            ts=now,
            type="done",
            data={"status": "error", "result": None, "error": error},
        )
        header = dataclasses.replace(
            self.header, status="error", error=error, finished_at=now, updated_at=now, events=()
        )
        return RunWrite(header, self.event_count + 1, (done,))


@dataclass(frozen=True, slots=True)
class SaveRuns:
    """Commit these writes; ack with :class:`RunsPersisted` to ``ack_to``.

    Sent by every writer to the store link (:mod:`runyard.actors.store_link`), which
    sends one per group commit on to the persistence actor.  Writes of
    one run are joined with :meth:`RunWrite.then` at every step, so a
    terminal header is never overwritten by a stale ``running`` one.
    """

    writes: tuple[RunWrite, ...]
    ack_to: pykka.ActorRef[Any] | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    """A version of a run the store now holds."""

    run_id: str
    status: RunStatus
    event_count: int
    fenced: bool = False
    """The store refused the write instead: another node took the run over and
    fenced it (a higher epoch, :attr:`RunRecord.epoch
    <runyard.actors.records.RunRecord.epoch>`); nothing more of it may be stored or
    served by this node."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RunsPersisted:
    """The store has acknowledged these versions (or newer ones)."""

    saved: tuple[Saved, ...]


@dataclass(frozen=True, slots=True)
class LoadRun:
    run_id: str


@dataclass(frozen=True, slots=True)
class LoadHeader:
    """The run without its trace (a :class:`RunWrite` with no events), or None: what
    a replay of a stored run starts from, before it pages through the events."""

    run_id: str


@dataclass(frozen=True, slots=True)
class LoadEvents:
    """A page of a stored run's trace: at most ``limit`` events after ``after_seq``."""

    run_id: str
    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True)
class QueryRuns:
    """A page of one owner's stored runs, or with ``workspace`` of the runs shared
    with that workspace (then ``owner`` is None), newest first, strictly after
    ``before``."""

    owner: str | None = None
    workspace: str | None = None
    status: RunStatus | None = None
    agent: str | None = None
    limit: int = 50
    before: tuple[float, str] | None = None


@dataclass(frozen=True, slots=True)
class DeleteStored:
    run_id: str


@dataclass(frozen=True, slots=True)
class RecoverInterrupted:
    """Mark runs a dead process of ``node`` left ``running`` as interrupted; reply:
    their ids.  Runs of other nodes are not touched (records without a node
    count as this node's)."""

    node: str
    error: str
    skip: frozenset[str] = frozenset()
    """Runs not to touch: those this node has just resumed (a takeover)."""


@dataclass(frozen=True, slots=True)
class FenceUnfinished:
    """Fence ``node``'s runs still ``running`` (raise their epoch in the store,
    so no write of that node can land any more: it was judged dead but may only
    have paused); reply: ``list[RunWrite]``, their headers at the new epoch."""

    node: str


@dataclass(frozen=True, slots=True)
class PurgeStored:
    """Delete finished runs that finished before ``cutoff``; reply: how many."""

    cutoff: float
    batch: int = 500


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Reply: :class:`StoreHealth`."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    up: bool
    backlog: int
    last_error: str | None
