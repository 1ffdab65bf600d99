"""``RegistryActor``: the run table, ownership, routing and the finished-run cache.

Every message that names a run comes here first.  The registry checks who is
asking against who owns the run and the workspace it is shared with (one
rule, :mod:`runyard.actors.access`: members read, the owner and the
workspace's admins stop and delete), then answers from what it holds or forwards
the message, with the asker's reply future, to the run's actor
(:class:`~runyard.actors.asyncio_actor.Forward`), so a live run answers for itself
without a second round trip.

Where a run is, by age:

1. live: a :class:`~runyard.actors.run.RunActor` (``self._live``);
2. finished, fresh: a plain record in the :class:`~runyard.actors.finished_cache.FinishedCache`
   for ``retention_s`` and within ``cache_bytes`` (a run reaches it only
   once its final record is stored);
3. older: only in the store, reached through the store link
   (:mod:`runyard.actors.store_link`) by a deferred reply, so a slow store never
   holds up the registry's inbox.

The registry writes no runs: each run actor writes its own (header, new
events, final header) through the store link, the one batched, acknowledged
route to the store; deletes, reads and purges from here take the same link.
A start is acknowledged by the run actor itself, which the registry hands
the asker's reply (:class:`~runyard.actors.live_run.StartAck`): it answers once its
header is stored, in the step the store's acknowledgement reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from dataclasses import replace
from typing import Any

import pykka

from runyard.actors.access import check_act, check_member, check_read, may_read
from runyard.actors.agents import AgentCatalog
from runyard.actors.asyncio_actor import AsyncioActor, Forward, ask, tell_stop
from runyard.actors.clock import Clock, SystemClock
from runyard.actors.cluster_protocol import (
    NodeStatus,
    ReadStopRequests,
    RequestStop,
    RunDeleted,
    RunDocChanged,
    StopRequested,
)
from runyard.actors.config import RuntimeConfig
from runyard.actors.context import Agent, AgentFactory
from runyard.actors.errors import (
    AlreadyFinished,
    InvalidRequest,
    NotAdmin,
    RunNotFound,
    ShuttingDown,
    StillRunning,
    StoreUnavailable,
    TooManyLiveRuns,
)
from runyard.actors.feed import Feed
from runyard.actors.finished_cache import FinishedCache
from runyard.actors.listing import Listing
from runyard.actors.live_run import (
    EpochSeen,
    LiveRun,
    Resume,
    RunEnded,
    RunFenced,
    RunSettings,
    StartAck,
)
from runyard.actors.membership import TakeOverNode
from runyard.actors.messages import (
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
    StopAccepted,
    StopRun,
    Subscribe,
    Unsubscribe,
    Unwatch,
    WatchRuns,
)
from runyard.actors.mirror import MirrorEnded
from runyard.actors.persistence_protocol import (
    DeleteStored,
    FenceUnfinished,
    LoadRun,
    RecoverInterrupted,
    RunWrite,
)
from runyard.actors.records import JSON, RunRecord, RunSummary
from runyard.actors.remote_runs import RemoteRuns
from runyard.actors.run import RunActor
from runyard.actors.stats import RuntimeStats
from runyard.actors.stop_rule import stop_reason
from runyard.actors.stored_runs import StoredRuns
from runyard.actors.subscription import Subscription
from runyard.actors.watchers import Watchers

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
        cluster: pykka.ActorRef[Any] | None = None,
        stats: RuntimeStats | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``stats``: the runtime's counters (:mod:`runyard.actors.stats`).
        ``store``: the :class:`~runyard.actors.store_link.StoreLink`; None keeps runs in
        memory only.  ``code_agent`` makes the agent for ``StartRun(code=...)``
        (the run-code feature); None refuses such starts.  ``cluster``: the
        shared store's cluster backend (:mod:`runyard.actors.cluster_protocol`) when
        several nodes share the store; None for a single node."""
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
        self._cluster = cluster
        self._remote: RemoteRuns | None = None
        self._stored = StoredRuns(store, self._config)
        self._stats = stats if stats is not None else RuntimeStats()

    def on_start(self) -> None:
        if self._cluster is not None:
            self._remote = RemoteRuns(self._cluster, self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    # -- starting ----------------------------------------------------------

    def _start(self, msg: StartRun) -> Any:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; start the run again shortly")
        if msg.workspace is not None:
            check_member(msg.caller, msg.workspace)
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
        live = LiveRun(
            run_id=run_id,
            owner=user,
            agent=msg.agent,
            started_at=started_at,
            workspace=msg.workspace,
        )
        started = RunStarted(run_id=run_id, status="running", started_at=started_at)
        # With a store, acknowledged only once the run is on record (group-committed
        # with the other starts): the run actor answers the asker itself.
        ack = None if self._store is None else StartAck(started, self.take_reply())
        self._launch(live, msg.input, agent, settings, start_ack=ack)
        self._publish("started", live)
        if ack is None:
            return started
        return None  # the run actor answers, once its header is stored

    def _launch(
        self,
        live: LiveRun,
        input: dict[str, JSON],
        agent: Agent,
        settings: RunSettings,
        *,
        resume: Resume | None = None,
        start_ack: StartAck | None = None,
    ) -> None:
        """Start the run's supervisor and enter it in the run table."""
        live.ref = RunActor.start(
            live=live,
            input=input,
            agent=agent,
            registry=self.actor_ref,
            store=self._store,
            settings=settings,
            clock=self._clock,
            resume=resume,
            start_ack=start_ack,
            stats=self._stats,
            loop=self.actor_loop,
        )
        self._live[live.run_id] = live
        self._live_per_user[live.owner] += 1
        self._stats.starts += 1
        self._stats.live_by_agent[live.agent] += 1
        if self._idle is not None:
            self._idle.clear()
        self._report_status()

    def _resolve_agent(self, msg: StartRun) -> Agent:
        if msg.code is not None:
            if self._code_agent is None:
                raise InvalidRequest("this runtime does not run submitted code")
            return self._code_agent(msg)
        return self._catalog.resolve(msg.agent, msg.input)

    # -- reading -----------------------------------------------------------

    def _in_memory(
        self, caller: Caller, run_id: str, *, act: bool = False
    ) -> LiveRun | RunRecord | None:
        """The run if memory holds it, after the ownership check (may the caller
        read it, or with ``act`` stop or delete it); None: ask the store."""
        found: LiveRun | RunRecord | None = self._live.get(run_id) or self._cache.get(run_id)
        if found is not None:
            if act:
                check_act(caller, found, run_id)
            else:
                check_read(caller, found, run_id)
        return found

    def _get(self, msg: GetRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            return Forward(found.ref, msg)
        if found is not None:
            return found
        return self._stored.record(msg.caller, msg.run_id)

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
        return self._subscribe_stored(msg, follow=True)

    async def _subscribe_stored(self, msg: Subscribe, *, follow: bool = False) -> Subscription:
        """A run only the store holds is replayed in pages, never loaded whole;
        with ``follow``, one running on another node is followed live through
        this node's mirror of it."""
        stored = await self._stored.header(msg.caller, msg.run_id)
        run_id = msg.run_id
        if follow and self._remote is not None and self._runs_elsewhere(stored):
            assert self.actor_loop is not None
            mirror = self._remote.mirror(run_id, self.actor_loop)
            with contextlib.suppress(pykka.ActorDeadError, RunNotFound):
                # (a mirror that just ended: its run did too, so the store has it all)
                subscription: Subscription = await ask(mirror, msg)
                return subscription
            stored = await self._stored.header(msg.caller, msg.run_id)
        assert self.actor_loop is not None
        return self._stored.replay(stored, msg.after_seq, self.actor_loop)

    def _unsubscribe(self, msg: Unsubscribe) -> Any:
        live = self._live.get(msg.run_id)
        if live is not None and live.ref is not None:
            return Forward(live.ref, msg)
        mirror = self._remote.mirror_of(msg.run_id) if self._remote is not None else None
        if mirror is not None:
            mirror.tell(msg)
        return None

    def _list(self, msg: ListRuns) -> Any:
        listing = Listing(msg)
        caller = msg.caller
        in_memory: dict[str, RunSummary] = {}
        for live in self._live.values():
            if may_read(caller, live):
                in_memory[live.run_id] = live.summary()
        for record in self._cache:
            if may_read(caller, record):
                in_memory[record.run_id] = record.summary()
        if self._store is None:
            return listing.page(s for s in in_memory.values() if listing.matches(s))
        return listing.with_store(in_memory, self._stored.ask)

    # -- stopping and deleting ---------------------------------------------

    def _stop_run(self, msg: StopRun) -> Any:
        # Not _in_memory(): the stop rule is stop_rule.py's (a server admin may
        # stop another user's live run; the workspace's admins may stop its runs).
        found: LiveRun | RunRecord | None = self._live.get(msg.run_id)
        found = found or self._cache.get(msg.run_id)
        if found is None:
            return self._stop_stored(msg)
        live = isinstance(found, LiveRun)
        reason = stop_reason(msg.caller, found, msg.run_id, msg.reason, live=live)
        if isinstance(found, LiveRun):
            assert found.ref is not None
            if not found.stopping:
                self._publish("stopping", found)
            return Forward(found.ref, replace(msg, reason=reason))
        raise _already_finished(found)

    async def _stop_stored(self, msg: StopRun) -> Any:
        stored = await self._stored.header(msg.caller, msg.run_id, owner_check=False)
        record = stored.header
        reason = stop_reason(msg.caller, record, msg.run_id, msg.reason, live=not record.finished)
        if record.finished:
            raise _already_finished(record)
        if self._cluster is None or not self._runs_elsewhere(stored):
            raise _elsewhere(record, "stopped")
        # The owner hears of the request through its changes follower and stops the run.
        request = RequestStop(msg.run_id, record.node or "", msg.caller.user_id, reason)
        try:
            await ask(self._cluster, request, timeout=self._config.store_timeout_s)
        except TimeoutError:
            raise StoreUnavailable("the stop request could not be recorded in time") from None
        self._publish("stopping", stored)
        return StopAccepted(msg.run_id)

    def _delete(self, msg: DeleteRun) -> Any:
        found = self._in_memory(msg.caller, msg.run_id, act=True)
        if isinstance(found, LiveRun):
            raise StillRunning(f"run {msg.run_id} is still running; stop it first")
        if found is None:
            return self._delete_stored(msg)
        self._cache.remove(msg.run_id)
        self._publish("deleted", found)
        if self._store is None:
            return None
        # Through the link: a write of this run still waiting there is dropped.
        return self._stored.ask(DeleteStored(msg.run_id))

    async def _delete_stored(self, msg: DeleteRun) -> None:
        stored = await self._stored.header(msg.caller, msg.run_id, act=True)
        record = stored.header
        if not record.finished:
            # Running on another node (sharing the store): never delete it under it.
            raise StillRunning(f"run {msg.run_id} is still running; stop it first")
        await self._stored.ask(DeleteStored(msg.run_id))
        self._publish("deleted", stored)

    # -- lifecycle of finished runs ----------------------------------------

    def _run_ended(self, msg: RunEnded) -> None:
        record = msg.record
        if self._drop_live(record.run_id):
            self._stats.finished[record.status] += 1
            # On record already: the run actor ended once it was stored.
            self._cache.add(record, msg.trace_bytes)
            self._publish("finished", record)

    def _run_fenced(self, msg: RunFenced) -> None:
        """Another node owns the run now: readers here go to the store (and
        follow it there live through a mirror, as any remote run)."""
        self._drop_live(msg.run_id)

    def _drop_live(self, run_id: str) -> bool:
        """Forget a live run and stop its actor; False if it was not live here."""
        live = self._live.pop(run_id, None)
        if live is None:
            return False
        self._live_per_user[live.owner] -= 1
        if self._live_per_user[live.owner] <= 0:
            del self._live_per_user[live.owner]
        self._stats.live_by_agent[live.agent] -= 1
        if self._stats.live_by_agent[live.agent] <= 0:
            del self._stats.live_by_agent[live.agent]
        if live.ref is not None:
            tell_stop(live.ref)
        self._report_status()
        if not self._live and self._idle is not None:
            self._idle.set()
        return True

    def _evict(self, msg: Evict) -> int:
        if msg.run_id is not None:
            return int(self._cache.remove(msg.run_id) is not None)
        return self._cache.evict_finished_before(self._clock.now() - self._config.retention_s)

    # -- lifecycle feed ----------------------------------------------------

    def _watch(self, msg: WatchRuns) -> Feed:
        assert self.actor_loop is not None
        if msg.workspace is not None:
            check_member(msg.caller, msg.workspace)
        return self._watchers.watch(msg.caller, msg.workspace, self.actor_loop, msg.max_queue)

    def _unwatch(self, msg: Unwatch) -> None:
        self._watchers.unwatch(msg.feed)

    def _publish(self, kind: str, run: LiveRun | RunRecord | RunWrite | RunSummary) -> None:
        """Tell the run's readers' feeds (its owner's, its workspace members')."""
        header = run.header if isinstance(run, RunWrite) else run
        # Most runs have no watcher: no summary to build.
        if self._watchers.watching(header.owner, header.workspace):
            summary = run if isinstance(run, RunSummary) else run.summary()
            self._watchers.publish(kind, summary)

    # -- other nodes (a shared store) ----------------------------------------

    def _runs_elsewhere(self, stored: RunWrite) -> bool:
        header = stored.header
        return not header.finished and header.node != self._config.node_id

    def _report_status(self) -> None:
        """What this node's next lease renewal says about it (a cheap one-way tell)."""
        if self._cluster is not None:
            self._cluster.tell(NodeStatus(live_runs=len(self._live), draining=not self._accepting))

    def _run_doc_changed(self, msg: RunDocChanged) -> None:
        live = self._live.get(msg.write.run_id)
        if live is not None:
            if live.ref is not None:
                live.ref.tell(EpochSeen(msg.write.header.epoch))
            return
        if self._remote is None:
            return
        for kind in self._remote.changed(msg.write):
            self._publish(kind, msg.write)

    def _run_deleted(self, msg: RunDeleted) -> None:
        """Deleted by any node: out of the cache, and announced if its owner is known."""
        record = self._cache.remove(msg.run_id)
        seen = self._remote.deleted(msg.run_id) if self._remote is not None else None
        if record is not None:
            self._publish("deleted", record)
        elif seen is not None:
            self._publish("deleted", seen)

    def _stop_requested(self, msg: StopRequested) -> None:
        live = self._live.get(msg.run_id)
        if live is None or live.ref is None:
            return  # finished meanwhile
        if not live.stopping:
            self._publish("stopping", live)
        live.ref.tell(StopRun(Caller(live.owner), msg.run_id, reason=msg.reason))

    def _mirror_ended(self, msg: MirrorEnded) -> None:
        if self._remote is not None:
            self._remote.mirror_ended(msg.run_id, msg.mirror)

    async def _take_over(self, msg: TakeOverNode) -> None:
        """The live runs of a node whose lease this node claimed: those whose
        restart policy allows another attempt go on here under the same run id
        (:meth:`_resume`); the rest end ``error`` with ``msg.error``."""
        if self._store is None:
            return
        timeout = max(30.0, self._config.store_timeout_s)
        resumed: set[str] = set()
        try:
            unfinished: list[RunWrite] = await self._stored.ask(
                FenceUnfinished(msg.node_id), timeout=timeout
            )
            stopped = await self._stops_requested(unfinished)
            for stored in unfinished:
                if (
                    stored.run_id not in stopped
                    and self._restarts_left(stored.header)
                    and self._accepting
                ):
                    record = await self._stored.ask(LoadRun(stored.run_id), timeout=timeout)
                    reason = msg.error.replace("interrupted: ", "", 1)
                    if record is not None and self._resume(record, reason):
                        resumed.add(record.run_id)
            recover = RecoverInterrupted(msg.node_id, msg.error, skip=frozenset(resumed))
            ended = await self._stored.ask(recover, timeout=timeout)
        except StoreUnavailable as exc:
            logger.error("could not take over the runs of node %s: %s", msg.node_id, exc)
            return
        logger.warning(
            "took over the runs of node %s: %d restarted here, %d ended as interrupted",
            msg.node_id,
            len(resumed),
            len(ended),
        )

    async def _stops_requested(self, runs: list[RunWrite]) -> frozenset[str]:
        """Which of ``runs`` a user asked to stop (the dead owner never did)."""
        if self._cluster is None or not runs:
            return frozenset()
        ask_for = ReadStopRequests(tuple(stored.run_id for stored in runs))
        try:
            stopped: frozenset[str] = await ask(
                self._cluster, ask_for, timeout=self._config.store_timeout_s
            )
        except TimeoutError:
            raise StoreUnavailable("the stop requests could not be read in time") from None
        return stopped

    def _restarts_left(self, header: RunRecord) -> bool:
        settings = RunSettings.stored(header, self._config)
        if settings.restart is None or header.agent not in self._catalog:
            return False
        return settings.restart.max_restarts > 0

    def _resume(self, record: RunRecord, reason: str) -> bool:
        """Go on with ``record`` here, from its stored trace, with a ``restart``
        event; False if it has no restart left (or ended meanwhile)."""
        settings = RunSettings.stored(record, self._config)
        attempt = 1 + sum(1 for e in record.events if e.type == "restart")
        if record.finished or settings.restart is None or attempt > settings.restart.max_restarts:
            return False
        live = LiveRun(
            run_id=record.run_id,
            owner=record.owner,
            agent=record.agent,
            started_at=record.started_at,
            trace_length=len(record.events),
            workspace=record.workspace,
        )
        resume = Resume(record.events, attempt, reason, record.epoch)
        self._launch(live, record.input, self._catalog.get(record.agent), settings, resume=resume)
        self._publish("started", live)
        return True

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
            store = await self._stored.health()
            return RegistrySnapshot(
                runs_by_status=dict(by_status),
                live=live,
                cached_finished=len(self._cache),
                persistence_backlog=0 if store is None else store.backlog,
                accepting=self._accepting,
            )

        return with_backlog()

    async def _health(self, msg: CheckHealth) -> Health:
        store = await self._stored.health()
        return Health(accepting=self._accepting, live_runs=len(self._live), store=store)

    def _shutdown(self, msg: Shutdown) -> Any:
        self._accepting = False
        self._report_status()
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
        RunFenced: _run_fenced,
        Evict: _evict,
        Introspect: _introspect,
        CheckHealth: _health,
        Shutdown: _shutdown,
        WatchRuns: _watch,
        Unwatch: _unwatch,
        RunDocChanged: _run_doc_changed,
        RunDeleted: _run_deleted,
        StopRequested: _stop_requested,
        MirrorEnded: _mirror_ended,
        TakeOverNode: _take_over,
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
        f"it can only be {verb} there (this node does not share the store as a cluster)"
    )
