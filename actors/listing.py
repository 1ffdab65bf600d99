"""``Listing``: one ``ListRuns`` request, answered from memory and the store.

A user's runs live in three places (live, cached finished, stored), and a
page must be the true newest slice of all three without skipping or
repeating a run while runs start and finish.  The order is
(``started_at``, ``run_id``) descending, which never changes for a run, and
the cursor is that key (:mod:`runyard.actors.cursor`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from runyard.actors.cursor import PageKey, decode_cursor, encode_cursor
from runyard.actors.errors import InvalidRequest
from runyard.actors.messages import ListRuns, RunPage
from runyard.actors.persistence_protocol import QueryRuns
from runyard.actors.records import ALL_STATUSES, RunSummary

__all__ = ["MAX_PAGE", "Listing"]

MAX_PAGE = 1000


def page_key(summary: RunSummary) -> PageKey:
    return (summary.started_at, summary.run_id)


class Listing:
    """A validated ``ListRuns``; raises :class:`InvalidRequest` (400) on a bad one."""

    def __init__(self, msg: ListRuns) -> None:
        if not 1 <= msg.limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        if msg.status is not None and msg.status not in ALL_STATUSES:
            raise InvalidRequest(
                f"status must be one of {', '.join(sorted(ALL_STATUSES))}, not {msg.status!r}"
            )
        self.msg = msg
        self.before = decode_cursor(msg.cursor) if msg.cursor else None

    def matches(self, summary: RunSummary) -> bool:
        msg = self.msg
        return (
            (msg.status is None or summary.status == msg.status)
            and (msg.agent is None or summary.agent == msg.agent)
            and (self.before is None or page_key(summary) < self.before)
        )

    def page(self, candidates: Iterable[RunSummary]) -> RunPage:
        ordered = sorted(candidates, key=page_key, reverse=True)
        limit = self.msg.limit
        runs = ordered[:limit]
        more = len(ordered) > limit
        return RunPage(
            runs=tuple(runs), next_cursor=encode_cursor(page_key(runs[-1])) if more else None
        )

    async def with_store(
        self,
        in_memory: dict[str, RunSummary],
        ask_store: Callable[[QueryRuns], Awaitable[Any]],
    ) -> RunPage:
        """The page from ``in_memory`` (the caller's runs memory holds, freshest
        version) and the store, which supplies the rest."""
        # Keep paging the store until it gave limit+1 runs memory does not hold
        # (or ran out), so the merged page is the true newest slice.
        msg = self.msg
        wanted = msg.limit + 1
        found: list[RunSummary] = []
        cursor = self.before
        while True:
            rows: list[RunSummary] = await ask_store(
                QueryRuns(
                    owner=msg.caller.user_id,
                    status=msg.status,
                    agent=msg.agent,
                    limit=wanted,
                    before=cursor,
                )
            )
            found.extend(r for r in rows if r.run_id not in in_memory)
            if len(rows) < wanted or len(found) >= wanted:
                break
            cursor = page_key(rows[-1])
        return self.page([*(s for s in in_memory.values() if self.matches(s)), *found])
