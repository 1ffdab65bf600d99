"""Waiting for a condition with a deadline: the one way tests wait on something unobservable.

A test that can await an event, a future or a subscription does that.  When
the condition has no such handle (a process gone, a row in the store, a
count in ``/ops/registry``), the test polls it here: the poll ends the
moment the condition holds, and a condition that never holds fails with a
message naming what was awaited instead of hanging until pytest-timeout.

``wait_until`` is for plain (thread) code, ``wait_until_async`` for code on
an event loop; both share the deadline and the failure message.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0


class _Deadline:
    """``timeout`` seconds from now; ``check()`` raises once it has passed."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.at = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise AssertionError(f"timed out after {self.timeout} s waiting for {self.what}")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str = "the condition",
    *,
    interval: float = 0.01,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Blocks the calling thread; never call it on an event loop (use
    :func:`wait_until_async`).  Raises ``AssertionError`` naming ``what``
    after ``timeout`` seconds.
    """
    deadline = _Deadline(timeout, what)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check()
        time.sleep(interval)  # polling with a deadline, not waiting for a guess


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str = "the condition",
    *,
    interval: float = 0.002,
) -> T:
    """:func:`wait_until` on the running loop; ``predicate`` may be sync or async.

    Yields to the loop between polls, so the actors and tasks the condition
    depends on keep running.
    """
    deadline = _Deadline(timeout, what)
    while True:
        value = predicate()
        result = await value if inspect.isawaitable(value) else value
        if result:
            return cast("T", result)
        deadline.check()
        await asyncio.sleep(interval)
