"""One time budget per turn of the event loop, shared by every agent that emits in a burst.

An in-process agent runs on the loop every run, stream and request of the
process shares, and ``ctx.emit`` is synchronous: an agent that emits in a
loop holds the loop until it awaits.  Giving each agent a slice of its own
is not enough: ten agents with 2 ms each make every turn 20 ms long, and a
request needs several turns.  So the budget is per *turn*: the first agent
to run in a turn starts the clock, and every agent that emits in that turn
(:meth:`runyard.actors.context.RunContext.pace`) yields once the agents together
have held it for :data:`SLICE_S`.  A turn's agents then cost about
``SLICE_S`` plus one event per further busy agent, whatever their number.

A turn is told from the next by a callback queued with ``call_soon`` when
the clock starts: asyncio runs it at the start of the next turn, where it
clears the clock for that turn's first agent.
"""

from __future__ import annotations

import asyncio
import time
from weakref import WeakKeyDictionary

__all__ = ["SLICE_S", "turn_spent"]

SLICE_S = 0.002
"""What the agents of one loop turn may hold the loop for, together (seconds)."""


class _TurnClock:
    __slots__ = ("_loop", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.started: float | None = None

    def spent(self) -> float:
        now = time.monotonic()
        if self.started is None:
            self.started = now
            self._loop.call_soon(self._next_turn)
            return 0.0
        return now - self.started

    def _next_turn(self) -> None:
        self.started = None


_clocks: WeakKeyDictionary[asyncio.AbstractEventLoop, _TurnClock] = WeakKeyDictionary()


def turn_spent() -> float:
    """Seconds the agents have held the running loop in its current turn (0 for the first).

    Call from a coroutine on the loop; the first call in a turn starts the turn's clock.
    """
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = _TurnClock(loop)
    return clock.spent()
