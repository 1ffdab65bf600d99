"""``Listing``: one ``ListRuns`` request, answered from memory and the store.

A user's runs live in three places (live, cached finished, stored), and a
page must be the true newest slice of all three without skipping or
repeating a run while runs start and finish.  The runs a user may read are
its own plus those shared with its workspaces (:mod:`runyard.actors.access`):
the store is asked once per such scope (the owner, each workspace), each
query on its own index, and the pages are merged here.  The order is
(``started_at``, ``run_id``) descending, which never changes for a run, and
the cursor is that key (:mod:`runyard.actors.cursor`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from runyard.actors.access import check_member
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
        if msg.workspace is not None:
            check_member(msg.caller, msg.workspace)
        self.msg = msg
        self.before = decode_cursor(msg.cursor) if msg.cursor else None

    def matches(self, summary: RunSummary) -> bool:
        msg = self.msg
        return (
            (msg.status is None or summary.status == msg.status)
            and (msg.agent is None or summary.agent == msg.agent)
            and (msg.workspace is None or summary.workspace == msg.workspace)
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
        """The page from ``in_memory`` (the runs memory holds that the caller may
        read, freshest version) and the store, which supplies the rest."""
        found: dict[str, RunSummary] = {}
        for owner, workspace in self._scopes():
            for row in await self._from_store(owner, workspace, in_memory, ask_store):
                found[row.run_id] = (
                    row  # one run can be in two scopes: its owner's and its workspace's
                )
        return self.page([*(s for s in in_memory.values() if self.matches(s)), *found.values()])

    def _scopes(self) -> list[tuple[str | None, str | None]]:
        """``(owner, workspace)`` of each store query: one filled, the other None."""
        msg = self.msg
        if msg.workspace is not None:
            return [(None, msg.workspace)]
        return [(msg.caller.user_id, None), *((None, w) for w in sorted(msg.caller.workspaces))]

    async def _from_store(
        self,
        owner: str | None,
        workspace: str | None,
        in_memory: dict[str, RunSummary],
        ask_store: Callable[[QueryRuns], Awaitable[Any]],
    ) -> list[RunSummary]:
        """The scope's newest limit+1 stored runs that memory does not hold: with
        those of every scope, the merged page is the true newest slice."""
        # Keep paging the store until it gave limit+1 runs memory does not hold
        # (or ran out).
        msg = self.msg
        wanted = msg.limit + 1
        found: list[RunSummary] = []
        cursor = self.before
        while True:
            rows: list[RunSummary] = await ask_store(
                QueryRuns(
                    owner=owner,
                    workspace=workspace,
                    status=msg.status,
                    agent=msg.agent,
                    limit=wanted,
                    before=cursor,
                )
            )
            found.extend(r for r in rows if r.run_id not in in_memory)
            if len(rows) < wanted or len(found) >= wanted:
                return found
            cursor = page_key(rows[-1])
