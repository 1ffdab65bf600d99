"""``Subscription``: one reader's view of a run, replay first, then live.

The run actor fills it (on the loop thread); exactly one consumer drains it,
on the loop (``await next_batch()``) or from another thread
(``get_batch(timeout)``).  The live queue is bounded: a reader that falls
``max_queue`` items behind is cut off with :class:`~runyard.actors.messages.Lagged`
carrying the last seq it was given, so it can resume with ``after_seq`` and a
slow reader never makes the server's memory grow.

The queue mechanics (bounded, batch-draining) are :class:`~runyard.actors.outbox.Outbox`'s.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeAlias

from runyard.actors.outbox import Outbox
from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.actors.stream_items import Closing, Finished, Lagged

Item: TypeAlias = Event | Finished | Lagged | Closing
TERMINAL_ITEMS = (Finished, Lagged, Closing)


class Subscription(Outbox[Item]):
    def __init__(
        self,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        after_seq: int = 0,
        max_queue: int = 10_000,
        replay: list[Event] | None = None,
        status: RunStatus = "running",
        end_seq: int | None = None,
    ) -> None:
        super().__init__(loop, max_queue)
        self.run_id = run_id
        self.status_at_subscribe: RunStatus = status
        self.replay: list[Event] = replay or []
        """Events the run had when subscribing, ``seq > after_seq``, in order."""
        self.after_seq = after_seq
        self.end_seq = (
            end_seq
            if end_seq is not None
            else max(after_seq, self.replay[-1].seq if self.replay else 0)
        )
        """The run's last stored seq when subscribing (a cursor may lie past it)."""
        self._replay_taken = False
        self._buffer: deque[Item] = deque()  # what __anext__ took but has not yielded yet
        self.last_seq = self.replay[-1].seq if self.replay else after_seq
        """The seq of the last event handed to this subscription (replay or live)."""

    # -- producer side (the run actor, on the loop thread) -----------------

    @classmethod
    def of_finished(
        cls,
        record: RunRecord,
        loop: asyncio.AbstractEventLoop,
        after_seq: int,
        max_queue: int = 10_000,
    ) -> Subscription:
        """A finished run's whole answer: its events after ``after_seq``, then ``Finished``."""
        sub = cls(
            record.run_id,
            loop,
            after_seq=after_seq,
            max_queue=max_queue,
            replay=list(record.events[after_seq:]),
            status=record.status,
            end_seq=len(record.events),
        )
        sub.close(Finished(record))
        return sub

    def push(self, event: Event) -> bool:
        """Queue a live event; False when the subscriber lagged and was cut off."""
        if self._closed:
            return False
        if event.seq <= self.last_seq:
            return True  # a cursor past the end: skip what the reader already has
        if self.full():
            self.close(Lagged(last_seq=self.last_seq))
            return False
        self._put(event)
        self.last_seq = event.seq
        return True

    def push_committed(self, events: list[Event]) -> bool:
        """Queue the events one commit made visible; False when the subscriber lagged.

        The bound is checked before the batch, not per event: one commit can
        release thousands of events at once (an agent that emits faster than the
        store commits), and that is the producer's burst, not a slow
        reader.  A reader still ``max_queue`` items behind when the next commit
        lands is cut off.  The queue holds references to events the trace holds
        anyway, so a burst costs no copies.
        """
        if self._closed:
            return False
        fresh = (
            events
            if events and events[0].seq > self.last_seq
            else [e for e in events if e.seq > self.last_seq]
        )
        if not fresh:
            return True
        if self.full():
            self.close(Lagged(last_seq=self.last_seq))
            return False
        self._items.extend(fresh)
        self._wake()
        self.last_seq = fresh[-1].seq
        return True

    def close(self, final: Finished | Lagged | Closing) -> None:
        """Queue the terminal item; nothing is queued after it."""
        self._close_with(final)

    # -- consumer side -----------------------------------------------------

    def take_replay(self) -> list[Event]:
        """The replay slice, once; later calls return nothing."""
        if self._replay_taken:
            return []
        self._replay_taken = True
        replay, self.replay = self.replay, []
        return replay

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        """Replay, then live items, ending after the terminal one."""
        if not self._replay_taken:
            self._buffer.extend(self.take_replay())
        if not self._buffer:
            self._buffer.extend(await self.next_batch())
            if not self._buffer:
                raise StopAsyncIteration
        return self._buffer.popleft()
