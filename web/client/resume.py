"""One ``stream()`` call's position and pace: what to do with each SSE frame.

The sync and async clients only move bytes; this decides, frame by frame,
whether an event goes to the caller, is a duplicate to drop, or means
"reconnect" (``lagged``, ``closing``), and how long to wait before the next
connection.  Resuming sends ``Last-Event-ID: <last seq received>``, so the
server replays exactly the events after it (docs/api.md, "Resume"): the
caller sees seqs ``after + 1, after + 2, ...`` with no gap and no duplicate,
however often the connection drops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from httpx_sse import ServerSentEvent

from runyard.web.client.connection import RetryPolicy
from runyard.web.client.errors import ConnectionFailed
from runyard.web.models import EventModel

NOTICES = frozenset({"lagged", "closing"})
"""Frames that end a connection early; the events after them come on the next one."""


@dataclass(frozen=True)
class Reconnect:
    """End this connection and open another after ``delay_s`` (a server's hint)."""

    reason: str
    delay_s: float


class StreamCursor:
    """The last seq the caller received, and whether ``done`` has been delivered.

    ``after`` is where the caller starts (``None``: from the first event).
    """

    def __init__(self, after: int | None) -> None:
        if after is not None and after < 0:
            msg = f"after must be a seq >= 0, got {after}"
            raise ValueError(msg)
        self.last_seq = after
        self.done = False

    def headers(self) -> dict[str, str]:
        """The resume header for the next connection (none at the very start)."""
        return {} if self.last_seq is None else {"Last-Event-ID": str(self.last_seq)}

    def accept(self, sse: ServerSentEvent) -> EventModel | Reconnect | None:
        """The event to hand over, a :class:`Reconnect`, or ``None`` (nothing to do).

        A ``done`` is handed over once even when its seq is at or below the
        cursor: a caller that resumed past the end still learns how the run
        ended.  Any other event at or below the cursor is a duplicate.
        """
        if sse.event in NOTICES:
            retry_s = (sse.retry or 0) / 1000
            return Reconnect(sse.event, retry_s)
        if sse.event == "run" or not sse.data:
            return None  # the opening frame, or httpx-sse's pseudo-event after a heartbeat
        event = EventModel.model_validate_json(sse.data)
        if event.type == "done":
            if self.done:
                return None
            self.done = True
            return event
        if self.last_seq is not None and event.seq <= self.last_seq:
            return None
        self.last_seq = event.seq
        return event


class Backoff:
    """Delays between connections; gives up after ``give_up_after_s`` without progress.

    Progress is a connection that reached the server's ``run`` frame, or an
    event: a long quiet run on a flaky path keeps being followed, a server
    that is gone ends the stream with :class:`ConnectionFailed`.
    """

    def __init__(self, policy: RetryPolicy, url: str) -> None:
        self._policy = policy
        self._url = url
        self._delay = policy.first_delay_s
        self._since = time.monotonic()
        self._hint: float | None = None
        self.last_problem = "no connection yet"

    def progress(self) -> None:
        self._delay = self._policy.first_delay_s
        self._since = time.monotonic()

    def failed(self, problem: str) -> None:
        self.last_problem = problem

    def server_asked(self, step: Reconnect) -> None:
        self.last_problem = f"the server sent '{step.reason}'"
        self._hint = step.delay_s

    def next_delay(self) -> float:
        """Seconds to wait before reconnecting; ``ConnectionFailed`` once past the deadline."""
        if time.monotonic() - self._since > self._policy.give_up_after_s:
            msg = (
                f"gave up following the stream from {self._url} after "
                f"{self._policy.give_up_after_s:g} s without progress: {self.last_problem}"
            )
            raise ConnectionFailed(msg)
        if self._hint is not None:
            delay, self._hint = min(self._hint, self._policy.max_delay_s), None
            return delay
        delay = self._delay
        self._delay = min(delay * 2, self._policy.max_delay_s)
        return delay
