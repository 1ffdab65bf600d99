"""``StoreLink``: the runtime's one route to the store.

Every message for the store goes through this actor, which lives on the event
loop next to the registry and the run actors, and hands it on to the
persistence actor (a thread of its own; see :mod:`runyard.actors.persistence_protocol`).

* **Writes are group-committed, without a timer.**  ``SaveRuns`` from any
  writer (each run actor writes its own run: header, new events, terminal
  header) goes to the store as soon as no commit is in flight: after one loop
  turn, so the writes of one step travel together.  While a commit is in
  flight, new writes wait and go as one ``SaveRuns`` once it is acknowledged:
  one cross-thread hop and one transaction per commit, and as many writes
  per commit as arrived during the last one.  An idle link costs a write only
  its commit; a busy one batches as much as the store's speed asks for (a
  fixed window made every write wait, even alone: 50 ms on CouchDB, most of
  an event's delivery latency).  ``write_window_s`` only bounds the wait
  behind a commit that is not acknowledged in time (a slow or failing store):
  the waiting writes are then sent anyway and the persistence actor, which
  coalesces what queues up behind its write in flight, takes them on.
  Writes of one run waiting together are joined by
  :meth:`RunWrite.then <runyard.actors.persistence_protocol.RunWrite.then>`, so a run
  that ends while its last write waits is written once, as its final record.
  This is the batching layer; the persistence actor writes what it is given
  (merging only what queued up while a write was in flight).
* **Writes are acknowledged.**  A writer that passes ``ack_to`` gets
  ``RunsPersisted`` once the store holds its version or a newer one, and
  meanwhile for every older version of its run the store took: a run that
  writes again before each ack still sees its commits as they land.
* **Deletes are ordered after writes.**  ``DeleteStored`` drops a version
  still waiting here, so a deleted run can never be written back.
* Reads and maintenance (``LoadRun``, ``QueryRuns``, ``PurgeStored``,
  ``RecoverInterrupted``, ``StoreStatus``) are forwarded with the asker's
  reply future, so they cost no second round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pykka

from runyard.actors.asyncio_actor import RESUME, AsyncioActor, Forward, ask
from runyard.actors.persistence_protocol import (
    DeleteStored,
    RunsPersisted,
    RunWrite,
    Saved,
    SaveRuns,
    StoreHealth,
    StoreStatus,
)

__all__ = ["StoreLink"]

logger = logging.getLogger("runyard.store_link")


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The version a writer waits to see stored: this many events, finished or not."""

    ref: pykka.ActorRef[Any]
    event_count: int
    finished: bool

    def covered_by(self, saved: Saved) -> bool:
        if saved.finished:
            return True
        return not self.finished and saved.event_count >= self.event_count


class StoreLink(AsyncioActor):
    """Batches, acknowledges and orders everything bound for the persistence actor."""

    def __init__(
        self,
        persistence: pykka.ActorRef[Any],
        *,
        write_window_s: float,
        commit_gap_s: float = 0.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``write_window_s``: the longest writes wait behind an unacknowledged commit;
        ``commit_gap_s``: the shortest time between two commits' starts
        (:attr:`RuntimeConfig.commit_gap_s <runyard.actors.config.RuntimeConfig.commit_gap_s>`)."""
        super().__init__(loop=loop)
        self._persistence = persistence
        self._window_s = write_window_s
        self._gap_s = commit_gap_s
        self._last_send = -float("inf")
        self._waiting: dict[str, RunWrite] = {}
        self._in_flight: dict[str, _Wanted] = {}
        """The versions of the commit in flight, by run, until the store took each."""
        self._send_soon: asyncio.Handle | asyncio.TimerHandle | None = None
        self._overdue: asyncio.TimerHandle | None = None
        self._wanted: defaultdict[str, dict[str, _Wanted]] = defaultdict(dict)

    def on_receive(self, message: Any) -> Any:
        match message:
            case SaveRuns(writes=writes, ack_to=ack_to):
                self._write(writes, ack_to)
                return None
            case RunsPersisted(saved=saved):
                self._acknowledge(saved)
                self._landed(saved)
                return None
            case DeleteStored(run_id=run_id):
                self._waiting.pop(run_id, None)
                self._wanted.pop(run_id, None)
                # Its write, if in flight, is dropped from the store's pending writes.
                self._landed_run(run_id)
                return Forward(self._persistence, message)
            case StoreStatus():
                return self._health()
            case _ if not self._is_pykka_message(message):
                return Forward(self._persistence, message)
        return super().on_receive(message)

    def on_failure(self, *exc_info: Any) -> str:  # type: ignore[override]
        # The one route to the store must outlive a bad message: log it and go on.
        logger.error("store link: a message failed; going on", exc_info=exc_info)
        return RESUME

    def on_stop(self) -> None:
        self._send()  # nothing bound for the store stays behind
        for handle in (self._send_soon, self._overdue):
            if handle is not None:
                handle.cancel()

    # -- writes --------------------------------------------------------------

    def _write(self, writes: tuple[RunWrite, ...], ack_to: pykka.ActorRef[Any] | None) -> None:
        for write in writes:
            waiting = self._waiting.get(write.run_id)
            self._waiting[write.run_id] = write if waiting is None else waiting.then(write)
            if ack_to is not None:
                self._wanted[write.run_id][ack_to.actor_urn] = _Wanted(
                    ack_to, write.event_count, write.header.finished
                )
        if not self._in_flight:
            self._send_next_turn()

    def _send_next_turn(self) -> None:
        """Send what waits one loop turn from now (the writes of this step go
        together), or once ``commit_gap_s`` has passed since the last commit began."""
        if self._send_soon is None and self._waiting:
            loop = self.actor_loop
            assert loop is not None
            delay = self._last_send + self._gap_s - loop.time()
            self._send_soon = (
                loop.call_later(delay, self._send_due)
                if delay > 0
                else loop.call_soon(self._send_due)
            )

    def _send_due(self) -> None:
        self._send_soon = None
        if not self._in_flight:
            self._send()

    def _send(self) -> None:
        if not self._waiting:
            return
        writes = tuple(self._waiting.values())
        self._waiting.clear()
        if not self._persistence.is_alive():
            logger.error("the persistence actor is gone; %d write(s) lost", len(writes))
            return
        self._persistence.tell(SaveRuns(writes, ack_to=self.actor_ref))
        assert self.actor_loop is not None
        self._last_send = self.actor_loop.time()
        # The next batch waits for these versions' acks, and for the window at most.
        self._in_flight = {
            w.run_id: _Wanted(self.actor_ref, w.event_count, w.header.finished) for w in writes
        }
        if self._overdue is not None:
            self._overdue.cancel()
        assert self.actor_loop is not None
        self._overdue = self.actor_loop.call_later(self._window_s, self._commit_overdue)

    def _commit_overdue(self) -> None:
        """The commit in flight took longer than the window: stop waiting for it.

        Its writes stay with the persistence actor (pending, retried, readable);
        what waits here goes now and queues up behind them there.
        """
        self._overdue = None
        self._in_flight = {}
        self._send_next_turn()

    def _landed(self, saved: tuple[Saved, ...]) -> None:
        for version in saved:
            want = self._in_flight.get(version.run_id)
            if want is not None and want.covered_by(version):
                self._landed_run(version.run_id)

    def _landed_run(self, run_id: str) -> None:
        if self._in_flight.pop(run_id, None) is None or self._in_flight:
            return
        # The commit in flight is done: what arrived meanwhile goes as the next one.
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        self._send_next_turn()

    def _acknowledge(self, saved: tuple[Saved, ...]) -> None:
        by_ref: dict[str, tuple[pykka.ActorRef[Any], list[Saved]]] = {}
        for version in saved:
            wanted = self._wanted.get(version.run_id)
            if not wanted:
                continue
            for urn, want in list(wanted.items()):
                # Told even when older than the version now waited for: a run that
                # writes again before each ack would otherwise hear of no commit at all.
                by_ref.setdefault(urn, (want.ref, []))[1].append(version)
                if want.covered_by(version):
                    del wanted[urn]
            if not wanted:
                del self._wanted[version.run_id]
        for ref, versions in by_ref.values():
            # A run actor may have ended before an earlier write of it was acknowledged.
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(RunsPersisted(saved=tuple(versions)))

    # -- reads ---------------------------------------------------------------

    async def _health(self) -> StoreHealth:
        health: StoreHealth = await ask(self._persistence, StoreStatus())
        if not self._waiting:
            return health
        return StoreHealth(
            up=health.up,
            backlog=health.backlog + len(self._waiting),
            last_error=health.last_error,
        )

    @staticmethod
    def _is_pykka_message(message: Any) -> bool:
        # pykka's own control messages (stop, proxy calls) live in pykka.messages.
        return type(message).__module__.startswith("pykka")
