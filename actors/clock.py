"""Where the runtime gets the time, so tests can move it.

Retention ("keep a finished run in memory for an hour") must be testable
without waiting an hour: the registry asks a ``Clock``, and tests hand it a
:class:`ManualClock` they advance by hand.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """POSIX seconds, UTC."""


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
