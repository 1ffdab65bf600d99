"""``Watchers``: who follows which runs' lifecycle (``WatchRuns``).

The registry owns one and tells it every lifecycle change (started,
stopping, finished, deleted); each change reaches the
:class:`~runyard.actors.feed.Feed` of every watcher who may read the run (its
owner, the members of its workspace: :mod:`runyard.actors.access`), and never
anyone else's.  A watcher that lags is cut off by its feed and forgotten
here.

Feeds are kept by what they follow, so a change is routed by two lookups
(its owner, its workspace) however many feeds are open: a plain watcher
follows its own runs and each of its workspaces; one that asked for a
single workspace follows only that.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from runyard.actors.feed import Feed
from runyard.actors.messages import Caller
from runyard.actors.records import RunSummary
from runyard.actors.stream_items import RunChange

__all__ = ["Watchers"]

Topic: TypeAlias = tuple[str, str]
"""``("user", user_id)``: runs that user owns; ``("workspace", id)``: runs shared with it."""


def _topics(owner: str, workspace: str | None) -> list[Topic]:
    topics = [("user", owner)]
    if workspace is not None:
        topics.append(("workspace", workspace))
    return topics


class Watchers:
    """Feeds by topic; lives on the registry's loop, so it needs no lock."""

    def __init__(self) -> None:
        self._by_topic: dict[Topic, dict[Feed, None]] = {}

    def watch(
        self,
        caller: Caller,
        workspace: str | None,
        loop: asyncio.AbstractEventLoop,
        max_queue: int,
    ) -> Feed:
        """A feed of the runs ``caller`` may read, or only ``workspace``'s (the
        registry checked the caller is a member)."""
        if workspace is not None:
            topics: tuple[Topic, ...] = (("workspace", workspace),)
        else:
            mine = [("workspace", w) for w in sorted(caller.workspaces)]
            topics = (("user", caller.user_id), *mine)
        feed = Feed(caller.user_id, loop, max_queue, topics=topics)
        for topic in topics:
            self._by_topic.setdefault(topic, {})[feed] = None
        return feed

    def unwatch(self, feed: Feed) -> None:
        for topic in feed.topics:
            self._forget(topic, feed)

    def watching(self, owner: str, workspace: str | None) -> bool:
        """Whether anyone follows a run of ``owner`` in ``workspace`` (else nothing
        needs publishing)."""
        # On every lifecycle change: two lookups, no list built.
        by_topic = self._by_topic
        return ("user", owner) in by_topic or (
            workspace is not None and ("workspace", workspace) in by_topic
        )

    def publish(self, kind: str, summary: RunSummary) -> None:
        """``kind`` is ``started``, ``stopping``, ``finished`` or ``deleted``; each
        feed gets a change once, even if it follows both the owner and the workspace."""
        targets: dict[Feed, None] = {}
        for topic in _topics(summary.owner, summary.workspace):
            targets.update(self._by_topic.get(topic, {}))
        if not targets:
            return
        change = RunChange(kind=kind, summary=summary)
        for feed in targets:
            if not feed.push(change):
                self.unwatch(feed)

    def _forget(self, topic: Topic, feed: Feed) -> None:
        feeds = self._by_topic.get(topic)
        if feeds is not None:
            feeds.pop(feed, None)
            if not feeds:
                del self._by_topic[topic]
