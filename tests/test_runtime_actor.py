"""AsyncioActor and AsyncioFuture: pykka's messaging on an asyncio loop.

Tells, asks and proxies from the loop and from other threads, the registry,
futures that are awaited (and refuse a blocking ``get`` on the loop),
``Forward`` and deferred replies.  Failures are in test_runtime_actor_failures.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest

from runyard.actors.asyncio_actor import ask
from runyard.actors.future import AsyncioFuture, BlockingGetOnLoop
from tests.echo_actor import Boom, Echo, stop_all, stopped

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


async def test_tell_and_ask_from_the_loop_thread() -> None:
    ref = Echo.start()
    ref.tell("one")
    ref.tell("two")
    # Both helpers: the module's ask() and pykka's own ask(block=False), awaited.
    assert await ask(ref, "three", timeout=2) == ("echo", "three")
    assert await ref.ask("four", block=False) == ("echo", "four")
    # Tells are handled in order, before the asks that followed them.
    seen = await ref.proxy().seen
    assert seen == ["one", "two", "three", "four"]
    # Handlers run on the loop's own thread.
    assert await ask(ref, ("thread",)) == threading.get_ident()
    stop_all(ref)
    await stopped(ref)


async def test_tell_and_ask_from_another_thread() -> None:
    ref = Echo.start()
    loop_thread = threading.get_ident()

    def other_thread() -> tuple[Any, Any, Any, int]:
        assert asyncio._get_running_loop() is None
        ref.tell("told from a thread")
        answer = ref.ask("asked from a thread", timeout=2)
        handler_thread = ref.ask(("thread",), timeout=2)
        future = ref.ask("as a future", block=False)
        return answer, future.get(timeout=2), ref.proxy().count().get(), handler_thread

    answer, from_future, count, handler_thread = await asyncio.to_thread(other_thread)
    assert answer == ("echo", "asked from a thread")
    assert from_future == ("echo", "as a future")
    assert count == 4  # the tell, the two asks and the future's message, in order
    assert handler_thread == loop_thread
    stop_all(ref)
    await stopped(ref)


async def test_ask_timeout_from_another_thread_raises_pykka_timeout() -> None:
    ref = Echo.start()

    def other_thread() -> None:
        with pytest.raises(pykka.Timeout):
            ref.ask(("later", 1), timeout=0.05)  # the reply waits for release()

    await asyncio.to_thread(other_thread)
    ref.proxy().release()
    stop_all(ref)
    await stopped(ref)


async def test_proxies_from_another_thread_and_on_the_loop() -> None:
    ref = Echo.start()
    proxy = ref.proxy()
    assert await proxy.add(2, 3) == 5
    # An async method through a proxy is a deferred reply: awaited, not a coroutine.
    assert await proxy.add_later(4, 5) == 9

    def other_thread() -> tuple[int, int, int]:
        p = ref.proxy()
        return p.add(1, 2).get(timeout=2), p.add_later(3, 4).get(timeout=2), p.count().get()

    assert await asyncio.to_thread(other_thread) == (3, 7, 0)
    stop_all(ref)
    await stopped(ref)


async def test_registry_finds_asyncio_actors_and_forgets_stopped_ones() -> None:
    a, b = Echo.start(), Echo.start()
    found = pykka.ActorRegistry.get_by_class(Echo)
    assert {r.actor_urn for r in found} >= {a.actor_urn, b.actor_urn}
    assert pykka.ActorRegistry.get_by_urn(a.actor_urn) == a
    assert await ask(a, "x") == ("echo", "x")
    await a.stop(block=False)
    assert not a.is_alive()
    assert a.actor_urn not in {r.actor_urn for r in pykka.ActorRegistry.get_by_class(Echo)}
    assert b.actor_urn in {r.actor_urn for r in pykka.ActorRegistry.get_by_class(Echo)}
    stop_all(b)
    await stopped(b)


async def test_actor_started_from_a_plain_thread_runs_on_the_given_loop() -> None:
    loop = asyncio.get_running_loop()
    ref = await asyncio.to_thread(lambda: Echo.start(loop=loop))
    assert await ask(ref, ("thread",)) == threading.get_ident()
    stop_all(ref)
    await stopped(ref)


async def test_awaiting_a_future_does_not_block_the_loop() -> None:
    ref = Echo.start()
    progress = 0

    async def other_task() -> None:
        nonlocal progress
        for _ in range(100):
            progress += 1
            await asyncio.sleep(0)
        ref.proxy().release()  # only now can the awaited reply be produced

    future = ref.ask(("later", "v"), block=False)
    assert isinstance(future, AsyncioFuture)
    side = asyncio.create_task(other_task())
    # If awaiting blocked the loop, other_task could never release the reply.
    assert await asyncio.wait_for(future, 5) == ("later", "v")
    assert progress == 100
    await side
    stop_all(ref)
    await stopped(ref)


async def test_blocking_get_on_the_loop_thread_raises_instead_of_deadlocking() -> None:
    ref = Echo.start()
    future = ref.ask(("later", 1), block=False)
    with pytest.raises(BlockingGetOnLoop, match="await"):
        future.get()
    with pytest.raises(BlockingGetOnLoop):
        future.get(timeout=1)
    with pytest.raises(BlockingGetOnLoop):
        ref.ask(("later", 2), timeout=1)  # pykka's blocking ask on the loop thread
    ref.proxy().release()
    assert await future == ("later", 1)
    assert future.get() == ("later", 1)  # a done future may be read anywhere
    stop_all(ref)
    await stopped(ref)


async def test_forward_hands_the_askers_reply_to_another_actor() -> None:
    front, back = Echo.start(), Echo.start()
    assert await ask(front, ("forward", back, "hello")) == ("echo", "hello")
    assert await back.proxy().seen == ["hello"]
    assert await front.proxy().seen == [("forward", back, "hello")]

    def other_thread() -> Any:
        return front.ask(("forward", back, "from a thread"), timeout=2)

    assert await asyncio.to_thread(other_thread) == ("echo", "from a thread")
    # A forwarded failure reaches the original asker.
    with pytest.raises(Boom, match="far away"):
        await ask(front, ("forward", back, ("raise", "far away")))
    # Forward to a dead actor answers ActorDeadError.
    await back.stop(block=False)
    with pytest.raises(pykka.ActorDeadError):
        await ask(front, ("forward", back, "nobody home"))
    stop_all(front)
    await stopped(front)


async def test_deferred_reply_does_not_hold_up_the_inbox() -> None:
    ref = Echo.start()
    slow = asyncio.ensure_future(ask(ref, ("later", "slow")))
    fast = await ask(ref, "fast")
    assert fast == ("echo", "fast")
    assert not slow.done()  # the deferred reply is still waiting for its gate
    ref.proxy().release()
    assert await asyncio.wait_for(slow, 5) == ("later", "slow")
    stop_all(ref)
    await stopped(ref)


async def test_module_ask_reaches_a_threading_actor_without_blocking_the_loop() -> None:
    class Worker(pykka.ThreadingActor):
        def __init__(self, gate: threading.Event) -> None:
            super().__init__()
            self.gate = gate

        def on_receive(self, message: Any) -> Any:
            assert self.gate.wait(5)
            return ("worker", message)

    gate = threading.Event()
    ref = Worker.start(gate)
    progressed = asyncio.Event()

    async def open_gate() -> None:
        progressed.set()
        gate.set()

    opener = asyncio.create_task(open_gate())
    assert await ask(ref, "job", timeout=5) == ("worker", "job")
    assert progressed.is_set()
    await opener
    await asyncio.to_thread(ref.stop)
