"""``StoredRuns``: the registry's reads of runs that only the store holds.

Every read goes through the store link within ``store_timeout_s`` (a frozen
or busy store is :class:`~runyard.actors.errors.StoreUnavailable`, a 503, never a
500 nor a hung request), and every run read for a caller passes the same
ownership check as a run in memory.  Traces are never loaded whole for a
reader: :meth:`replay` pages them (:class:`~runyard.actors.stored_replay.StoredReplay`).
The check is :mod:`runyard.actors.access`'s, the same rule as everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pykka

from runyard.actors.access import check_act, check_read
from runyard.actors.asyncio_actor import ask
from runyard.actors.config import RuntimeConfig
from runyard.actors.errors import RunNotFound, StoreUnavailable
from runyard.actors.messages import Caller
from runyard.actors.persistence_protocol import (
    LoadEvents,
    LoadHeader,
    LoadRun,
    RunWrite,
    StoreHealth,
    StoreStatus,
)
from runyard.actors.records import Event, RunRecord
from runyard.actors.stored_replay import StoredReplay

__all__ = ["StoredRuns"]


class StoredRuns:
    def __init__(self, store: pykka.ActorRef[Any] | None, config: RuntimeConfig) -> None:
        """``store``: the store link; None (memory only) makes every run unknown."""
        self._store = store
        self._config = config

    async def ask(self, message: Any, timeout: float | None = None) -> Any:
        """The store's answer within ``timeout`` (default: ``store_timeout_s``), else
        :class:`StoreUnavailable`."""
        if self._store is None:
            raise StoreUnavailable("this runtime has no store")
        limit = timeout or self._config.store_timeout_s
        try:
            return await ask(self._store, message, timeout=limit)
        except TimeoutError:
            raise StoreUnavailable(f"the store did not answer within {limit:g} s") from None
        except pykka.ActorDeadError:
            raise StoreUnavailable("the store is not running (the server is stopping)") from None

    async def header(
        self, caller: Caller, run_id: str, *, act: bool = False, owner_check: bool = True
    ) -> RunWrite:
        """The stored run without its trace, after the ownership check: may the
        caller read it, or with ``act`` delete it (:mod:`runyard.actors.access`);
        none with ``owner_check`` False (the caller applies its own rule, as a
        stop does: :mod:`runyard.actors.stop_rule`)."""
        stored: RunWrite | None = None
        if self._store is not None:
            stored = await self.ask(LoadHeader(run_id))
        if stored is None:
            raise RunNotFound(f"no run {run_id}")
        if owner_check:
            (check_act if act else check_read)(caller, stored.header, run_id)
        return stored

    async def record(self, caller: Caller, run_id: str) -> RunRecord:
        """The whole stored record, after the ownership check."""
        record: RunRecord | None = None
        if self._store is not None:
            record = await self.ask(LoadRun(run_id))
        if record is None:
            raise RunNotFound(f"no run {run_id}")
        check_read(caller, record, run_id)
        return record

    def replay(
        self, stored: RunWrite, after_seq: int, loop: asyncio.AbstractEventLoop
    ) -> StoredReplay:
        """A paged subscription to ``stored``'s trace from ``after_seq`` on."""
        run_id = stored.run_id

        def fetch(after: int, limit: int) -> Awaitable[list[Event]]:
            return self.ask(LoadEvents(run_id, after, limit))

        return StoredReplay(stored.header, stored.event_count, loop, fetch, after_seq=after_seq)

    async def health(self) -> StoreHealth | None:
        """The store's health, or why it could not be had (backlog -1); None: no store."""
        if self._store is None:
            return None
        try:
            health: StoreHealth = await self.ask(StoreStatus(), timeout=2.0)
        except StoreUnavailable as exc:
            return StoreHealth(up=False, backlog=-1, last_error=exc.message)
        except Exception as exc:
            return StoreHealth(up=False, backlog=-1, last_error=f"{type(exc).__name__}: {exc}")
        return health
