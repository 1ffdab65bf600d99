"""``Runtime``: starts and stops the actor system on an event loop.

The runtime owns the registry actor, the store link (the one route to the
store, :mod:`runyard.actors.store_link`) and the housekeeping timers (evicting expired
finished runs from memory, purging old runs from the store).  It does not
build the store: the caller hands it a persistence actor ref, so ``actors``
never imports ``persistence`` (imports point one way; docs/design.md).
Without one, runs live in memory only.  With several nodes sharing a store,
the caller also hands it the store's cluster backend
(:mod:`runyard.actors.cluster_protocol`); the runtime then starts this node's
membership (:mod:`runyard.actors.membership`) and the backend's changes follower.

On the loop::

    runtime = Runtime(RuntimeConfig(), persistence=persistence_ref)
    await runtime.start()
    started = await runtime.ask(StartRun(Caller("svc"), "ticker", {"n": 3}))
    await runtime.shutdown()

From another thread, see :class:`runyard.actors.background.BackgroundRuntime`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pykka

from runyard.actors.agents import AgentCatalog, builtin_catalog
from runyard.actors.asyncio_actor import AsyncioActor, ask, ask_stop
from runyard.actors.clock import Clock, SystemClock
from runyard.actors.cluster_protocol import Follow
from runyard.actors.config import RuntimeConfig
from runyard.actors.context import AgentFactory
from runyard.actors.membership import MembershipActor
from runyard.actors.messages import Evict, Shutdown
from runyard.actors.persistence_protocol import PurgeStored, RecoverInterrupted
from runyard.actors.registry import RegistryActor
from runyard.actors.stats import RuntimeStats
from runyard.actors.store_link import StoreLink

logger = logging.getLogger("runyard.runtime")


class Runtime:
    def __init__(
        self,
        config: RuntimeConfig | None = None,
        *,
        catalog: AgentCatalog | None = None,
        persistence: pykka.ActorRef[Any] | None = None,
        clock: Clock | None = None,
        code_agent: AgentFactory | None = None,
        stop_persistence: bool = True,
        cluster: pykka.ActorRef[Any] | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        self.catalog = catalog or builtin_catalog()
        self.persistence = persistence
        self.clock = clock or SystemClock()
        self._code_agent = code_agent
        self._stop_persistence = stop_persistence
        self.cluster = cluster
        self._membership: pykka.ActorRef[MembershipActor] | None = None
        self._following: asyncio.Task[None] | None = None
        self._registry: pykka.ActorRef[RegistryActor] | None = None
        self._store: pykka.ActorRef[StoreLink] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self.recovered: tuple[str, ...] = ()
        """Run ids that a dead process had left ``running``, marked interrupted at start."""
        self.stats = RuntimeStats()
        """Counters and gauges the runtime keeps as plain numbers (read by ``/metrics``)."""

    @property
    def registry(self) -> pykka.ActorRef[RegistryActor]:
        if self._registry is None:
            msg = "the runtime is not started"
            raise RuntimeError(msg)
        return self._registry

    @property
    def membership(self) -> pykka.ActorRef[MembershipActor] | None:
        """This node's membership actor; None without a cluster backend."""
        return self._membership

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            msg = "the runtime is not started"
            raise RuntimeError(msg)
        return self._loop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        AsyncioActor.bind_loop(loop)
        if self.persistence is not None:
            # Before accepting runs: nothing may stay `running` from a dead process.
            try:
                node = self.config.node_id
                error = f"interrupted: node {node} stopped before the run finished"
                recover = RecoverInterrupted(node=node, error=error)
                self.recovered = tuple(await ask(self.persistence, recover))
            except Exception as exc:
                logger.warning("could not reconcile interrupted runs at start-up: %s", exc)
            if self.recovered:
                logger.info("marked %d interrupted run(s) as error", len(self.recovered))
        config = self.config
        if self.persistence is not None:
            self._store = StoreLink.start(
                self.persistence,
                write_window_s=config.write_window_s,
                commit_gap_s=config.commit_gap_s,
                loop=loop,
            )
        self._registry = RegistryActor.start(
            catalog=self.catalog,
            config=config,
            store=self._store,
            clock=self.clock,
            code_agent=self._code_agent,
            cluster=self.cluster,
            stats=self.stats,
            loop=loop,
        )
        if self.cluster is not None:
            self._membership = MembershipActor.start(
                node_id=config.node_id, cluster=self.cluster, registry=self._registry, loop=loop
            )
            follow = Follow(to=self._registry, membership=self._membership)
            try:
                await ask(self.cluster, follow, timeout=config.store_timeout_s)
            except Exception as exc:
                # A store down at start-up is served anyway and fixed without a
                # restart: keep asking in the background.
                logger.warning("the changes follower is not started yet: %s", exc)
                self._following = loop.create_task(self._follow_later(follow))
        self._every(config.evict_interval_s, self._evict)
        if self.persistence is not None:
            self._purge()
            self._every(config.purge_interval_s, self._purge)

    async def _follow_later(self, follow: Follow, max_backoff_s: float = 10.0) -> None:
        assert self.cluster is not None
        backoff = 0.5
        while True:
            await asyncio.sleep(backoff)
            try:
                await ask(self.cluster, follow, timeout=self.config.store_timeout_s)
            except Exception as exc:
                backoff = min(max_backoff_s, backoff * 2)
                logger.debug("the changes follower is still not started: %s", exc)
            else:
                logger.info("the changes follower has started")
                return

    async def ask(self, message: Any, *, timeout: float | None = None) -> Any:
        """Send ``message`` to the registry and await its reply (loop side)."""
        return await ask(self.registry, message, timeout=timeout)

    async def shutdown(self, grace_s: float | None = None, reason: str = "server shutdown") -> None:
        """Give live runs ``grace_s`` (default: the config's ``shutdown_grace_s``) to
        finish, stop the rest, then stop every actor."""
        if grace_s is None:
            grace_s = self.config.shutdown_grace_s
        if self._following is not None:
            self._following.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        registry = self._registry
        try:
            if registry is not None and registry.is_alive():
                await ask(registry, Shutdown(grace_s=grace_s, reason=reason))
                await ask_stop(registry)
        except pykka.ActorDeadError:
            # Torn down from outside: a forced exit (second signal) ends
            # ``asyncio.run``, which cancels every task, the registry's too.
            logger.warning("the registry stopped before an orderly shutdown")
        finally:
            # The lease says "stopped" once the runs are ended: nothing to take over.
            for ref in (self._membership, self.cluster):
                if ref is not None and ref.is_alive():
                    try:
                        await ask_stop(ref, timeout=self.config.store_timeout_s + 1)
                    except Exception as exc:
                        logger.warning("stopping %s: %s", ref, exc)
            # The link hands what is still waiting to the persistence actor as it stops.
            if self._store is not None and self._store.is_alive():
                await ask_stop(self._store)
            # Whatever happened above, the persistence thread must stop: it is
            # not a daemon thread, so a live one keeps the process from exiting.
            persistence = self.persistence
            if persistence is not None and self._stop_persistence and persistence.is_alive():
                # The persistence actor flushes its backlog in on_stop; its thread ends after.
                await ask_stop(persistence)
            if AsyncioActor._default_loop is self._loop:
                AsyncioActor.bind_loop(None)

    # -- housekeeping ------------------------------------------------------

    def _every(self, interval: float, action: Any) -> None:
        if interval <= 0:
            return

        def tick() -> None:
            action()
            self._timers = [t for t in self._timers if not t.cancelled()]
            self._timers.append(self.loop.call_later(interval, tick))

        self._timers.append(self.loop.call_later(interval, tick))

    def _evict(self) -> None:
        if self._registry is not None and self._registry.is_alive():
            self._registry.tell(Evict())

    def _purge(self) -> None:
        if self._store is not None and self._store.is_alive():
            cutoff = self.clock.now() - self.config.store_retention_s
            self._store.tell(PurgeStored(cutoff=cutoff))
