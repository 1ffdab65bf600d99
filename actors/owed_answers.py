"""``OwedAnswers``: the replies a run actor owes until the store holds its run up to a seq.

A start is acknowledged once the run's header is stored, a stop once its
``stop_requested`` event is.  The run actor keeps the askers' reply futures
here (taken with :meth:`~runyard.actors.asyncio_actor.AsyncioActor.take_reply`) and
answers them in the very step that the store's acknowledgement raises its
high-water mark: no task per waiting asker, and no trip around the event
loop between the commit and the reply, which under load is what a start's
latency is made of (each trip waits behind everything else ready to run).
An answer the store does not confirm within the store timeout becomes
:class:`~runyard.actors.errors.StoreUnavailable` (a 503), never a wait for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from runyard.actors.errors import StoreUnavailable

__all__ = ["Owed", "OwedAnswers"]

logger = logging.getLogger("runyard.run")


@dataclass(slots=True, eq=False)
class Owed:
    """One answer: ``answer`` (a value, or an exception to raise) once ``seq`` is stored."""

    seq: int
    answer: Any
    reply: pykka.Future[Any] | None
    """None for a ``tell``: nobody to answer, but a timeout still counts."""
    start: bool = False
    """The start's acknowledgement: a timeout refuses the start (the run is stopped)."""
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def give(self) -> None:
        if self.reply is None:
            return
        # An asker answered already (its handler failed after handing the reply
        # on) keeps that answer: an AsyncioFuture refuses a second one.
        with contextlib.suppress(RuntimeError):
            if isinstance(self.answer, BaseException):
                self.reply.set_exception((type(self.answer), self.answer, None))
            else:
                self.reply.set(self.answer)

    def fail(self, exc: BaseException) -> None:
        if self.reply is not None:
            with contextlib.suppress(RuntimeError):  # answered already: see give
                self.reply.set_exception((type(exc), exc, None))


class OwedAnswers:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float,
        run_id: str,
        refuse_start: Callable[[], None],
    ) -> None:
        """An answer the store does not confirm within ``timeout_s`` seconds becomes
        :class:`StoreUnavailable` naming ``run_id``; for a start, ``refuse_start()``
        then runs too (the run actor stops its run)."""
        self._loop = loop
        self._timeout_s = timeout_s
        self._run_id = run_id
        self._refuse_start = refuse_start
        self._owed: list[Owed] = []

    def __len__(self) -> int:
        return len(self._owed)

    def add(self, owed: Owed) -> None:
        owed.timer = self._loop.call_later(self._timeout_s, self._expired, owed)
        self._owed.append(owed)

    def settle(self, committed: int) -> None:
        """The store holds events ``1..committed`` (and the header): answer what waited for it."""
        if not self._owed:
            return
        due = [o for o in self._owed if o.seq <= committed]
        if not due:
            return
        self._owed = [o for o in self._owed if o.seq > committed]
        for owed in due:
            if owed.timer is not None:
                owed.timer.cancel()
            owed.give()

    def fail_all(self, exc: BaseException) -> None:
        """Answer everything still owed with ``exc`` (the actor is going away)."""
        owed, self._owed = self._owed, []
        for o in owed:
            if o.timer is not None:
                o.timer.cancel()
            o.fail(exc)

    def _expired(self, owed: Owed) -> None:
        try:
            self._owed.remove(owed)
        except ValueError:
            return  # answered in the meantime
        exc = StoreUnavailable(
            f"the store did not confirm run {self._run_id} within {self._timeout_s:g} s"
        )
        if owed.reply is None:
            logger.warning("%s", exc)  # a tell: nobody else hears of it
        owed.fail(exc)
        if owed.start:
            self._refuse_start()
