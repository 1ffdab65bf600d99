"""The ``RunStore`` protocol: the one interface both stores implement.

It is async because CouchDB is reached through aiocouch; the persistence actor
runs a private event loop in its own thread, so ``SQLiteStore`` can do its
blocking ``sqlite3`` work inside these coroutines without ever touching the
server's event loop.
"""

from __future__ import annotations

from typing import Protocol

from actors.records import RunRecord, RunStatus, RunSummary

PageKey = tuple[float, str]
"""(started_at, run_id): the immutable sort key of the newest-first order."""


class RunStore(Protocol):
    async def open(self) -> None:
        """Connect / create the schema or database and indexes if missing."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer right now (used by /readyz)."""

    async def save(self, record: RunRecord) -> None:
        """Upsert one record; see :meth:`save_many`."""

    async def save_many(self, records: list[RunRecord]) -> None:
        """Upsert records in one batch (one transaction / one ``_bulk_docs``).

        A record whose stored version is terminal is never replaced by a
        ``running`` one (a stale checkpoint must not resurrect a finished run);
        a terminal record always replaces a ``running`` one.
        """

    async def get(self, run_id: str) -> RunRecord | None: ...

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

    async def delete(self, run_id: str) -> bool:
        """Remove the run and all its trace chunks; False if it was not there."""

    async def find_unfinished(self) -> list[RunRecord]:
        """Every record still ``running`` (after a crash: the interrupted ones)."""

    async def purge_older_than(self, cutoff: float, *, batch: int = 500) -> int:
        """Delete finished runs with ``finished_at < cutoff``; returns how many."""
