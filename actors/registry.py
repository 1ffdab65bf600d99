"""``RegistryActor``: the run table, ownership, routing and the finished-run cache.

Every message that names a run comes here first.  The registry checks who is
asking against who owns the run, then answers from what it holds or forwards
the message, with the asker's reply future, to the run's actor
(:class:`~actors.asyncio_actor.Forward`), so a live run answers for itself
without a second round trip.

Where a run is, by age:

1. live: a :class:`~actors.run.RunActor` (``self._live``);
2. finished, fresh: a plain record in the :class:`~actors.finished_cache.FinishedCache`
   for ``retention_s`` and within ``cache_bytes`` (a run reaches it only
   once its final record is stored);
3. older: only in the store, reached through the store link
   (:mod:`actors.store_link`) by a deferred reply, so a slow store never
   holds up the registry's inbox.

The registry writes no runs: each run actor writes its own (header, new
events, final header) through the store link, the one batched, acknowledged
route to the store; deletes, reads and purges from here take the same link.
A start is acknowledged by the run actor itself, which the registry hands
the asker's reply (:class:`~actors.live_run.StartAck`): it answers once its
header is stored, in the step the store's acknowledgement reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pykka

from actors.agents import AgentCatalog
from actors.asyncio_actor import AsyncioActor, Forward, ask, tell_stop
from actors.clock import Clock, SystemClock
from actors.config import RuntimeConfig
from actors.context import Agent, AgentFactory
from actors.errors import (
    AlreadyFinished,
    InvalidRequest,
    NotAdmin,
    NotOwner,
    RunNotFound,
    ShuttingDown,
    StillRunning,
    StoreUnavailable,
    TooManyLiveRuns,
)
from actors.feed import Feed
from actors.finished_cache import FinishedCache
from actors.listing import Listing
from actors.live_run import LiveRun, RunEnded, RunSettings, StartAck
from actors.messages import (
    SYSTEM,
    Caller,
    CheckHealth,
    DeleteRun,
    Evict,
    GetRun,
    Health,
    Introspect,
    ListRuns,
    ReadRun,
    RegistrySnapshot,
    RunStarted,
    Shutdown,
    StartRun,
    StopRun,
    Subscribe,
    Unsubscribe,
    Unwatch,
    WatchRuns,
)
from actors.persistence_protocol import (
    DeleteStored,
    LoadEvents,
    LoadHeader,
    LoadRun,
    RunWrite,
    StoreHealth,
    StoreStatus,
)
from actors.records import Event, RunRecord, RunSummary
from actors.run import RunActor
from actors.stored_replay import StoredReplay
from actors.subscription import Subscription
from actors.watchers import Watchers

logger = logging.getLogger("runyard.registry")


class RegistryActor(AsyncioActor):
    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        config: RuntimeConfig | None = None,
        store: pykka.ActorRef[Any] | None = None,
        clock: Clock | None = None,
        code_agent: AgentFactory | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``store``: the :class:`~actors.store_link.StoreLink`; None keeps runs in
        memory only.  ``code_agent`` makes the agent for ``StartRun(code=...)``
        (the run-code feature); None refuses such starts."""
        super().__init__(loop=loop)
        self._catalog = catalog
        self._config = config or RuntimeConfig()
        self._store = store
        self._clock = clock or SystemClock()
        self._code_agent = code_agent
        self._live: dict[str, LiveRun] = {}
        self._cache = FinishedCache(self._config.cache_bytes if store is not None else 2**62)
        self._live_per_user: Counter[str] = Counter()
        self._accepting = True
        self._idle: asyncio.Event | None = None
        self._watchers = Watchers()

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    # -- starting ----------------------------------------------------------

    def _start(self, msg: StartRun) -> Any:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; start the run again shortly")
        agent = self._resolve_agent(msg)
        user = msg.caller.user_id
        cap = self._config.max_live_runs_per_user
        if self._live_per_user[user] >= cap:
            raise TooManyLiveRuns(
                f"{user!r} already has {cap} live runs, the limit; "
                "stop some or wait for them to finish"
            )
        settings = RunSettings.of(msg, self._config)  # InvalidRequest for bad limits
        run_id = secrets.token_hex(16)  # uuid4().hex's shape, at a quarter of its cost
        started_at = self._clock.now()
        live = LiveRun(run_id=run_id, owner=user, agent=msg.agent, started_at=started_at)
        started = RunStarted(run_id=run_id, status="running", started_at=started_at)
        # With a store, acknowledged only once the run is on record (group-committed
        # with the other starts): the run actor answers the asker itself.
        ack = None if self._store is None else StartAck(started, self.take_reply())
        live.ref = RunActor.start(
            live=live,
            input=msg.input,
            agent=agent,
            registry=self.actor_ref,
            store=self._store,
            settings=settings,
            clock=self._clock,
            start_ack=ack,
            loop=self.actor_loop,
        )
        self._live[run_id] = live
        self._live_per_user[user] += 1
        if self._idle is not None:
            self._idle.clear()
        self._publish(user, "started", live)
        if ack is None:
            return started
        return None  # the run actor answers, once its header is stored

    def _resolve_agent(self, msg: StartRun) -> Agent:
        if msg.code is not None:
            if self._code_agent is None:
                raise InvalidRequest("this runtime does not run submitted code")
            return self._code_agent(msg)
        return self._catalog.get(msg.agent)

    # -- reading -----------------------------------------------------------

    def _in_memory(self, caller: Caller, run_id: str) -> LiveRun | RunRecord | None:
        """The run if memory holds it, after the ownership check; None: ask the store."""
        found: LiveRun | RunRecord | None = self._live.get(run_id) or self._cache.get(run_id)
        if found is not None:
            self._check_owner(caller, found.owner, run_id)
        return found

    def _get(self, msg: GetRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, msg)
        if found is not None:
            return found
        return self._load_owned(msg.caller, msg.run_id)

    def _read(self, msg: ReadRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, GetRun(msg.caller, msg.run_id))
        if found is not None:
            return found
        return self._subscribe_stored(Subscribe(msg.caller, msg.run_id))

    def _subscribe(self, msg: Subscribe) -> Any:
        if msg.after_seq < 0:
            raise InvalidRequest("after_seq must be >= 0")
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, msg)
        if found is not None:
            assert self.actor_loop is not None
            return Subscription.of_finished(found, self.actor_loop, msg.after_seq)
        return self._subscribe_stored(msg)

    async def _subscribe_stored(self, msg: Subscribe) -> Subscription:
        """A run only the store holds is replayed in pages, never loaded whole."""
        if self._store is None:
            raise RunNotFound(f"no run {msg.run_id}")
        stored: RunWrite | None = await self._ask_store(LoadHeader(msg.run_id))
        if stored is None:
            raise RunNotFound(f"no run {msg.run_id}")
        self._check_owner(msg.caller, stored.header.owner, msg.run_id)
        run_id = msg.run_id

        def fetch(after_seq: int, limit: int) -> Awaitable[list[Event]]:
            return self._ask_store(LoadEvents(run_id, after_seq, limit))

        assert self.actor_loop is not None
        return StoredReplay(
            stored.header, stored.event_count, self.actor_loop, fetch, after_seq=msg.after_seq
        )

    def _unsubscribe(self, msg: Unsubscribe) -> Any:
        live = self._live.get(msg.run_id)
        if live is not None and live.ref is not None:
            return Forward(live.ref, msg)
        return None

    def _list(self, msg: ListRuns) -> Any:
        listing = Listing(msg)
        user = msg.caller.user_id
        in_memory: dict[str, RunSummary] = {}
        for live in self._live.values():
            if live.owner == user:
                in_memory[live.run_id] = live.summary()
        for record in self._cache:
            if record.owner == user:
                in_memory[record.run_id] = record.summary()
        if self._store is None:
            return listing.page(s for s in in_memory.values() if listing.matches(s))
        return listing.with_store(in_memory, self._ask_store)

    # -- stopping and deleting ---------------------------------------------

    def _stop_run(self, msg: StopRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            if not found.stopping:
                self._publish(found.owner, "stopping", found)
            return Forward(found.ref, msg)
        if found is not None:
            raise _already_finished(found)
        return self._stop_stored(msg)

    async def _stop_stored(self, msg: StopRun) -> Any:
        record = await self._load_owned(msg.caller, msg.run_id)
        if not record.finished:
            raise _elsewhere(record, "stopped")
        raise _already_finished(record)

    def _delete(self, msg: DeleteRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            raise StillRunning(f"run {msg.run_id} is still running; stop it first")
        if found is None:
            return self._delete_stored(msg)
        self._cache.remove(msg.run_id)
        self._publish(found.owner, "deleted", found)
        if self._store is None:
            return None
        # Through the link: a write of this run still waiting there is dropped.
        return self._ask_store(DeleteStored(msg.run_id))

    async def _delete_stored(self, msg: DeleteRun) -> None:
        record = await self._load_owned(msg.caller, msg.run_id)
        if not record.finished:
            # Running on another node (sharing the store): never delete it under it.
            raise StillRunning(f"run {msg.run_id} is still running; stop it first")
        await self._ask_store(DeleteStored(msg.run_id))
        self._publish(record.owner, "deleted", record)

    # -- lifecycle of finished runs ----------------------------------------

    def _run_ended(self, msg: RunEnded) -> None:
        record = msg.record
        live = self._live.pop(record.run_id, None)
        if live is None:
            return
        self._live_per_user[live.owner] -= 1
        if self._live_per_user[live.owner] <= 0:
            del self._live_per_user[live.owner]
        self._cache.add(record)  # on record already: the run actor ended once it was stored
        if live.ref is not None:
            tell_stop(live.ref)
        self._publish(record.owner, "finished", record)
        if not self._live and self._idle is not None:
            self._idle.set()

    def _evict(self, msg: Evict) -> int:
        if msg.run_id is not None:
            return int(self._cache.remove(msg.run_id) is not None)
        return self._cache.evict_finished_before(self._clock.now() - self._config.retention_s)

    # -- lifecycle feed ----------------------------------------------------

    def _watch(self, msg: WatchRuns) -> Feed:
        assert self.actor_loop is not None
        return self._watchers.watch(msg.caller.user_id, self.actor_loop, msg.max_queue)

    def _unwatch(self, msg: Unwatch) -> None:
        self._watchers.unwatch(msg.feed)

    def _publish(self, user_id: str, kind: str, run: LiveRun | RunRecord) -> None:
        if self._watchers.watching(user_id):  # most runs have no watcher: no summary to build
            self._watchers.publish(user_id, kind, run.summary())

    # -- operators ---------------------------------------------------------

    def _introspect(self, msg: Introspect) -> Any:
        if not msg.caller.admin:
            raise NotAdmin("only admins can introspect the registry")
        now = self._clock.now()
        by_status: Counter[str] = Counter({"running": len(self._live)})
        for record in self._cache:
            by_status[record.status] += 1
        live = tuple(r.info(now) for r in self._live.values())

        async def with_backlog() -> RegistrySnapshot:
            store = await self._store_health()
            return RegistrySnapshot(
                runs_by_status=dict(by_status),
                live=live,
                cached_finished=len(self._cache),
                persistence_backlog=0 if store is None else store.backlog,
                accepting=self._accepting,
            )

        return with_backlog()

    async def _health(self, msg: CheckHealth) -> Health:
        store = await self._store_health()
        return Health(accepting=self._accepting, live_runs=len(self._live), store=store)

    async def _store_health(self) -> StoreHealth | None:
        """The store's health, or why it could not be had (backlog -1); None: no store."""
        if self._store is None:
            return None
        try:
            health: StoreHealth = await self._ask_store(StoreStatus(), timeout=2.0)
        except StoreUnavailable as exc:
            return StoreHealth(up=False, backlog=-1, last_error=exc.message)
        except Exception as exc:
            return StoreHealth(up=False, backlog=-1, last_error=f"{type(exc).__name__}: {exc}")
        return health

    def _shutdown(self, msg: Shutdown) -> Any:
        self._accepting = False
        return self._drain(msg)

    async def _drain(self, msg: Shutdown) -> None:
        idle = self._idle_event()
        if self._live:
            try:
                async with asyncio.timeout(msg.grace_s):
                    await idle.wait()
            except TimeoutError:
                pass
        for live in list(self._live.values()):
            if live.ref is not None and live.ref.is_alive():
                live.ref.tell(StopRun(SYSTEM, live.run_id, reason=msg.reason))
        # A run ends once its final record is stored: a store that takes no
        # writes must not hold the shutdown forever.  What it could not take
        # is reported by the persistence actor's final flush (exit status 1).
        config = self._config
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * config.stop_grace_s + config.store_timeout_s + 1):
                await idle.wait()

    def _idle_event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if not self._live:
                self._idle.set()
        return self._idle

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _check_owner(caller: Caller, owner: str, run_id: str) -> None:
        if caller.user_id != owner:
            raise NotOwner(f"run {run_id} belongs to another user")

    async def _load_owned(self, caller: Caller, run_id: str) -> RunRecord:
        if self._store is None:
            raise RunNotFound(f"no run {run_id}")
        record: RunRecord | None = await self._ask_store(LoadRun(run_id))
        if record is None:
            raise RunNotFound(f"no run {run_id}")
        self._check_owner(caller, record.owner, run_id)
        return record

    async def _ask_store(self, message: Any, timeout: float | None = None) -> Any:
        """The store's answer within ``timeout`` (default: ``store_timeout_s``), else
        :class:`StoreUnavailable`: a frozen or busy store is a 503, never a 500."""
        assert self._store is not None
        limit = timeout or self._config.store_timeout_s
        try:
            return await ask(self._store, message, timeout=limit)
        except TimeoutError:
            raise StoreUnavailable(f"the store did not answer within {limit:g} s") from None
        except pykka.ActorDeadError:
            raise StoreUnavailable("the store is not running (the server is stopping)") from None

    _handlers: dict[type, Any] = {
        StartRun: _start,
        GetRun: _get,
        ReadRun: _read,
        ListRuns: _list,
        Subscribe: _subscribe,
        Unsubscribe: _unsubscribe,
        StopRun: _stop_run,
        DeleteRun: _delete,
        RunEnded: _run_ended,
        Evict: _evict,
        Introspect: _introspect,
        CheckHealth: _health,
        Shutdown: _shutdown,
        WatchRuns: _watch,
        Unwatch: _unwatch,
    }


def _already_finished(record: RunRecord) -> AlreadyFinished:
    how = f" ({record.error})" if record.error else ""
    return AlreadyFinished(
        f"run {record.run_id} already finished with status {record.status!r}{how}",
        record.status,
    )


def _elsewhere(record: RunRecord, verb: str) -> StillRunning:
    """A run the store says is running, but that this node does not run."""
    return StillRunning(
        f"run {record.run_id} is running on node {record.node or 'unknown'}, not on this one: "
        f"it can only be {verb} there until scale-out is built"
    )
