"""``AsyncioFuture``: a pykka future that an event loop can await without blocking.

Pykka's own ``Future.__await__`` calls the blocking ``get()``, so awaiting a
pykka future on the event loop freezes the loop (docs/design.md, "Threads and
loops").  This future keeps both worlds:

* ``await future`` on any event loop parks a loop-native future and is woken
  by ``set()``, from whichever thread ``set()`` runs on;
* ``future.get(timeout=...)`` blocks a *plain* thread on a lazily created
  ``threading.Event`` (internal services on their own threads use this);
* ``get()`` on an event-loop thread while the value is not there yet raises
  :class:`BlockingGetOnLoop` at once instead of deadlocking the loop that
  would have to produce the value.

It sets no loop at creation: pykka creates futures through a static factory
that does not know which loop will await them, so waiters bring their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Generator
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import pykka

T = TypeVar("T")

OptExcInfo: TypeAlias = tuple[
    type[BaseException] | None, BaseException | None, TracebackType | None
]
"""What ``sys.exc_info()`` returns: the shape pykka's futures carry a failure in."""


class BlockingGetOnLoop(RuntimeError):
    """``get()`` was called on an event-loop thread before the value arrived."""


_UNSET: Any = object()


class AsyncioFuture(pykka.Future[T]):
    __slots__ = ("_exc_info", "_lock", "_thread_event", "_value", "_waiters")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._value: Any = _UNSET
        self._exc_info: OptExcInfo | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._thread_event: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<AsyncioFuture {'done' if self.done() else 'pending'}>"

    def done(self) -> bool:
        return self._value is not _UNSET or self._exc_info is not None

    # -- producing ---------------------------------------------------------

    def set(self, value: Any = None) -> None:
        self._resolve(value, None)

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        self._resolve(_UNSET, exc_info)

    def _resolve(self, value: Any, exc_info: OptExcInfo | None) -> None:
        with self._lock:
            if self.done() or self._get_hook is not None:
                msg = "AsyncioFuture already has a result"
                raise RuntimeError(msg)
            if exc_info is not None:
                self._exc_info = exc_info
            else:
                self._value = value
            waiters, self._waiters = self._waiters, []
            thread_event = self._thread_event
        if thread_event is not None:
            thread_event.set()
        for loop, waiter in waiters:
            _wake(loop, waiter)

    # -- consuming ---------------------------------------------------------

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if not self.done():
            if asyncio._get_running_loop() is not None:
                msg = (
                    "blocking get() on an event-loop thread would freeze the loop that has "
                    "to produce the value; use `await future` there instead"
                )
                raise BlockingGetOnLoop(msg)
            with self._lock:
                if self._thread_event is None:
                    self._thread_event = threading.Event()
                event = self._thread_event
            if not self.done() and not event.wait(timeout):
                raise pykka.Timeout(f"{timeout} seconds")
        return self._outcome()

    def _outcome(self) -> T:
        if self._exc_info is not None:
            _, exc_value, exc_tb = self._exc_info
            assert exc_value is not None
            raise exc_value.with_traceback(exc_tb)
        return self._value  # type: ignore[no-any-return]

    def __await__(self) -> Generator[Any, None, T]:
        if self._get_hook is not None:
            # A derived future (map/filter/join, ActorRef.stop) only knows how to
            # block; let a worker thread do that instead of the loop.
            loop = asyncio.get_running_loop()
            return (yield from loop.run_in_executor(None, self.get).__await__())
        if not self.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            with self._lock:
                pending = not self.done()
                if pending:
                    self._waiters.append((loop, waiter))
            if pending:
                yield from waiter.__await__()
        return self._outcome()

    __iter__ = __await__


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    if _on_loop_thread(loop):
        if not waiter.done():
            waiter.set_result(None)
        return
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_set_if_pending, waiter)


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    return asyncio._get_running_loop() is loop
