"""``AsyncioActor``: a pykka actor whose message loop is a task on an event loop.

A live run must cost a task, not an OS thread (a ``ThreadingActor`` per run
tops out near 22k threads and pays a cross-thread hop per event; see
docs/design.md, "Threads and loops").  This class plugs into pykka's own
extension points (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``), so
``ActorRef.tell``/``ask``, proxies and ``ActorRegistry`` keep working, from
the loop's thread and from any other thread.

Differences from ``ThreadingActor``, each on purpose:

* Futures are :class:`~runyard.actors.future.AsyncioFuture`: awaitable on the loop
  without blocking it, ``get(timeout)`` from other threads.
* ``on_failure`` *decides*: return :data:`RESUME` to keep the actor alive
  after a failed ``tell`` handler (a supervisor that survives a bad message);
  anything else stops it, as in pykka.
* ``SystemExit``/``KeyboardInterrupt`` inside a handler stop this actor only;
  pykka would stop every actor in the process.
* A handler may return :class:`Forward` to hand the message, with the
  original asker's reply future, to another actor (Akka's ``forward``), or a
  coroutine to reply later without holding up the inbox (a "deferred reply").
* A stop (``ask_stop``, ``tell_stop``, ``ref.stop()``) first awaits
  :meth:`~AsyncioActor.on_stopping` on the loop, if the class defines it:
  pykka's ``on_stop`` is synchronous, and some cleanup needs the loop.
* A handler may also take the asker's reply future (:meth:`AsyncioActor.take_reply`)
  and answer it later from a callback of its own, without a task or a trip
  around the loop (how a run actor answers a start the moment the store's
  acknowledgement reaches it).
* A message sent on the loop to an idle actor is handled in the sender's step
  (direct hand-off, see :class:`AsyncioInbox`): still one message at a time
  and in order per sender, but without two trips around the event loop.  A
  message from another thread is handled in the loop callback that brings it
  over, if the actor is idle then, instead of waking its task for one more
  iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import sys
import threading
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final

import pykka
from pykka import messages as pykka_messages
from pykka._envelope import Envelope

from runyard.actors.future import AsyncioFuture

logger = logging.getLogger("runyard.actors")

RESUME: Final = "resume"
"""Return this from ``on_failure`` to keep the actor running."""

_URN_PREFIX: Final = f"urn:runyard:{uuid.uuid4().hex[:12]}:"
_URN_SERIAL = itertools.count(1)
"""Actor URNs (``urn:runyard:<process>:<serial>``): unique in the process, made
without a uuid4 per actor."""

_FAIRNESS_BATCH = 256
"""Messages handled before the loop yields, so one busy actor cannot starve the rest."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Handler result: deliver ``message`` to ``target`` with the original reply future."""

    target: pykka.ActorRef[Any]
    message: Any


class AsyncioInbox:
    """A deque plus one loop-native waiter; ``put`` is safe from any thread.

    Direct hand-off: a message put on the loop thread while the actor is
    parked (its inbox empty, no handler running) is handled at once, in the
    sender's step, instead of waking the actor's task for the next loop
    iteration.  The actor still handles one message at a time and each
    sender's messages in order (the inbox was empty), but a route that asks
    the registry gets its answer without two trips around the event loop.
    A put from another thread is handed over the same way by the loop
    callback that brings it (:meth:`_arrived`), if the actor is parked then.
    """

    __slots__ = ("_actor", "_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, actor: AsyncioActor) -> None:
        self._loop = loop
        self._actor = actor
        self._items: deque[Envelope[Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, envelope: Envelope[Any], /) -> None:
        if asyncio._get_running_loop() is self._loop:
            waiter = self._waiter
            idle = not self._items and waiter is not None and not waiter.done()
            if idle and self._actor._handle_directly(envelope):
                return
            self._items.append(envelope)
            self._wake()
        else:
            self._items.append(envelope)  # deque.append is atomic under the GIL
            try:
                self._loop.call_soon_threadsafe(self._arrived)
            except RuntimeError as exc:  # loop closed: the actor is gone for good
                raise pykka.ActorDeadError("the actor's event loop is closed") from exc

    def get(self) -> Envelope[Any]:
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def _arrived(self) -> None:
        """On the loop, for a put from another thread: hand the oldest message to a
        parked actor now, else wake its task (every put schedules one call, so
        each message is handed over or found by the task, in order)."""
        waiter = self._waiter
        if self._items and waiter is not None and not waiter.done():
            envelope = self._items.popleft()
            if self._actor._handle_directly(envelope):
                if self._items:
                    self._wake()
                return
            self._items.appendleft(envelope)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once woken: by a put, or by a stop decided outside the message loop."""
        if self._items:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class AsyncioActor(pykka.Actor):
    """Base class for actors that live on the runtime's event loop.

    Handlers run on the loop thread, one message at a time, and must not
    block.  An actor started on its loop runs ``on_start`` at once, in the
    starter's step (started from another thread: first thing in its task).
    Create actors with ``start()`` from the loop thread (or pass
    ``loop=``); the loop defaults to the running loop, else to the loop the
    runtime bound with :meth:`bind_loop`.
    """

    _default_loop: ClassVar[asyncio.AbstractEventLoop | None] = None

    register_globally: ClassVar[bool] = True
    """Whether ``start()`` adds the actor to pykka's ``ActorRegistry``.

    That registry is one list under a lock: ``unregister`` scans it, which is
    fine for a handful of long-lived actors and ruinous for 100,000 short
    ones (2.2 ms per stop measured at 100k).  Actors that have a registry of
    their own (run actors: the ``RegistryActor``) opt out.
    """

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        if cls.register_globally:
            return super().start(*args, **kwargs)
        obj = cls(*args, **kwargs)
        obj._start_actor_loop()
        return obj.actor_ref

    actor_inbox: AsyncioInbox

    @classmethod
    def bind_loop(cls, loop: asyncio.AbstractEventLoop | None) -> None:
        """Make ``loop`` the default for actors started from other threads."""
        AsyncioActor._default_loop = loop

    def __init__(
        self, *args: Any, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        self.actor_loop = loop or asyncio._get_running_loop() or AsyncioActor._default_loop
        if self.actor_loop is None:
            msg = "no event loop: start AsyncioActors on the loop or bind one with bind_loop()"
            raise RuntimeError(msg)
        self._actor_task: asyncio.Task[None] | None = None
        self._deferred: set[asyncio.Task[Any]] = set()
        self._handling = False
        self._stopping = False
        self._reply_to: pykka.Future[Any] | None = None
        self._reply_taken = False
        self._set_up = False
        """``on_start`` has run (in the starter's step, for an actor started on its loop)."""
        # pykka.Actor.__init__ (which only sets these four), minus its uuid4 (an
        # os.urandom call, a tenth of a run actor's construction): the URN need
        # only be unique in this process.
        self.actor_urn = f"{_URN_PREFIX}{next(_URN_SERIAL)}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = threading.Event()
        self._actor_ref = pykka.ActorRef(self)

    # -- pykka extension points --------------------------------------------

    def _create_actor_inbox(self) -> AsyncioInbox:  # type: ignore[override]
        assert self.actor_loop is not None
        return AsyncioInbox(self.actor_loop, self)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return AsyncioFuture()

    def _start_actor_loop(self) -> None:
        loop = self.actor_loop
        assert loop is not None
        if asyncio._get_running_loop() is loop:
            # on_start in the starter's step: what it sends goes out now, not one
            # loop iteration later (a run's first write joins the group commit
            # of the other starts handled in this step).
            self._set_up = True
            self._handling = True  # no message is handled before on_start is done
            try:
                self._actor_loop_setup()
            finally:
                self._handling = False
            self._actor_task = loop.create_task(self._run(), name=str(self))
        else:
            ready = threading.Event()

            def create() -> None:
                self._actor_task = loop.create_task(self._run(), name=str(self))
                ready.set()

            loop.call_soon_threadsafe(create)
            ready.wait()

    # -- the message loop --------------------------------------------------

    async def _run(self) -> None:
        try:
            if not self._set_up:
                self._actor_loop_setup()
            inbox = self.actor_inbox
            handled = 0
            while not self.actor_stopped.is_set():
                if inbox.empty():
                    handled = 0
                    await inbox.wait()
                    continue
                self._handling = True
                try:
                    self._handle_envelope(inbox.get())
                finally:
                    self._handling = False
                handled += 1
                if handled >= _FAIRNESS_BATCH:
                    handled = 0
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not self.actor_stopped.is_set():
                self._stop()
            raise
        finally:
            self._actor_loop_teardown()

    def _handle_directly(self, envelope: Envelope[Any]) -> bool:
        """Handle ``envelope`` in the sender's step if this actor is idle; see AsyncioInbox."""
        if (
            self._handling
            or self.actor_stopped.is_set()
            # A stop goes through the task, so the task has ended when the stop is answered.
            or isinstance(envelope.message, pykka_messages._ActorStop)
        ):
            return False
        self._handling = True
        try:
            self._handle_envelope(envelope)
        finally:
            self._handling = False
        if self.actor_stopped.is_set():
            self.actor_inbox._wake()  # the parked task must see the stop and tear down
        return True

    def _handle_receive(self, message: Any) -> Any:
        if (
            isinstance(message, pykka_messages._ActorStop)
            and not self._stopping
            and type(self).on_stopping is not AsyncioActor.on_stopping
        ):
            self._stopping = True
            return self._stop_after_stopping()  # a deferred reply: answered once stopped
        return super()._handle_receive(message)

    async def on_stopping(self) -> None:
        """Awaited on the loop when a stop message arrives, before the actor stops
        (and ``on_stop`` runs); the stop is answered after both.

        For cleanup that needs the loop (a last write, closing a session),
        which pykka's synchronous ``on_stop`` cannot wait on. Messages that
        arrive meanwhile are still handled; a second stop message stops the
        actor at once. An exception is logged and the actor stops all the
        same. Not awaited when the actor stops otherwise (a failure, its
        loop cancelled): ``on_stop`` must release what it holds then.
        Actors that do not define it stop at once, as in pykka.
        """

    async def _stop_after_stopping(self) -> None:
        try:
            await self.on_stopping()
        except Exception:
            logger.exception("on_stopping of %s raised; stopping all the same", self)
        finally:
            if not self.actor_stopped.is_set():
                self._stop()
                self.actor_inbox._wake()  # the parked message loop must see the stop

    def take_reply(self) -> pykka.Future[Any] | None:
        """In a handler: take the asker's reply future, to answer it later yourself.

        Returns None for a ``tell`` (nobody to answer).  The handler's return
        value is then ignored, and the taker must ``set`` or ``set_exception``
        the future exactly once, on the loop, and fail what it still holds
        when the actor stops (an asker would otherwise wait for ever).  Unlike
        a deferred reply (a coroutine) this costs no task and no trip around
        the loop: the answer goes out in the step that decides it.
        """
        self._reply_taken = True
        return self._reply_to

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        reply_to = envelope.reply_to
        self._reply_to, self._reply_taken = reply_to, False
        try:
            response = self._handle_receive(envelope.message)
        except Exception:
            if reply_to is not None:
                # A handler that took the reply may have answered it already:
                # an AsyncioFuture refuses a second answer, and the first one stands.
                with contextlib.suppress(RuntimeError):
                    reply_to.set_exception()
            else:
                self._failed(*sys.exc_info())
            return
        except (SystemExit, KeyboardInterrupt):
            # pykka would stop every actor in the process; one actor's exit is its own.
            exc_value = sys.exc_info()[1]
            logger.error("%s raised %r; stopping this actor only", self, exc_value)
            if reply_to is not None:
                # Re-raising SystemExit in the asker would take its loop down too.
                dead = pykka.ActorDeadError(f"{self} exited: {exc_value!r}")
                reply_to.set_exception((type(dead), dead, None))
            self._stop()
            return
        finally:
            self._reply_to = None
        if self._reply_taken:
            return
        if isinstance(response, Forward):
            if response.target.is_alive():
                response.target.actor_inbox.put(Envelope(response.message, reply_to=reply_to))
            elif reply_to is not None:
                reply_to.set_exception(_dead(response.target))
            return
        if inspect.iscoroutine(response):
            self._defer(response, reply_to)
            return
        if reply_to is not None:
            reply_to.set(response)

    def _defer(self, coro: Coroutine[Any, Any, Any], reply_to: pykka.Future[Any] | None) -> None:
        assert self.actor_loop is not None
        task = self.actor_loop.create_task(self._guard(coro))
        self._deferred.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._deferred.discard(t)
            if t.cancelled():
                if reply_to is not None:
                    reply_to.set_exception(_dead(self.actor_ref))
                return
            exc = t.exception()
            if exc is None:
                if reply_to is not None:
                    reply_to.set(t.result())
            elif reply_to is not None:
                reply_to.set_exception((type(exc), exc, exc.__traceback__))
            elif isinstance(exc, Exception) and not self.actor_stopped.is_set():
                self._failed(type(exc), exc, exc.__traceback__)
                self.actor_inbox._wake()  # the message loop must see a stop decided here

        task.add_done_callback(done)

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a deferred reply; its ``SystemExit`` ends this actor, not the event loop."""
        try:
            return await coro
        except (SystemExit, KeyboardInterrupt) as exc:
            # Left alone, asyncio re-raises these out of the loop, ending every actor.
            logger.error("%s raised %r in a deferred reply; stopping this actor only", self, exc)
            if not self.actor_stopped.is_set():
                self._stop()
                self.actor_inbox._wake()
            raise pykka.ActorDeadError(f"{self} exited: {exc!r}") from None

    def _failed(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """A ``tell`` handler raised: ``on_failure`` decides whether the actor goes on."""
        try:
            decision = self.on_failure(exc_type, exc_value, tb)
        except Exception:
            decision = None
            logger.exception("on_failure of %s raised", self)
        if decision == RESUME:
            logger.info("%s resumed after %r", self, exc_value)
            return
        self._handle_failure(exc_type, exc_value, tb)

    def _actor_loop_teardown(self) -> None:
        super()._actor_loop_teardown()
        for task in list(self._deferred):
            task.cancel()

    def on_failure(  # type: ignore[override]
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> str | None:
        """Decide what a failed ``tell`` handler means; return :data:`RESUME` to go on."""
        return None

    async def wait_stopped(self) -> None:
        """Wait until the actor's task has ended (on the actor's loop)."""
        if self._actor_task is not None:
            await asyncio.shield(self._actor_task)


def _dead(ref: pykka.ActorRef[Any]) -> tuple[type[BaseException], BaseException, None]:
    exc = pykka.ActorDeadError(f"{ref} is not alive")
    return (type(exc), exc, None)


async def ask(ref: pykka.ActorRef[Any], message: Any, *, timeout: float | None = None) -> Any:
    """Ask any actor (asyncio or threading) from the event loop without blocking it.

    Pykka's ``ref.ask`` makes a future of the *callee's* kind, and a
    ``ThreadingFuture`` would block the loop when awaited.  Here the asker
    brings an :class:`AsyncioFuture`; any pykka actor loop replies into it.
    """
    future: AsyncioFuture[Any] = AsyncioFuture()
    if not ref.is_alive():
        raise pykka.ActorDeadError(f"{ref} is not alive")
    ref.actor_inbox.put(Envelope(message, reply_to=future))
    if timeout is None:
        return await future
    async with asyncio.timeout(timeout):
        return await future


def tell_stop(ref: pykka.ActorRef[Any]) -> None:
    """Ask any actor to stop, without waiting: ``ref.stop(block=False)`` without
    the two futures nobody would wait on (pykka's private stop message is used
    here, and only here)."""
    ref.tell(pykka_messages._ActorStop())


async def ask_stop(ref: pykka.ActorRef[Any], *, timeout: float | None = None) -> None:
    """Stop any actor (asyncio or threading) and await its ``on_stop`` from the loop,
    without blocking it (``ref.stop()`` would block on a threading future)."""
    await ask(ref, pykka_messages._ActorStop(), timeout=timeout)
