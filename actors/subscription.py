"""``Subscription``: one reader's view of a run, replay first, then live.

The run actor fills it (on the loop thread); exactly one consumer drains it,
on the loop (``await next_batch()``) or from another thread
(``get_batch(timeout)``).  The live queue is bounded: a reader that falls
``max_queue`` items behind is cut off with :class:`~actors.messages.Lagged`
carrying the last seq it was given, so it can resume with ``after_seq`` and a
slow reader never makes the server's memory grow.

Consumers read whole batches: the run actor wakes a waiting consumer once per
burst, not once per event, which is what makes fan-out cheap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeAlias

from actors.messages import Closing, Finished, Lagged
from actors.records import Event, RunStatus

Item: TypeAlias = Event | Finished | Lagged | Closing
TERMINAL_ITEMS = (Finished, Lagged, Closing)


class Subscription:
    def __init__(
        self,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        after_seq: int = 0,
        max_queue: int = 10_000,
        replay: list[Event] | None = None,
        status: RunStatus = "running",
    ) -> None:
        self.run_id = run_id
        self.status_at_subscribe: RunStatus = status
        self.replay: list[Event] = replay or []
        """Events the run had when subscribing, ``seq > after_seq``, in order."""
        self.after_seq = after_seq
        self._loop = loop
        self._max_queue = max_queue
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._replay_taken = False
        self._buffer: deque[Item] = deque()  # what __anext__ took but has not yielded yet
        self.last_seq = self.replay[-1].seq if self.replay else after_seq
        """The seq of the last event handed to this subscription (replay or live)."""

    # -- producer side (the run actor, on the loop thread) -----------------

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, event: Event) -> bool:
        """Queue a live event; False when the subscriber lagged and was cut off."""
        if self._closed:
            return False
        if event.seq <= self.last_seq:
            return True  # a cursor past the end: skip what the reader already has
        if len(self._items) >= self._max_queue:
            self.close(Lagged(last_seq=self.last_seq))
            return False
        self._items.append(event)
        self.last_seq = event.seq
        self._wake()
        return True

    def close(self, final: Finished | Lagged | Closing) -> None:
        """Queue the terminal item; nothing is queued after it."""
        if self._closed:
            return
        self._closed = True
        self._items.append(final)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side -----------------------------------------------------

    def take_replay(self) -> list[Event]:
        """The replay slice, once; later calls return nothing."""
        if self._replay_taken:
            return []
        self._replay_taken = True
        replay, self.replay = self.replay, []
        return replay

    async def next_batch(self) -> list[Item]:
        """Everything queued now, waiting if nothing is; ``[]`` once fully drained."""
        while not self._items:
            if self._closed:
                return []
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        return items

    def get_batch(self, timeout: float | None = None) -> list[Item]:
        """``next_batch`` for a consumer on another thread; ``TimeoutError`` after ``timeout``.

        The timeout runs on the loop, so a batch is either handed over or left
        queued: a timed-out call never takes items that nobody then receives.
        """
        future = asyncio.run_coroutine_threadsafe(self._next_batch_within(timeout), self._loop)
        return future.result(None if timeout is None else timeout + 5.0)

    async def _next_batch_within(self, timeout: float | None) -> list[Item]:
        if timeout is None:
            return await self.next_batch()
        async with asyncio.timeout(timeout):
            return await self.next_batch()

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

    @property
    def pending(self) -> int:
        return len(self._items)
