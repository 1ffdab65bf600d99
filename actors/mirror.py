"""``MirrorActor``: this node's copy of a run that lives on another node.

When a client on node B streams a run that node A runs, B must not open a
feed per reader nor read the store per reader: one mirror per followed run
holds the run's committed trace in a :class:`~runyard.actors.run_log.RunLog`, as
A's :class:`~runyard.actors.run.RunActor` does, and serves every subscriber of B
with the same atomic "replay then live" step.

The mirror learns of A's commits from the node's one changes follower (the
registry forwards :class:`~runyard.actors.cluster_protocol.RunDocChanged`); the run
doc's ``event_count`` is A's high-water mark, and the events up to it are
read from the store (:class:`~runyard.actors.cluster_protocol.ReadEvents`), so a
mirror never delivers an event A has not stored, and seqs are A's own.
A header read every ``poll_s`` is the safety net for a missed change.

A mirror ends when its run does (its subscribers get the run's ``done``),
or ``idle_s`` after its last subscriber left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import pykka

from runyard.actors.asyncio_actor import AsyncioActor, ask, tell_stop
from runyard.actors.cluster_protocol import ReadEvents, ReadHeader, RunDocChanged
from runyard.actors.errors import RunNotFound
from runyard.actors.messages import Subscribe, Unsubscribe
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import RunRecord, replaces
from runyard.actors.run_log import RunLog
from runyard.actors.stored_replay import PAGE_EVENTS
from runyard.actors.stream_items import Closing, Finished
from runyard.actors.subscription import Subscription

__all__ = ["MirrorActor", "MirrorEnded"]

logger = logging.getLogger("runyard.mirror")

RETRY_S = 0.05
"""A commit's chunks not readable yet (a CouchDB cluster's shard copies catch up):
read again after this long."""

READ_BYTES = 4_000_000
"""About how much trace one read asks for (bytes of event data), its event count
judged by the events read so far.  Each read fetches and decodes whole event
chunks (a commit's events, up to ~1 MB) from the first one it needs; asked for
only :data:`PAGE_EVENTS` small events at a time, catching up with a fast run
read and decoded the same chunk dozens of times (30,000 events of ``chatty``:
30 reads, 2 s before a subscriber saw its first event)."""

EVENT_OVERHEAD = 40
"""Bytes of an event's stored entry besides its data and type (seq, ts, JSON)."""


@dataclass(frozen=True, slots=True)
class MirrorEnded:
    """To the registry: the mirror of ``run_id`` has stopped (one-way)."""

    run_id: str
    mirror: Any


class MirrorActor(AsyncioActor):
    def __init__(
        self,
        *,
        run_id: str,
        cluster: pykka.ActorRef[Any],
        registry: pykka.ActorRef[Any],
        poll_s: float = 2.0,
        idle_s: float = 10.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self.run_id = run_id
        self._cluster = cluster
        self._registry = registry
        self._poll_s = poll_s
        self._idle_s = idle_s
        self._header: RunRecord | None = None
        self._target: RunWrite | None = None
        self._log: RunLog | None = None
        self._wake: asyncio.Event | None = None
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._ended = False
        self._read_bytes = 0
        self._read_events = 0

    def on_start(self) -> None:
        loop = self.actor_loop
        assert loop is not None
        self._log = RunLog(self.run_id, loop, durable=True)
        self._wake = asyncio.Event()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._follow())
        self._arm_idle()

    def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._idle is not None:
            self._idle.cancel()
        if self._log is not None and not self._ended:
            self._log.close_all(Closing(self._log.committed, "the run's mirror stopped"))
        self._registry.tell(MirrorEnded(self.run_id, self.actor_ref))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunDocChanged):
            self._offer(message.write)
            return None
        if isinstance(message, Subscribe):
            return self._subscribe(message)
        if isinstance(message, Unsubscribe):
            assert self._log is not None
            self._log.unsubscribe(message.subscription)
            self._arm_idle()
            return None
        return super().on_receive(message)

    # -- following the owner's commits ---------------------------------------

    def _offer(self, write: RunWrite) -> None:
        """A newer version of the run doc: catch up to it."""
        target = self._target
        if target is None or replaces(write.version, target.version):
            self._target = write
        assert self._wake is not None
        self._wake.set()

    async def _follow(self) -> None:
        assert self._wake is not None
        assert self._log is not None
        assert self._ready is not None
        try:
            first = await ask(self._cluster, ReadHeader(self.run_id))
            if first is not None:
                self._offer(first)
            while True:
                await self._catch_up()
                if self._ended:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()
                if not self._wake.is_set():
                    polled = await ask(self._cluster, ReadHeader(self.run_id))
                    if polled is None:
                        self._end_missing()
                        return
                    self._offer(polled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("the mirror of run %s stopped: %s", self.run_id, exc)
            if not self._ready.done():
                self._ready.set_exception(exc)
            tell_stop(self.actor_ref)

    async def _catch_up(self) -> None:
        """Read and deliver every event up to the target's count, then its end."""
        log = self._log
        assert log is not None
        while (target := self._target) is not None and len(log) < target.event_count:
            page = await ask(
                self._cluster,
                ReadEvents(self.run_id, len(log), min(self._page(), target.event_count - len(log))),
            )
            before = len(log)
            for event in page:
                if event.seq == len(log) + 1:
                    log.append(event)
                    self._read_bytes += len(event.data_json) + len(event.type) + EVENT_OVERHEAD
            self._read_events += len(log) - before
            if len(log) == before:
                await asyncio.sleep(RETRY_S)  # not readable on every shard copy yet
                continue
            log.commit(len(log))
            self._admit(target)
        target = self._target
        if target is None:
            return
        self._admit(target)
        if target.header.finished and len(log) >= target.event_count:
            self._ended = True
            log.close_all(Finished(self._record()))
            tell_stop(self.actor_ref)

    def _admit(self, target: RunWrite) -> None:
        """Subscribers may join from the first page read on, not only once the mirror
        has caught up: behind a fast run that is not before the run ends.  What a
        subscriber joins with is replayed; every later page reaches it live."""
        assert self._ready is not None
        self._header = target.header
        if not self._ready.done():
            self._ready.set_result(None)

    def _page(self) -> int:
        """Events to ask for in one read: about :data:`READ_BYTES` of them, at least
        :data:`PAGE_EVENTS` (the first read, with no sizes seen yet)."""
        if not self._read_events:
            return PAGE_EVENTS
        return max(PAGE_EVENTS, READ_BYTES * self._read_events // self._read_bytes)

    def _end_missing(self) -> None:
        """The run doc is gone (deleted, or never was): nothing more will come."""
        assert self._log is not None
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_exception(RunNotFound(f"no run {self.run_id}"))
        self._log.close_all(Closing(self._log.committed, "the run was deleted"))
        self._ended = True
        tell_stop(self.actor_ref)

    def _record(self) -> RunRecord:
        assert self._header is not None
        assert self._log is not None
        return dataclasses.replace(self._header, events=tuple(self._log.committed_events()))

    # -- subscribers -----------------------------------------------------------

    async def _subscribe(self, msg: Subscribe) -> Subscription:
        assert self._ready is not None
        assert self._log is not None
        await self._ready
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        header = self._header
        assert header is not None
        after = max(0, msg.after_seq)
        sub = self._log.subscribe(after, msg.max_queue, header.status)
        if self._ended:
            self._log.unsubscribe(sub)
            sub.close(Finished(self._record()))
        return sub

    def _arm_idle(self) -> None:
        """Stop ``idle_s`` after the last subscriber left (a reconnect comes back sooner)."""
        assert self._log is not None
        if self._log.subscribers or self._idle is not None:
            return
        loop = self.actor_loop
        assert loop is not None

        def maybe_stop() -> None:
            self._idle = None
            if self._log is not None and not self._log.subscribers:
                tell_stop(self.actor_ref)

        self._idle = loop.call_later(self._idle_s, maybe_stop)
