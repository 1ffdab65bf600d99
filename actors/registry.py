"""``RegistryActor``: the run table, ownership, routing and the finished-run cache.

Every message that names a run comes here first.  The registry checks who is
asking against who owns the run, then answers from what it holds or forwards
the message, with the asker's reply future, to the run's actor
(:class:`~actors.asyncio_actor.Forward`), so a live run answers for itself
without a second round trip.

Where a run is, by age:

1. live: a :class:`~actors.run.RunActor` (``self._live``);
2. finished, fresh: a plain record in ``self._cache`` for ``retention_s``,
   and until the store has acknowledged it (nothing is evicted unsaved);
3. older: only in the store, reached through the persistence actor by a
   deferred reply, so a slow store never holds up the registry's inbox.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pykka
from pykka import messages as pykka_messages

from actors.agents import AgentCatalog
from actors.asyncio_actor import AsyncioActor, Forward, ask
from actors.clock import Clock, SystemClock
from actors.context import Agent
from actors.cursor import decode_cursor, encode_cursor
from actors.errors import (
    AlreadyFinished,
    InvalidRequest,
    NotAdmin,
    NotOwner,
    RunNotFound,
    ShuttingDown,
    StillRunning,
    TooManyLiveRuns,
)
from actors.feed import Feed
from actors.messages import (
    SYSTEM,
    Caller,
    CheckHealth,
    DeleteRun,
    DeleteStored,
    Evict,
    Finished,
    GetRun,
    Health,
    Introspect,
    ListRuns,
    LiveRunInfo,
    LoadRun,
    QueryRuns,
    RegistrySnapshot,
    RunChange,
    RunEnded,
    RunPage,
    RunsPersisted,
    RunStarted,
    SaveRuns,
    Shutdown,
    StartRun,
    StopRun,
    StoreHealth,
    StoreStatus,
    Subscribe,
    Unsubscribe,
    Unwatch,
    WatchRuns,
)
from actors.records import ALL_STATUSES, RunRecord, RunSummary
from actors.run import LiveRun, RunActor, RunSettings
from actors.subscription import Subscription

logger = logging.getLogger("runyard.registry")

MAX_PAGE = 1000

PERSIST_BATCH_S = 0.02
"""Records bound for the store wait this long on the loop, then cross in one message.

Every message to the persistence thread is a lock, a wake-up and a GIL
hand-over; one per batch costs what one per run would cost at a single run
(LESSONS.md: one hop per batch is as fast as in-loop).  A run that finishes
within the window crosses once, as its final record.
"""


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    retention_s: float = 3600.0
    stop_grace_s: float = 5.0
    max_live_runs_per_user: int = 100
    checkpoint_interval_s: float = 5.0
    store_timeout_s: float = 10.0


@dataclass(slots=True)
class _Cached:
    record: RunRecord
    persisted: bool


class RegistryActor(AsyncioActor):
    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        settings: RegistrySettings | None = None,
        persistence: pykka.ActorRef[Any] | None = None,
        clock: Clock | None = None,
        code_agent: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self._catalog = catalog
        self._settings = settings or RegistrySettings()
        self._persistence = persistence
        self._clock = clock or SystemClock()
        self._code_agent = code_agent
        """Makes the agent for ``StartRun(code=...)`` (the run-code feature), if any."""
        self._live: dict[str, LiveRun] = {}
        self._cache: dict[str, _Cached] = {}
        self._live_per_user: Counter[str] = Counter()
        self._accepting = True
        self._idle: asyncio.Event | None = None
        self._watchers: dict[str, dict[Feed, None]] = {}
        self._outgoing: dict[str, RunRecord] = {}
        self._outgoing_timer: asyncio.TimerHandle | None = None

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    # -- starting ----------------------------------------------------------

    def _start(self, msg: StartRun) -> RunStarted:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; start the run again shortly")
        agent = self._resolve_agent(msg)
        user = msg.caller.user_id
        cap = self._settings.max_live_runs_per_user
        if self._live_per_user[user] >= cap:
            raise TooManyLiveRuns(
                f"{user!r} already has {cap} live runs, the limit; "
                "stop some or wait for them to finish"
            )
        if msg.max_duration_s is not None and not msg.max_duration_s > 0:
            raise InvalidRequest("max_duration_s must be a positive number of seconds")
        if msg.restart is not None and (msg.restart.max_restarts < 0 or msg.restart.backoff_s < 0):
            raise InvalidRequest("restart.max_restarts and restart.backoff_s must be >= 0")

        run_id = uuid.uuid4().hex
        started_at = self._clock.now()
        live = LiveRun(run_id=run_id, owner=user, agent=msg.agent, started_at=started_at)
        options: dict[str, Any] = {}
        if msg.max_duration_s is not None:
            options["max_duration_s"] = msg.max_duration_s
        if msg.restart is not None:
            options["restart"] = {
                "max_restarts": msg.restart.max_restarts,
                "backoff_s": msg.restart.backoff_s,
            }
        settings = RunSettings(
            stop_grace_s=self._settings.stop_grace_s,
            max_duration_s=msg.max_duration_s,
            restart=msg.restart,
            checkpoint_interval_s=self._settings.checkpoint_interval_s,
            options=options,
        )
        live.ref = RunActor.start(
            live=live,
            input=msg.input,
            agent=agent,
            registry=self.actor_ref,
            persistence=self._persistence,
            settings=settings,
            clock=self._clock,
            loop=self.actor_loop,
        )
        self._live[run_id] = live
        self._live_per_user[user] += 1
        if self._idle is not None:
            self._idle.clear()
        if self._persistence is not None:
            stub = RunRecord(
                run_id=run_id,
                owner=user,
                agent=msg.agent,
                status="running",
                input=msg.input,
                started_at=started_at,
                updated_at=started_at,
                options=options,
            )
            self._persist(stub)
        self._publish(user, "started", _live_summary(live))
        return RunStarted(run_id=run_id, status="running", started_at=started_at)

    def _resolve_agent(self, msg: StartRun) -> Agent:
        if msg.code is not None:
            if self._code_agent is None:
                raise InvalidRequest("this runtime does not run submitted code")
            agent: Agent = self._code_agent(msg)
            return agent
        return self._catalog.get(msg.agent)

    # -- reading -----------------------------------------------------------

    def _in_memory(self, caller: Caller, run_id: str) -> LiveRun | _Cached | None:
        """The run if memory holds it, after the ownership check; None: ask the store."""
        found: LiveRun | _Cached | None = self._live.get(run_id) or self._cache.get(run_id)
        if found is not None:
            owner = found.owner if isinstance(found, LiveRun) else found.record.owner
            self._check_owner(caller, owner, run_id)
        return found

    def _get(self, msg: GetRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, msg)
        if found is not None:
            return found.record
        return self._load_owned(msg.caller, msg.run_id)

    def _subscribe(self, msg: Subscribe) -> Any:
        if msg.after_seq < 0:
            raise InvalidRequest("after_seq must be >= 0")
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, msg)
        if found is not None:
            return self._finished_subscription(found.record, msg.after_seq)
        return self._subscribe_stored(msg)

    async def _subscribe_stored(self, msg: Subscribe) -> Subscription:
        record = await self._load_owned(msg.caller, msg.run_id)
        return self._finished_subscription(record, msg.after_seq)

    def _finished_subscription(self, record: RunRecord, after_seq: int) -> Subscription:
        assert self.actor_loop is not None
        sub = Subscription(
            record.run_id,
            self.actor_loop,
            after_seq=after_seq,
            replay=list(record.events[after_seq:]),
            status=record.status,
        )
        sub.close(Finished(record))
        return sub

    def _unsubscribe(self, msg: Unsubscribe) -> Any:
        live = self._live.get(msg.run_id)
        if live is not None and live.ref is not None:
            return Forward(live.ref, msg)
        return None

    def _list(self, msg: ListRuns) -> Any:
        if not 1 <= msg.limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        if msg.status is not None and msg.status not in ALL_STATUSES:
            raise InvalidRequest(
                f"status must be one of {', '.join(sorted(ALL_STATUSES))}, not {msg.status!r}"
            )
        before = decode_cursor(msg.cursor) if msg.cursor else None
        user = msg.caller.user_id
        in_memory: dict[str, RunSummary] = {}
        for live in self._live.values():
            if live.owner == user:
                in_memory[live.run_id] = _live_summary(live)
        for cached in self._cache.values():
            if cached.record.owner == user:
                in_memory[cached.record.run_id] = cached.record.summary()
        mine = [
            s
            for s in in_memory.values()
            if _matches(s, msg) and (before is None or _key(s) < before)
        ]
        if self._persistence is None:
            return _page(mine, msg.limit)
        return self._list_with_store(msg, before, set(in_memory), mine)

    async def _list_with_store(
        self,
        msg: ListRuns,
        before: tuple[float, str] | None,
        in_memory: set[str],
        mine: list[RunSummary],
    ) -> RunPage:
        # Memory holds the freshest version of its runs; the store supplies the
        # rest.  Keep paging the store until it gave limit+1 runs memory does
        # not hold (or ran out), so the merged page is the true newest slice.
        wanted = msg.limit + 1
        found: list[RunSummary] = []
        cursor = before
        while True:
            rows: list[RunSummary] = await self._ask_store(
                QueryRuns(
                    owner=msg.caller.user_id,
                    status=msg.status,
                    agent=msg.agent,
                    limit=wanted,
                    before=cursor,
                )
            )
            found.extend(r for r in rows if r.run_id not in in_memory)
            if len(rows) < wanted or len(found) >= wanted:
                break
            cursor = _key(rows[-1])
        return _page([*mine, *found], msg.limit)

    # -- stopping and deleting ---------------------------------------------

    def _stop_run(self, msg: StopRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            if not found.stopping:
                self._publish(found.owner, "stopping", _live_summary(found))
            return Forward(found.ref, msg)
        if found is not None:
            raise _already_finished(found.record)
        return self._stop_stored(msg)

    async def _stop_stored(self, msg: StopRun) -> Any:
        record = await self._load_owned(msg.caller, msg.run_id)
        raise _already_finished(record)

    def _delete(self, msg: DeleteRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            raise StillRunning(f"run {msg.run_id} is still running; stop it first")
        if found is None:
            return self._delete_stored(msg)
        del self._cache[msg.run_id]
        # Not yet sent to the store: it must not arrive after the delete.
        self._outgoing.pop(msg.run_id, None)
        self._publish(found.record.owner, "deleted", found.record.summary())
        if self._persistence is None:
            return None
        return self._ask_store(DeleteStored(msg.run_id))

    async def _delete_stored(self, msg: DeleteRun) -> None:
        record = await self._load_owned(msg.caller, msg.run_id)
        await self._ask_store(DeleteStored(msg.run_id))
        self._publish(record.owner, "deleted", record.summary())

    # -- lifecycle of finished runs ----------------------------------------

    def _run_ended(self, msg: RunEnded) -> None:
        record = msg.record
        live = self._live.pop(record.run_id, None)
        if live is None:
            return
        self._live_per_user[live.owner] -= 1
        if self._live_per_user[live.owner] <= 0:
            del self._live_per_user[live.owner]
        self._cache[record.run_id] = _Cached(record, persisted=False)
        if self._persistence is not None:
            self._persist(record)
        if live.ref is not None:
            # A plain tell: ref.stop() would build two futures nobody waits on.
            live.ref.tell(pykka_messages._ActorStop())
        self._publish(record.owner, "finished", record.summary())
        if not self._live and self._idle is not None:
            self._idle.set()

    def _persisted(self, msg: RunsPersisted) -> None:
        for run_id, status in msg.saved:
            cached = self._cache.get(run_id)
            if cached is not None and cached.record.status == status:
                cached.persisted = True

    def _evict(self, msg: Evict) -> int:
        durable = self._persistence is None
        if msg.run_id is not None:
            cached = self._cache.get(msg.run_id)
            if cached is not None and (cached.persisted or durable):
                del self._cache[msg.run_id]
                return 1
            return 0
        cutoff = self._clock.now() - self._settings.retention_s
        expired = [
            run_id
            for run_id, c in self._cache.items()
            if (c.persisted or durable)
            and c.record.finished_at is not None
            and c.record.finished_at <= cutoff
        ]
        for run_id in expired:
            del self._cache[run_id]
        return len(expired)

    # -- to the store --------------------------------------------------------

    def _persist(self, record: RunRecord) -> None:
        waiting = self._outgoing.get(record.run_id)
        if waiting is None or record.finished or not waiting.finished:
            self._outgoing[record.run_id] = record
        if self._outgoing_timer is None:
            assert self.actor_loop is not None
            self._outgoing_timer = self.actor_loop.call_later(PERSIST_BATCH_S, self._send_outgoing)

    def _send_outgoing(self) -> None:
        self._outgoing_timer = None
        if not self._outgoing or self._persistence is None:
            return
        records = tuple(self._outgoing.values())
        self._outgoing.clear()
        if self._persistence.is_alive():
            self._persistence.tell(SaveRuns(records, ack_to=self.actor_ref))

    def on_stop(self) -> None:
        if self._outgoing_timer is not None:
            self._outgoing_timer.cancel()
        self._send_outgoing()  # nothing bound for the store stays behind

    # -- lifecycle feed ----------------------------------------------------

    def _watch(self, msg: WatchRuns) -> Feed:
        assert self.actor_loop is not None
        feed = Feed(msg.caller.user_id, self.actor_loop, msg.max_queue)
        self._watchers.setdefault(msg.caller.user_id, {})[feed] = None
        return feed

    def _unwatch(self, msg: Unwatch) -> None:
        feeds = self._watchers.get(msg.feed.user_id)
        if feeds is not None:
            feeds.pop(msg.feed, None)
            if not feeds:
                del self._watchers[msg.feed.user_id]

    def _publish(self, user_id: str, kind: str, summary: RunSummary) -> None:
        feeds = self._watchers.get(user_id)
        if not feeds:
            return
        change = RunChange(kind=kind, summary=summary)
        for feed in [f for f in feeds if not f.push(change)]:
            del feeds[feed]

    # -- operators ---------------------------------------------------------

    def _introspect(self, msg: Introspect) -> Any:
        if not msg.caller.admin:
            raise NotAdmin("only admins can introspect the registry")
        now = self._clock.now()
        by_status: Counter[str] = Counter({"running": len(self._live)})
        for cached in self._cache.values():
            by_status[cached.record.status] += 1
        live = tuple(
            LiveRunInfo(
                run_id=r.run_id,
                owner=r.owner,
                agent=r.agent,
                age_s=max(0.0, now - r.started_at),
                trace_length=r.trace_length,
                subscribers=r.subscribers,
                stopping=r.stopping,
            )
            for r in self._live.values()
        )

        async def with_backlog() -> RegistrySnapshot:
            backlog = 0
            if self._persistence is not None:
                try:
                    health: StoreHealth = await self._ask_store(StoreStatus(), timeout=2.0)
                    backlog = health.backlog
                except Exception:
                    backlog = -1
            return RegistrySnapshot(
                runs_by_status=dict(by_status),
                live=live,
                cached_finished=len(self._cache),
                persistence_backlog=backlog,
                accepting=self._accepting,
            )

        return with_backlog()

    async def _health(self, msg: CheckHealth) -> Health:
        store = None
        if self._persistence is not None:
            try:
                store = await self._ask_store(StoreStatus(), timeout=2.0)
            except Exception as exc:
                store = StoreHealth(up=False, backlog=-1, last_error=f"{type(exc).__name__}: {exc}")
        return Health(accepting=self._accepting, live_runs=len(self._live), store=store)

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
        if self._persistence is None:
            raise RunNotFound(f"no run {run_id}")
        record: RunRecord | None = await self._ask_store(LoadRun(run_id))
        if record is None:
            raise RunNotFound(f"no run {run_id}")
        self._check_owner(caller, record.owner, run_id)
        return record

    async def _ask_store(self, message: Any, timeout: float | None = None) -> Any:
        assert self._persistence is not None
        return await ask(
            self._persistence, message, timeout=timeout or self._settings.store_timeout_s
        )

    _handlers: dict[type, Any] = {
        StartRun: _start,
        GetRun: _get,
        ListRuns: _list,
        Subscribe: _subscribe,
        Unsubscribe: _unsubscribe,
        StopRun: _stop_run,
        DeleteRun: _delete,
        RunEnded: _run_ended,
        RunsPersisted: _persisted,
        Evict: _evict,
        Introspect: _introspect,
        CheckHealth: _health,
        Shutdown: _shutdown,
        WatchRuns: _watch,
        Unwatch: _unwatch,
    }


def _live_summary(live: LiveRun) -> RunSummary:
    return RunSummary(
        run_id=live.run_id,
        owner=live.owner,
        agent=live.agent,
        status=live.status,
        started_at=live.started_at,
        finished_at=None,
        event_count=live.trace_length,
        error=None,
    )


def _key(summary: RunSummary) -> tuple[float, str]:
    return (summary.started_at, summary.run_id)


def _matches(summary: RunSummary, msg: ListRuns) -> bool:
    return (msg.status is None or summary.status == msg.status) and (
        msg.agent is None or summary.agent == msg.agent
    )


def _page(candidates: list[RunSummary], limit: int) -> RunPage:
    candidates.sort(key=_key, reverse=True)
    page = candidates[:limit]
    more = len(candidates) > limit
    return RunPage(runs=tuple(page), next_cursor=encode_cursor(_key(page[-1])) if more else None)


def _already_finished(record: RunRecord) -> AlreadyFinished:
    how = f" ({record.error})" if record.error else ""
    return AlreadyFinished(
        f"run {record.run_id} already finished with status {record.status!r}{how}",
        record.status,
    )
