"""``Watchers``: who follows which user's run lifecycle (``WatchRuns``).

The registry owns one and tells it every lifecycle change (started,
stopping, finished, deleted); each change reaches the
:class:`~runyard.actors.feed.Feed` of every watcher of the run's owner, and never
anyone else's.  A watcher that lags is cut off by its feed and forgotten
here.
"""

from __future__ import annotations

import asyncio

from runyard.actors.feed import Feed
from runyard.actors.records import RunSummary
from runyard.actors.stream_items import RunChange

__all__ = ["Watchers"]


class Watchers:
    """Feeds by user id; lives on the registry's loop, so it needs no lock."""

    def __init__(self) -> None:
        self._by_user: dict[str, dict[Feed, None]] = {}

    def watch(self, user_id: str, loop: asyncio.AbstractEventLoop, max_queue: int) -> Feed:
        feed = Feed(user_id, loop, max_queue)
        self._by_user.setdefault(user_id, {})[feed] = None
        return feed

    def unwatch(self, feed: Feed) -> None:
        feeds = self._by_user.get(feed.user_id)
        if feeds is not None:
            feeds.pop(feed, None)
            if not feeds:
                del self._by_user[feed.user_id]

    def watching(self, user_id: str) -> bool:
        """Whether anyone follows ``user_id``'s runs (else nothing needs publishing)."""
        return user_id in self._by_user

    def publish(self, user_id: str, kind: str, summary: RunSummary) -> None:
        """``kind`` is ``started``, ``stopping``, ``finished`` or ``deleted``."""
        feeds = self._by_user.get(user_id)
        if not feeds:
            return
        change = RunChange(kind=kind, summary=summary)
        for feed in [f for f in feeds if not f.push(change)]:
            del feeds[feed]
        if not feeds:
            del self._by_user[user_id]
