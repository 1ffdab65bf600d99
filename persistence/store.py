"""The ``RunStore`` protocol: the one interface both stores implement.

It is async because CouchDB is reached through aiocouch; the persistence actor
runs a private event loop in its own thread, so ``SQLiteStore`` can do its
blocking ``sqlite3`` work inside these coroutines without ever touching the
server's event loop.
"""

from __future__ import annotations

from typing import Protocol

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord, RunStatus, RunSummary

PageKey = tuple[float, str]
"""(started_at, run_id): the immutable sort key of the newest-first order."""


class RunStore(Protocol):
    commit_window_s: float
    """The longest the runtime's store link holds writes back behind a commit of
    this store that is not acknowledged yet (seconds); then they are sent
    anyway.  Not a wait before each commit: an idle link commits at once, and
    a busy one batches what arrives while a commit is in flight."""

    commit_gap_s: float
    """The shortest time between two commits' starts that suits this store
    (seconds; 0: none): see :attr:`RuntimeConfig.commit_gap_s
    <runyard.actors.config.RuntimeConfig.commit_gap_s>`."""

    awaits_nothing: bool
    """Its coroutines never suspend (blocking calls inside, as SQLite's): the
    persistence actor runs each in one step, without its event loop."""

    async def open(self) -> None:
        """Connect / create the schema or database and indexes if missing."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer right now (used by /readyz)."""

    async def save(self, record: RunRecord) -> None:
        """Write one whole record; see :meth:`save_many`."""

    async def save_many(self, writes: list[RunWrite]) -> set[str]:
        """Apply writes in one batch (one transaction / one ``_bulk_docs``).

        Each write's header replaces the stored one only if the merge rule
        (:func:`runyard.actors.records.replaces`) allows it, and a write whose header
        loses is skipped whole: a stale write never resurrects a finished run
        nor shrinks a trace.  Its events are appended; a stored event is never
        rewritten.  When this returns, every write is durable.

        Returns the runs whose writes lost to a higher epoch: another node
        fenced them (:meth:`fence_unfinished`), so their writer must drop them.
        """

    async def get(self, run_id: str) -> RunRecord | None:
        """The whole record, its trace cut at the stored ``event_count``."""

    async def get_header(self, run_id: str) -> RunWrite | None:
        """The run without its trace: its header and stored ``event_count`` (no events)."""

    async def get_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        """At most ``limit`` stored events with ``seq > after_seq``, in order: a replay page."""

    async def list_for_user(
        self,
        owner: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        """Newest first by (started_at, run_id) descending, strictly after ``before``."""

    async def list_for_workspace(
        self,
        workspace: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        """The runs shared with ``workspace`` (any owner), in :meth:`list_for_user`'s order."""

    async def delete(self, run_id: str) -> bool:
        """Remove the run and all its trace chunks; False if it was not there."""

    async def find_unfinished(self, node: str | None = None) -> list[RunWrite]:
        """Every run of ``node`` still ``running`` (after a crash: the interrupted
        ones), as its header and stored ``event_count`` (no events).  Runs without
        a node count as every node's; ``None`` means all runs."""

    async def fence_unfinished(self, node: str) -> list[RunWrite]:
        """Take ``node``'s running runs away from it before another node takes
        them over: raise each one's epoch (:attr:`RunRecord.epoch
        <runyard.actors.records.RunRecord.epoch>`) in the store, so any later write of
        the old owner loses, and return them as :meth:`find_unfinished` does, at
        their new epoch.  Runs that finished meanwhile are left out."""

    async def purge_older_than(self, cutoff: float, *, batch: int = 500) -> int:
        """Delete finished runs with ``finished_at < cutoff``; returns how many."""
