"""``RunLog``: one run's events, appended at once, delivered up to the high-water mark.

An agent's ``emit`` appends to the log immediately (its seq is final), but
subscribers only ever receive events the store has acknowledged: the
*high-water mark* (``committed``), as a Kafka consumer only reads committed
offsets.  So whatever crashes, every event any client received is stored
with the same seq, and a seq is never handed out twice.  Without a store the
mark follows every append (nothing to wait for).

The log also keeps the subscriber set, so that "replay then live" stays one
step: :meth:`subscribe` takes the replay slice up to the mark and joins the
set in the same call, and :meth:`commit` fans out exactly the events between
the old mark and the new one.
"""

from __future__ import annotations

import asyncio

from runyard.actors.records import Event, RunStatus
from runyard.actors.stream_items import Closing, Finished, Lagged
from runyard.actors.subscription import Subscription

__all__ = ["RunLog"]


class RunLog:
    def __init__(self, run_id: str, loop: asyncio.AbstractEventLoop, *, durable: bool) -> None:
        """``durable``: a store acknowledges appends; otherwise they count as committed."""
        self.run_id = run_id
        self._loop = loop
        self._durable = durable
        self.events: list[Event] = []
        self.committed = 0
        """The high-water mark: events ``1..committed`` are stored and may be delivered."""
        self.sent = 0
        """Events ``1..sent`` were handed to the store (committed or on their way)."""
        self._subs: dict[Subscription, None] = {}
        self._bytes = 0
        self._stored_bytes = 0
        self._room: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self.events)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def uncommitted(self) -> int:
        return len(self.events) - self.committed

    @property
    def unstored_bytes(self) -> int:
        """Event data (encoded) appended but not yet stored: what backpressure bounds."""
        return self._bytes - self._stored_bytes

    # -- writing -------------------------------------------------------------

    def seed(self, stored: tuple[Event, ...]) -> None:
        """Start from a trace the store already holds (a run resumed on this node)."""
        assert not self.events, "seed an empty log only"
        self.events = list(stored)
        self.committed = self.sent = len(stored)
        self._bytes = self._stored_bytes = sum(len(e.data_json) for e in stored)

    def append(self, event: Event) -> None:
        self.events.append(event)
        size = len(event.data_json)
        self._bytes += size
        if not self._durable:
            # Committed as it comes: the per-event fast path (no batch to build).
            self.committed = event.seq
            self._stored_bytes += size
            lagged = [sub for sub in self._subs if not sub.push(event)]
            for sub in lagged:
                del self._subs[sub]

    def take_unsent(self) -> tuple[Event, ...]:
        """The events not yet handed to the store; they count as sent from now on."""
        unsent = tuple(self.events[self.sent :])
        self.sent = len(self.events)
        return unsent

    def commit(self, upto: int) -> None:
        """The store holds events ``1..upto``: deliver what was waiting for that."""
        upto = min(upto, len(self.events))
        if upto <= self.committed:
            return
        fresh = self.events[self.committed : upto]
        self.committed = upto
        self._stored_bytes += sum(len(e.data_json) for e in fresh)
        lagged = [sub for sub in self._subs if not sub.push_committed(fresh)]
        for sub in lagged:
            self._subs.pop(sub, None)
        if self._room:
            unstored = self.unstored_bytes
            free = [(n, w) for n, w in self._room if unstored <= n]
            self._room = [(n, w) for n, w in self._room if unstored > n]
            for _, waiter in free:
                if not waiter.done():
                    waiter.set_result(None)

    def when_unstored_below(self, limit: int) -> asyncio.Future[None]:
        """A future that is done once at most ``limit`` bytes of events wait for the store."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self.unstored_bytes <= limit:
            waiter.set_result(None)
        else:
            self._room.append((limit, waiter))
        return waiter

    # -- reading -------------------------------------------------------------

    def committed_events(self) -> tuple[Event, ...]:
        return tuple(self.events[: self.committed])

    def subscribe(self, after_seq: int, max_queue: int, status: RunStatus) -> Subscription:
        """Replay ``(after_seq, committed]`` and follow live, in one step."""
        sub = Subscription(
            self.run_id,
            self._loop,
            after_seq=after_seq,
            max_queue=max_queue,
            replay=self.events[after_seq : self.committed],
            status=status,
            end_seq=self.committed,
        )
        self._subs[sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)

    def close_all(self, final: Finished | Lagged | Closing) -> None:
        for sub in self._subs:
            sub.close(final)
        self._subs.clear()
