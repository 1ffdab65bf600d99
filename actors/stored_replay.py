"""``StoredReplay``: a subscription to a run only the store holds, read in pages.

A finished run that left memory can hold 100,000 events.  Loading its whole
record for every reader would cost a whole trace per request: 300 stalled
readers of a 300k-event run would pin 300 copies.  A ``StoredReplay`` holds
the run's header and at most one page of events; the consumer's
``next_batch`` fetches the next page from the store when it has sent the
previous one, so a reader that stalls holds one page, whatever the trace.

It is a :class:`~runyard.actors.subscription.Subscription` to its consumer (the SSE
stream, ``async for``): events in order, then :class:`Finished` with the
run's header and its last event (the trace itself came through the replay).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from runyard.actors.records import Event, RunRecord
from runyard.actors.stream_items import Finished
from runyard.actors.subscription import Item, Subscription

__all__ = ["PAGE_EVENTS", "StoredReplay"]

PAGE_EVENTS = 1000
"""Events fetched per store read: big enough to amortise the round trip, small
enough that a stalled reader pins little."""

FetchPage = Callable[[int, int], Awaitable[list[Event]]]
"""``fetch(after_seq, limit)``: a page of the stored trace."""


class StoredReplay(Subscription):
    def __init__(
        self,
        header: RunRecord,
        event_count: int,
        loop: asyncio.AbstractEventLoop,
        fetch: FetchPage,
        *,
        after_seq: int = 0,
    ) -> None:
        super().__init__(
            header.run_id,
            loop,
            after_seq=after_seq,
            status=header.status,
            end_seq=event_count,
        )
        self._header = header
        self._fetch = fetch
        self._next = after_seq
        self._page: list[Event] = []
        self._last: Event | None = None
        self._done = False

    @property
    def header(self) -> RunRecord:
        """The run without its trace (``end_seq`` is its event count)."""
        return self._header

    async def next_batch(self, limit: int | None = None) -> list[Item]:
        if self._items or self._closed:  # a Closing from a shutdown, or the end
            return await super().next_batch(limit)
        if not self._page and self._next < self.end_seq:
            self._page = await self._fetch(self._next, PAGE_EVENTS)
            if not self._page:  # the store holds fewer events than its header says
                self._next = self.end_seq
        if self._page:
            take = len(self._page) if limit is None else min(limit, len(self._page))
            batch, self._page = self._page[:take], self._page[take:]
            self._next = batch[-1].seq
            self._last = batch[-1]
            self.last_seq = batch[-1].seq
            return list(batch)
        if not self._done:
            self._done = True
            self.close(Finished(await self._final()))
        return await super().next_batch(limit)

    async def _final(self) -> RunRecord:
        """The header with the run's last event: its ``done``, even for a cursor past it."""
        last = self._last
        if last is None and self.end_seq > 0:
            tail = await self._fetch(self.end_seq - 1, 1)
            last = tail[0] if tail else None
        return dataclasses.replace(self._header, events=() if last is None else (last,))
