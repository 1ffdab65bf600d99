"""``BackoffTimer``: one pending retry at a time, each wait twice the last, up to a cap.

The persistence actor keeps failed writes and retries them from a timer
thread (which only sends the actor a message: the write itself happens in
the actor's thread), so a store outage costs one attempt per delay, not one
per incoming write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BackoffTimer"]


class BackoffTimer:
    """Delays in seconds: ``initial_s``, doubled after each :meth:`schedule`, at most ``max_s``."""

    def __init__(self, initial_s: float, max_s: float, *, name: str) -> None:
        self._initial_s = initial_s
        self._max_s = max(max_s, initial_s)
        self._name = name
        self.delay_s = initial_s
        """The wait before the next scheduled retry."""
        self._timer: threading.Timer | None = None

    @property
    def waiting(self) -> bool:
        """A retry is scheduled and has not fired yet (see :meth:`fired`)."""
        return self._timer is not None

    def schedule(self, fire: Callable[[], None]) -> None:
        """Call ``fire`` (in a timer thread) after :attr:`delay_s`; no-op while waiting."""
        if self._timer is not None:
            return
        timer = threading.Timer(self.delay_s, fire)
        self.delay_s = min(self.delay_s * 2, self._max_s)
        timer.name = self._name
        timer.daemon = True
        self._timer = timer
        timer.start()

    def fired(self) -> None:
        """The scheduled retry is being handled: the next failure schedules again."""
        self._timer = None

    def reset(self) -> None:
        """A success: the next failure waits ``initial_s`` again."""
        self.delay_s = self._initial_s

    def cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
