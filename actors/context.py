"""The agent contract: what an agent sees of its run.

An agent is ``async def run(input_dict: dict, ctx: RunContext) -> JSON``.  It
reports progress with ``ctx.emit(type, **data)``, what it spent with
``ctx.op(kind, name, **fields)`` (:mod:`runyard.actors.ops_log`), and is asked to stop through
``ctx.stopping`` / ``ctx.check_stop()``.  Everything else (numbering events,
fan-out, persistence, time limits) is the run actor's job.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from runyard.actors.loop_budget import SLICE_S, turn_spent
from runyard.actors.ops_log import OP_TYPE, check_op
from runyard.actors.records import JSON

if TYPE_CHECKING:
    from runyard.actors.messages import StartRun


class StopRequested(BaseException):
    """Raised by :meth:`RunContext.check_stop` once the run was asked to stop.

    A ``BaseException`` on purpose: agent code full of ``except Exception``
    cannot swallow it by accident.
    """


class Agent(Protocol):
    def __call__(self, input_dict: dict[str, JSON], ctx: RunContext) -> Awaitable[JSON]: ...


class AgentFactory(Protocol):
    """Makes the agent for a ``StartRun`` that carries its own code (run-code).

    The registry calls it on the loop for every such start: it must be quick
    and may raise :class:`~runyard.actors.errors.InvalidRequest` (a 4xx) to refuse the
    code before a run exists.  ``start``/``aclose`` bracket the runtime's life
    (pre-started workers, their clean-up).
    """

    def __call__(self, msg: StartRun) -> Agent: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


EmitSink = Callable[[str, dict[str, JSON]], int]

EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
"""Event types become SSE ``event:`` lines: no spaces or newlines that could forge a frame."""

RESERVED_TYPES = frozenset(
    {"run", "done", "error", "lagged", "closing", "stop_requested", "restart", OP_TYPE}
)
"""Types the run actor itself emits (and ``op``, which only ``ctx.op`` writes, checked);
an agent may not impersonate them."""


def check_event_type(type: object) -> None:
    """Refuse a type an agent may not emit (malformed, or the runtime's own)."""
    if not isinstance(type, str) or not EVENT_TYPE.fullmatch(type):
        msg = f"event type {type!r} must match {EVENT_TYPE.pattern}"
        raise ValueError(msg)
    if type in RESERVED_TYPES:
        msg = f"event type {type!r} is reserved for the runtime"
        raise ValueError(msg)


class RunContext:
    """Handed to the agent; lives as long as the run.

    ``emit`` is synchronous and cheap: the event is stamped, stored and fanned
    out before it returns, so an agent never awaits its own bookkeeping.
    """

    __slots__ = ("_emit", "_ready", "_stop_event", "attempt", "run_id", "user_id")

    def __init__(
        self,
        run_id: str,
        user_id: str,
        emit: EmitSink,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.user_id = user_id
        self.attempt = 0
        """0 on the first try; n on the n-th restart under a restart policy."""
        self._emit = emit
        self._ready = ready
        self._stop_event = asyncio.Event()

    def emit(self, type: str, /, **data: Any) -> int:
        """Record one event of ``type`` with ``data``; returns its ``seq``."""
        check_event_type(type)
        return self._emit(type, data)

    def op(self, kind: str, name: str, /, **fields: Any) -> int:
        """Record one operation the run spent something on: an ``op`` event
        ``{"kind", "name", **fields}``; returns its ``seq``.

        E.g. ``ctx.op("llm", "chat", model="m", tokens=120, cost=0.002,
        duration_s=1.3)`` or ``ctx.op("tool", "search", duration_s=0.2)``.
        ``duration_s`` (seconds), ``tokens`` and ``cost`` are summed per kind
        into the record's ``ops_log``; other fields stay in the trace only.
        ``ValueError`` for a malformed kind or name, or a total that is not a
        finite number >= 0.
        """
        return self._emit(OP_TYPE, check_op(kind, name, fields))

    async def ready(self) -> None:
        """Yield to the event loop, and wait while too many of this run's events are
        not yet stored (backpressure: see ``max_unstored_bytes``).

        An agent that emits in a loop calls this every so often; it then never
        holds the shared loop for long, and never outruns the store.
        """
        await asyncio.sleep(0)
        await self.room()

    async def pace(self) -> None:
        """Call after every emit of a loop: yields (as :meth:`ready`) once the agents
        have held this turn of the event loop for ``SLICE_S`` (2 ms, together:
        :mod:`runyard.actors.loop_budget`), and costs a clock read otherwise.

        ``emit`` is synchronous, so an agent that emits in a loop without
        awaiting holds the loop every run and request shares; ``pace`` bounds
        that hold by time, whatever one emit costs and however many agents emit.
        """
        if turn_spent() >= SLICE_S:
            await self.ready()

    async def room(self) -> None:
        """Only the backpressure wait of :meth:`ready`, without its yield: for a
        reader (the run-code relay) whose own awaits already yield, per frame."""
        if self._ready is not None:
            await self._ready()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested; finish up and return."""
        return self._stop_event.is_set()

    def check_stop(self) -> None:
        """Raise :class:`StopRequested` if a stop was requested."""
        if self._stop_event.is_set():
            raise StopRequested

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise :class:`StopRequested` as soon as a stop arrives."""
        if self._stop_event.is_set():
            raise StopRequested
        await self.room()
        try:
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        except TimeoutError:
            return
        raise StopRequested

    async def wait_stop(self) -> None:
        """Wait until a stop is requested."""
        await self._stop_event.wait()

    def _request_stop(self) -> None:
        self._stop_event.set()
