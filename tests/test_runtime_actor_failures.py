"""AsyncioActor failures: what an exception, a stop or an exit does to an actor and its askers.

A failed tell goes to ``on_failure`` (which may resume); a failed ask goes
back to the asker; a stopped actor answers every pending ask with
``ActorDeadError``; ``SystemExit``/``KeyboardInterrupt`` stop only the actor
that raised it, never the loop or its neighbours.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pykka
import pytest

from runyard.actors.asyncio_actor import AsyncioActor, ask
from tests.echo_actor import Boom, Echo, stop_all, stopped

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


async def test_tell_failure_goes_to_on_failure_which_can_resume() -> None:
    ref = Echo.start(resume=True)
    ref.tell(("raise", "bad message"))
    assert await ask(ref, "still there?") == ("echo", "still there?")
    failures = await ref.proxy().failures
    assert len(failures) == 1
    assert isinstance(failures[0], Boom)
    assert str(failures[0]) == "bad message"
    stop_all(ref)
    await stopped(ref)


async def test_tell_failure_without_resume_stops_the_actor_and_answers_pending_asks() -> None:
    ref = Echo.start(resume=False)
    actor = ref._actor_weakref()
    assert actor is not None
    ref.tell(("raise", "fatal"))
    pending = ref.ask("queued behind the failure", block=False)
    with pytest.raises(pykka.ActorDeadError):
        await asyncio.wait_for(pending, 5)
    await stopped(ref)
    assert [type(f) for f in actor.failures] == [Boom]
    assert actor._actor_task is not None
    await asyncio.wait_for(actor.wait_stopped(), 5)
    with pytest.raises(pykka.ActorDeadError):
        await ask(ref, "after")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after")


async def test_ask_failure_goes_back_to_the_asker_and_the_actor_lives_on() -> None:
    ref = Echo.start()
    with pytest.raises(Boom, match="for the asker"):
        await ask(ref, ("raise", "for the asker"))

    def other_thread() -> None:
        with pytest.raises(Boom, match="for the thread"):
            ref.ask(("raise", "for the thread"), timeout=2)

    await asyncio.to_thread(other_thread)
    assert ref.is_alive()
    assert await ref.proxy().failures == []  # on_failure is for tells only
    assert await ask(ref, "ok") == ("echo", "ok")
    stop_all(ref)
    await stopped(ref)


async def test_stopped_actor_answers_pending_asks_with_actor_dead_error() -> None:
    ref = Echo.start()
    stop = ref.stop(block=False)
    behind = [ref.ask(i, block=False) for i in range(3)]
    for future in behind:
        with pytest.raises(pykka.ActorDeadError):
            await asyncio.wait_for(future, 5)
    assert await stop is True
    with pytest.raises(pykka.ActorDeadError):
        await ask(ref, "late")

    # A deferred reply still pending when its actor stops is answered too.
    ref2 = Echo.start()
    deferred = ref2.ask(("later", 1), block=False)
    assert await ask(ref2, "handled meanwhile") == ("echo", "handled meanwhile")
    ref2.stop(block=False)
    with pytest.raises(pykka.ActorDeadError):
        await asyncio.wait_for(deferred, 5)


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
async def test_system_exit_in_one_actor_stops_only_that_actor(kind: type[BaseException]) -> None:
    victim, bystander, asker_victim = Echo.start(), Echo.start(), Echo.start()
    victim.tell(("exit", kind))
    await stopped(victim)
    assert bystander.is_alive()
    assert await ask(bystander, "alive?") == ("echo", "alive?")

    # Through an ask: the asker gets ActorDeadError, not the exit itself.
    with pytest.raises(pykka.ActorDeadError, match="exited"):
        await ask(asker_victim, ("exit", kind))
    assert not asker_victim.is_alive()
    assert await ask(bystander, "still alive?") == ("echo", "still alive?")

    # From another thread as well.
    third = Echo.start()

    def other_thread() -> None:
        with pytest.raises(pykka.ActorDeadError):
            third.ask(("exit", kind), timeout=2)
        assert bystander.ask("from the thread", timeout=2) == ("echo", "from the thread")

    await asyncio.to_thread(other_thread)
    stop_all(bystander)
    await stopped(bystander)


async def test_system_exit_in_a_deferred_reply_stops_only_that_actor() -> None:
    victim, bystander = Echo.start(), Echo.start()
    with pytest.raises(pykka.ActorDeadError, match="exited"):
        await ask(victim, ("later-exit",), timeout=5)
    await stopped(victim)
    actor = victim._actor_weakref()
    if actor is not None and actor._actor_task is not None:
        await asyncio.wait_for(actor.wait_stopped(), 5)
    assert await ask(bystander, "alive?") == ("echo", "alive?")

    # As a tell: no asker, still only this actor stops, and its task ends.
    victim2 = Echo.start()
    actor2 = victim2._actor_weakref()
    assert actor2 is not None
    victim2.tell(("later-exit",))
    await stopped(victim2)
    await asyncio.wait_for(actor2.wait_stopped(), 5)
    assert await ask(bystander, "alive?") == ("echo", "alive?")
    stop_all(bystander)
    await stopped(bystander)


async def test_failed_deferred_tell_ends_the_actor_task() -> None:
    class Failing(AsyncioActor):
        def on_receive(self, message: Any) -> Any:
            async def fail() -> None:
                await asyncio.sleep(0)
                raise Boom("deferred")

            return fail()

    ref = Failing.start()
    actor = ref._actor_weakref()
    assert actor is not None
    ref.tell("go")
    await stopped(ref)
    # The message loop must notice a stop decided outside it, not wait forever.
    await asyncio.wait_for(actor.wait_stopped(), 5)
