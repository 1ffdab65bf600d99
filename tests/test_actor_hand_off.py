"""AsyncioActor: the hand-offs that keep a start's 202 to two trips around the loop.

* ``on_start`` of an actor started on its loop runs in the starter's step;
* a handler can take the asker's reply future and answer it later from a
  callback of its own (``take_reply``), without a task;
* a message from another thread reaches a parked actor in the loop callback
  that brings it, still in order.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest

from runyard.actors.asyncio_actor import AsyncioActor, ask
from tests.echo_actor import Boom, Echo, stop_all, stopped

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


class Later(AsyncioActor):
    """Takes the reply of ``("later", value)`` and answers it from a timer callback."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[pykka.Future[Any] | None] = []

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("later", value):
                reply = self.take_reply()
                self.taken.append(reply)
                if reply is not None:
                    asyncio.get_running_loop().call_later(0.01, reply.set, ("later", value))
                return "ignored: the taker answers"
            case ("take-then-raise",):
                self.take_reply()
                raise Boom("after taking the reply")
            case _:
                return ("echo", message)


async def test_on_start_runs_in_the_starters_step() -> None:
    ref = Echo.start()
    actor = ref._actor_weakref()
    assert actor is not None
    # No await since start(): on_start has run all the same, on this thread.
    assert actor.loop_thread == threading.get_ident()
    stop_all(ref)
    await stopped(ref)


async def test_a_taken_reply_is_answered_by_the_taker_not_by_the_handler() -> None:
    ref = Later.start()
    actor = ref._actor_weakref()
    assert actor is not None
    first = asyncio.ensure_future(ask(ref, ("later", 1)))
    second = asyncio.ensure_future(ask(ref, ("later", 2)))
    await asyncio.sleep(0)
    # Both taken, neither answered: the handler returned at once, the actor is free.
    assert len(actor.taken) == 2
    assert not first.done()
    assert not second.done()
    assert await ask(ref, "meanwhile") == ("echo", "meanwhile")
    assert await asyncio.gather(first, second) == [("later", 1), ("later", 2)]
    ref.tell(("later", 3))  # a tell: nobody to answer, take_reply says so
    await ask(ref, "after the tell")
    assert actor.taken[-1] is None
    stop_all(ref)
    await stopped(ref)


async def test_a_handler_that_took_the_reply_and_raised_fails_the_asker() -> None:
    ref = Later.start()
    with pytest.raises(Boom, match="after taking the reply"):
        await ask(ref, ("take-then-raise",), timeout=2)
    assert await ask(ref, "still alive") == ("echo", "still alive")
    stop_all(ref)
    await stopped(ref)


async def test_tells_from_another_thread_reach_a_parked_actor_in_order() -> None:
    ref = Echo.start()
    await ask(ref, "parked now")

    def send() -> None:
        for i in range(200):
            ref.tell(i)

    await asyncio.to_thread(send)
    seen = await ref.proxy().seen
    assert seen == ["parked now", *range(200)]
    stop_all(ref)
    await stopped(ref)
