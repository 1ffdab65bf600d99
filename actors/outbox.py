"""``Outbox``: a bounded queue from an actor to exactly one consumer, drained in batches.

The producer is an actor on the loop thread; it never blocks and never
waits for the consumer.  When the consumer falls ``max_queue`` items behind,
the producer closes the outbox with a final item saying so instead of
growing memory.  The consumer takes everything queued at once, so one wake-up
serves a whole burst: that is what makes fan-out to many readers cheap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self._loop = loop
        self._max_queue = max_queue
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    # -- producer side (an actor, on the loop thread) ----------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._max_queue

    def _put(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def _close_with(self, final: T) -> None:
        """Queue the terminal item; nothing is queued after it."""
        if self._closed:
            return
        self._closed = True
        self._put(final)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side -----------------------------------------------------

    async def next_batch(self, limit: int | None = None) -> list[T]:
        """What is queued now (at most ``limit`` items), waiting if nothing is.

        ``[]`` once closed and drained.  A consumer that writes each batch to a
        slow socket should pass a ``limit``: what it has taken is no longer
        counted against ``max_queue``, so taking everything at once would let
        a stalled reader pin a second queue's worth of data in flight.
        """
        while not self._items:
            if self._closed:
                return []
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if limit is None or len(self._items) <= limit:
            items = list(self._items)
            self._items.clear()
            return items
        popleft = self._items.popleft
        return [popleft() for _ in range(limit)]

    def get_batch(self, timeout: float | None = None) -> list[T]:
        """``next_batch`` for a consumer on another thread; ``TimeoutError`` after ``timeout``.

        The timeout runs on the loop, so a batch is either handed over or left
        queued: a timed-out call never takes items that nobody then receives.
        """
        future = asyncio.run_coroutine_threadsafe(self._next_batch_within(timeout), self._loop)
        return future.result(None if timeout is None else timeout + 5.0)

    async def _next_batch_within(self, timeout: float | None) -> list[T]:
        if timeout is None:
            return await self.next_batch()
        async with asyncio.timeout(timeout):
            return await self.next_batch()
