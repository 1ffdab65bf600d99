"""``LoopThreadActor``: a pykka thread with a private event loop, that a failed tell cannot stop.

The persistence actor's store protocol is async (aiocouch), but its work
must stay off the server's event loop; so the actor owns a loop in its own
thread and runs each call to completion on it (between calls the loop is
idle and nothing else runs there).

pykka stops an actor for good when a one-way message (a tell) raises: an
ask gets the error back, a tell has nobody to give it to.  For the one
route to the store that is the wrong trade: a purge that fails while the
store is down would leave every later write and read failing with
``ActorDeadError`` until a restart.  Here a failed tell is logged and the
actor goes on; failures while starting or stopping still stop it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import pykka

from runyard.actors.errors import StoreUnavailable

__all__ = ["LoopThreadActor", "describe", "run_inline"]

logger = logging.getLogger("runyard.persistence")

T = TypeVar("T")


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end in one step, without a loop.

    Through the loop, each store call costs a task and two polls, and every
    poll gives up the GIL, which the server's busy event loop then holds: the
    commit the 202s wait for waits for it too.  ``RuntimeError`` if ``coro``
    suspends after all (its store is then not one whose calls never await).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    name = getattr(coro, "__qualname__", repr(coro))
    raise RuntimeError(f"{name} awaited something: it cannot run inline")


def describe(exc: BaseException) -> str:
    """``"Type: message"``, the form errors take in logs and in ``/readyz``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class LoopThreadActor(pykka.ThreadingActor):
    """Subclasses call :meth:`_start_loop` in ``on_start``, :meth:`_close_loop` in
    ``on_stop``, and run coroutines with :meth:`_run_on_loop`."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving = False

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

    def _close_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Joins resolver/executor threads a client library may have started.
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio.set_event_loop(None)

    def _run_on_loop(
        self, coro: Coroutine[Any, Any, T], timeout: float | None, *, inline: bool = False
    ) -> T:
        """Run ``coro`` to completion in this thread, within ``timeout`` seconds if given.

        ``inline``: ``coro`` never suspends (a store whose coroutines only wrap
        blocking calls, see :func:`run_inline`); it runs without the loop, and
        without a timeout (such calls cannot be interrupted anyway).
        """
        if self._loop is None:
            coro.close()
            raise RuntimeError("the actor's loop is closed")
        if inline:
            return run_inline(coro)
        if timeout is not None:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        return self._loop.run_until_complete(coro)

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Log a failed one-way message and go on, instead of stopping as pykka does.

        ``_serving`` is set by the subclass once started: a failure before that,
        or while stopping, takes pykka's path (log, unregister, stop).
        """
        if not self._serving or self.actor_stopped.is_set():
            super()._handle_failure(exception_type, exception_value, traceback)
            return
        if isinstance(exception_value, StoreUnavailable):
            logger.warning("a one-way store request failed, going on: %s", exception_value)
        else:
            logger.error(
                "a one-way message failed, going on",
                exc_info=(exception_type, exception_value, traceback),  # type: ignore[arg-type]
            )

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """pykka calls this after every failed tell; only a stopping actor cleans up."""
        if self.actor_stopped.is_set():
            self._on_fatal()

    def _on_fatal(self) -> None:
        """The actor is stopping after a failure: release what it holds."""
