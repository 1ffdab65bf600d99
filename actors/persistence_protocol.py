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
``QueryRuns``            ``list[RunSummary]``
``DeleteStored``         ``bool``
``RecoverInterrupted``   ``tuple[str, ...]`` (run ids)
``PurgeStored``          ``int`` (runs purged)
``StoreStatus``          ``StoreHealth``
=======================  ================================================

Store failures come back as :class:`~actors.errors.StoreUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.records import TERMINAL_STATUSES, RunRecord, RunStatus

if TYPE_CHECKING:
    import pykka


@dataclass(frozen=True, slots=True)
class SaveRuns:
    """Write these records; ack with :class:`RunsPersisted` to ``ack_to``.

    Sent by every writer to the store link (:mod:`actors.store_link`), which
    sends one per group-commit window on to the persistence actor.  Versions
    of one run are merged by :meth:`RunRecord.newest
    <actors.records.RunRecord.newest>` at every step: a terminal record is
    never overwritten by a stale ``running`` one.
    """

    records: tuple[RunRecord, ...]
    ack_to: pykka.ActorRef[Any] | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    """A version of a run the store now holds."""

    run_id: str
    status: RunStatus
    event_count: int

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
class QueryRuns:
    """A page of one owner's stored runs, newest first, strictly after ``before``."""

    owner: str
    status: RunStatus | None = None
    agent: str | None = None
    limit: int = 50
    before: tuple[float, str] | None = None


@dataclass(frozen=True, slots=True)
class DeleteStored:
    run_id: str


@dataclass(frozen=True, slots=True)
class RecoverInterrupted:
    """Mark runs a dead process left ``running`` as interrupted; reply: their ids."""

    error: str = "interrupted: the server stopped before the run finished"


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
