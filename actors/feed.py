"""``Feed``: one watcher's stream of lifecycle changes of the runs it may read.

A dashboard's run list updates from this instead of polling.  It is bounded
like a subscription: a watcher that stops reading is cut off with
:class:`~runyard.actors.messages.Lagged` (``last_seq`` 0: changes carry no seq) and
simply lists its runs again when it comes back.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from runyard.actors.outbox import Outbox
from runyard.actors.stream_items import Closing, Lagged, RunChange

FeedItem: TypeAlias = RunChange | Lagged | Closing


class Feed(Outbox[FeedItem]):
    def __init__(
        self,
        user_id: str,
        loop: asyncio.AbstractEventLoop,
        max_queue: int,
        *,
        topics: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``topics``: what it follows, for :class:`~runyard.actors.watchers.Watchers`
        (``("user", id)``, ``("workspace", id)``)."""
        super().__init__(loop, max_queue)
        self.user_id = user_id
        self.topics = topics

    def push(self, change: RunChange) -> bool:
        """Queue a change; False when the watcher lagged and was cut off."""
        if self._closed:
            return False
        if self.full():
            self._close_with(Lagged(last_seq=0))
            return False
        self._put(change)
        return True

    def close(self, final: Lagged | Closing) -> None:
        self._close_with(final)
