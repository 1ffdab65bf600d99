"""AsyncioActor and AsyncioFuture: pykka semantics on an asyncio loop (issue 2)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

import pykka
import pytest

from actors.asyncio_actor import RESUME, AsyncioActor, Forward, ask
from actors.future import AsyncioFuture, BlockingGetOnLoop
from tests.waiting import wait_until_async


class Boom(Exception):
    pass


class Echo(AsyncioActor):
    """A small actor with every kind of handler the runtime relies on."""

    def __init__(self, *, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resume = resume
        self.seen: list[Any] = []
        self.failures: list[BaseException | None] = []
        self.gate: asyncio.Event | None = None
        self.stopped_hook = False
        self.loop_thread: int | None = None

    def on_start(self) -> None:
        self.loop_thread = threading.get_ident()

    def on_stop(self) -> None:
        self.stopped_hook = True

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> str | None:
        self.failures.append(exception_value)
        return RESUME if self.resume else None

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)
        match message:
            case ("raise", text):
                raise Boom(text)
            case ("exit", kind):
                raise kind("bye")
            case ("forward", target, inner):
                return Forward(target, inner)
            case ("later", value):
                return self._later(value)
            case ("later-exit",):
                return self._later_exit()
            case ("thread",):
                return threading.get_ident()
            case _:
                return ("echo", message)

    async def _later(self, value: Any) -> Any:
        if self.gate is None:
            self.gate = asyncio.Event()
        await self.gate.wait()
        return ("later", value)

    async def _later_exit(self) -> Any:
        await asyncio.sleep(0)
        raise SystemExit("deferred bye")

    def release(self) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.gate.set()

    def add(self, a: int, b: int) -> int:
        return a + b

    async def add_later(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    def count(self) -> int:
        return len(self.seen)


def _stop_all(*refs: pykka.ActorRef[Any]) -> None:
    for ref in refs:
        if ref.is_alive():
            ref.stop(block=False)


async def _stopped(ref: pykka.ActorRef[Any]) -> None:
    await wait_until_async(lambda: not ref.is_alive(), what=f"{ref} to stop")


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_ask_timeout_from_another_thread_raises_pykka_timeout() -> None:
    ref = Echo.start()

    def other_thread() -> None:
        with pytest.raises(pykka.Timeout):
            ref.ask(("later", 1), timeout=0.05)  # the reply waits for release()

    await asyncio.to_thread(other_thread)
    ref.proxy().release()
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(b)
    await _stopped(b)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_actor_started_from_a_plain_thread_runs_on_the_given_loop() -> None:
    loop = asyncio.get_running_loop()
    ref = await asyncio.to_thread(lambda: Echo.start(loop=loop))
    assert await ask(ref, ("thread",)) == threading.get_ident()
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_tell_failure_goes_to_on_failure_which_can_resume() -> None:
    ref = Echo.start(resume=True)
    ref.tell(("raise", "bad message"))
    assert await ask(ref, "still there?") == ("echo", "still there?")
    failures = await ref.proxy().failures
    assert len(failures) == 1
    assert isinstance(failures[0], Boom)
    assert str(failures[0]) == "bad message"
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_tell_failure_without_resume_stops_the_actor_and_answers_pending_asks() -> None:
    ref = Echo.start(resume=False)
    actor = ref._actor_weakref()
    assert actor is not None
    ref.tell(("raise", "fatal"))
    pending = ref.ask("queued behind the failure", block=False)
    with pytest.raises(pykka.ActorDeadError):
        await asyncio.wait_for(pending, 5)
    await _stopped(ref)
    assert [type(f) for f in actor.failures] == [Boom]
    assert actor._actor_task is not None
    await asyncio.wait_for(actor.wait_stopped(), 5)
    with pytest.raises(pykka.ActorDeadError):
        await ask(ref, "after")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after")


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
async def test_system_exit_in_one_actor_stops_only_that_actor(kind: type[BaseException]) -> None:
    victim, bystander, asker_victim = Echo.start(), Echo.start(), Echo.start()
    victim.tell(("exit", kind))
    await _stopped(victim)
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
    _stop_all(bystander)
    await _stopped(bystander)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_system_exit_in_a_deferred_reply_stops_only_that_actor() -> None:
    victim, bystander = Echo.start(), Echo.start()
    with pytest.raises(pykka.ActorDeadError, match="exited"):
        await ask(victim, ("later-exit",), timeout=5)
    await _stopped(victim)
    actor = victim._actor_weakref()
    if actor is not None and actor._actor_task is not None:
        await asyncio.wait_for(actor.wait_stopped(), 5)
    assert await ask(bystander, "alive?") == ("echo", "alive?")

    # As a tell: no asker, still only this actor stops, and its task ends.
    victim2 = Echo.start()
    actor2 = victim2._actor_weakref()
    assert actor2 is not None
    victim2.tell(("later-exit",))
    await _stopped(victim2)
    await asyncio.wait_for(actor2.wait_stopped(), 5)
    assert await ask(bystander, "alive?") == ("echo", "alive?")
    _stop_all(bystander)
    await _stopped(bystander)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    await _stopped(ref)
    # The message loop must notice a stop decided outside it, not wait forever.
    await asyncio.wait_for(actor.wait_stopped(), 5)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
    _stop_all(front)
    await _stopped(front)


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_deferred_reply_does_not_hold_up_the_inbox() -> None:
    ref = Echo.start()
    slow = asyncio.ensure_future(ask(ref, ("later", "slow")))
    fast = await ask(ref, "fast")
    assert fast == ("echo", "fast")
    assert not slow.done()  # the deferred reply is still waiting for its gate
    ref.proxy().release()
    assert await asyncio.wait_for(slow, 5) == ("later", "slow")
    _stop_all(ref)
    await _stopped(ref)


@pytest.mark.anyio
@pytest.mark.timeout(10)
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
