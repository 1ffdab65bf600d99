"""``RunActor``: the supervisor of one run.

It owns three things and nobody else touches them: the agent task (its only
child), the trace, and the subscriber set.  Everything that changes them runs
on the event loop thread, one step at a time, which is what makes
"replay then live" exact: :class:`~actors.messages.Subscribe` takes the
replay slice and joins the subscriber set in one handler, and ``emit``
appends and fans out in one call, so no event can fall between the two.

Supervision follows OTP: the child is ``temporary`` by default (a crash ends
the run as ``error``), ``transient`` with a :class:`RestartPolicy`.  Stop is
cooperative first (``ctx.stopping``), then the child is cancelled after
``stop_grace_s``; a child that even survives cancellation is abandoned after
one more grace so that the run always ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pykka

from actors.asyncio_actor import AsyncioActor
from actors.clock import Clock
from actors.context import Agent, RunContext, StopRequested
from actors.errors import AlreadyFinished
from actors.jsonsafe import dumps_safe
from actors.messages import GetRun, RestartPolicy, StopAccepted, StopRun, Subscribe, Unsubscribe
from actors.persistence_protocol import RunsPersisted, SaveRuns
from actors.records import JSON, Event, RunRecord, RunStatus, RunSummary
from actors.stream_items import Finished
from actors.subscription import Subscription

logger = logging.getLogger("runyard.run")


@dataclass
class LiveRun:
    """A live run's gauges: written by its run actor, read by the registry.

    Both live on the loop thread, so reading needs no message round trip;
    this is how the registry lists and introspects 100,000 live runs without
    asking 100,000 actors.
    """

    run_id: str
    owner: str
    agent: str
    started_at: float
    ref: pykka.ActorRef[Any] | None = None
    status: RunStatus = "running"
    trace_length: int = 0
    subscribers: int = 0
    stopping: bool = False
    stored_events: int = 0
    """How many of its events the store has acknowledged (its last checkpoint)."""

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            owner=self.owner,
            agent=self.agent,
            status=self.status,
            started_at=self.started_at,
            finished_at=None,
            event_count=self.trace_length,
            error=None,
        )


@dataclass(frozen=True, slots=True)
class RunSettings:
    """One run's knobs: the runtime's (:class:`~actors.config.RuntimeConfig`) plus the
    start request's.  No defaults here: the registry fills every field."""

    stop_grace_s: float
    max_duration_s: float | None
    restart: RestartPolicy | None
    checkpoint_interval_s: float
    options: dict[str, JSON]


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run actor's last word to the registry: its final record, sent before it stops."""

    record: RunRecord


@dataclass(frozen=True, slots=True)
class _ChildExited:
    status: RunStatus
    result: JSON
    error: str | None


class RunActor(AsyncioActor):
    register_globally = False  # the RegistryActor is the registry of runs

    def __init__(
        self,
        *,
        live: LiveRun,
        input: dict[str, JSON],
        agent: Agent,
        registry: pykka.ActorRef[Any],
        store: pykka.ActorRef[Any] | None,
        settings: RunSettings,
        clock: Clock,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self.live = live
        self.run_id = live.run_id
        self._input = input
        self._agent = agent
        self._registry = registry
        self._store = store
        self._settings = settings
        self._clock = clock
        self._trace: list[Event] = []
        self._subs: dict[Subscription, None] = {}
        self._ctx = RunContext(live.run_id, live.owner, self._emit)
        self._child: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._stop_reason: str | None = None
        self._cancelled_by_stop = False
        self._final: RunRecord | None = None
        self._checkpointed_len = 0
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        # Armed by the first event after a checkpoint, so a run that emits
        # nothing (100,000 sleepers) costs no timer at all.
        self._checkpointing = store is not None and settings.checkpoint_interval_s > 0
        self._loop_thread: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def on_start(self) -> None:
        loop = self._loop()
        self._loop_thread = threading.get_ident()
        self._child = loop.create_task(self._supervise(), name=f"run {self.run_id}")

    def on_stop(self) -> None:
        self._cancel_timers()
        if self._child is not None and not self._child.done():
            self._child.cancel()  # only if the actor is torn down from outside

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Subscribe):
            return self._subscribe(message)
        if isinstance(message, Unsubscribe):
            self._subs.pop(message.subscription, None)
            self.live.subscribers = len(self._subs)
            return None
        if isinstance(message, StopRun):
            return self._request_stop(message.reason)
        if isinstance(message, GetRun):
            return self.record()
        if isinstance(message, _ChildExited):
            return self._finish(message)
        if isinstance(message, RunsPersisted):
            return self._stored(message)
        return super().on_receive(message)

    # -- events ------------------------------------------------------------

    def _emit(self, type: str, data: dict[str, JSON]) -> int:
        if threading.get_ident() != self._loop_thread:
            # An agent helper thread: hop onto the loop (rare; costs one hop).
            fut = asyncio.run_coroutine_threadsafe(self._emit_async(type, data), self._loop())
            return fut.result()
        if self._final is not None:
            msg = f"run {self.run_id} has finished; no more events"
            raise RuntimeError(msg)
        return self._append(type, data)

    async def _emit_async(self, type: str, data: dict[str, JSON]) -> int:
        return self._emit(type, data)

    def _append(self, type: str, data: dict[str, JSON]) -> int:
        seq = len(self._trace) + 1
        safe, encoded = dumps_safe(data)
        event = Event(seq, self._clock.now(), str(type), safe, encoded)
        self._trace.append(event)
        self.live.trace_length = seq
        if self._checkpointing and self._checkpoint_timer is None:
            self._checkpoint_timer = self._loop().call_later(
                self._settings.checkpoint_interval_s, self._checkpoint
            )
        lagged = None
        for sub in self._subs:
            if not sub.push(event):
                lagged = [*(lagged or ()), sub]
        if lagged:
            for sub in lagged:
                del self._subs[sub]
            self.live.subscribers = len(self._subs)
        return seq

    def _subscribe(self, msg: Subscribe) -> Subscription:
        after = max(0, msg.after_seq)
        status = self._final.status if self._final else "running"
        sub = Subscription(
            self.run_id,
            self._loop(),
            after_seq=after,
            max_queue=msg.max_queue,
            replay=self._trace[after:],
            status=status,
        )
        if self._final is not None:
            sub.close(Finished(self._final))
        else:
            self._subs[sub] = None
            self.live.subscribers = len(self._subs)
        return sub

    # -- stop --------------------------------------------------------------

    def _request_stop(self, reason: str) -> StopAccepted:
        if self._final is not None:
            raise AlreadyFinished(
                f"run {self.run_id} already finished with status {self._final.status!r}",
                self._final.status,
            )
        if self._stop_reason is None:
            self._stop_reason = reason
            self.live.stopping = True
            self._append("stop_requested", {"reason": reason})
            self._ctx._request_stop()
            self._schedule(self._settings.stop_grace_s, self._cancel_child)
        return StopAccepted(run_id=self.run_id)

    def _cancel_child(self) -> None:
        child = self._child
        if child is None or child.done():
            return
        self._cancelled_by_stop = True
        child.cancel()
        # A child that swallows CancelledError would keep the run alive forever.
        self._schedule(self._settings.stop_grace_s, self._abandon_child)

    def _abandon_child(self) -> None:
        if self._final is None and self._child is not None and not self._child.done():
            logger.warning("run %s: agent ignored cancellation; abandoning it", self.run_id)
            self._finish(_ChildExited("stopped", None, f"{self._stop_reason} (agent abandoned)"))

    # -- the child ---------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            outcome = await self._run_agent()
        except asyncio.CancelledError:
            outcome = _ChildExited("stopped", None, self._stop_reason or "cancelled")
        if self.actor_ref.is_alive():
            self.actor_ref.tell(outcome)

    async def _run_agent(self) -> _ChildExited:
        settings = self._settings
        loop = self._loop()
        deadline = (
            None if settings.max_duration_s is None else (loop.time() + settings.max_duration_s)
        )
        restart = settings.restart
        attempt = 0
        while True:
            self._ctx.attempt = attempt
            limit = asyncio.timeout_at(deadline) if deadline is not None else nullcontext()
            try:
                async with limit:
                    result = await self._agent(self._input, self._ctx)
            except StopRequested:
                return _ChildExited("stopped", None, self._stop_reason)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return _ChildExited("stopped", None, self._stop_reason or "cancelled")
            except TimeoutError as exc:
                if isinstance(limit, asyncio.Timeout) and limit.expired():
                    message = f"timed out after {settings.max_duration_s:g} s"
                    self._append("error", {"type": "Timeout", "message": message})
                    return _ChildExited("error", None, message)
                return self._crashed(exc)
            except Exception as exc:
                if restart and attempt < restart.max_restarts and not self._ctx.stopping:
                    attempt += 1
                    delay = restart.backoff_s * 2 ** (attempt - 1)
                    self._append(
                        "restart",
                        {
                            "attempt": attempt,
                            "error": f"{type(exc).__name__}: {exc}",
                            "backoff_s": delay,
                        },
                    )
                    try:
                        await self._ctx.sleep(delay)
                    except StopRequested:
                        return _ChildExited("stopped", None, self._stop_reason)
                    continue
                return self._crashed(exc)
            except (SystemExit, KeyboardInterrupt) as exc:
                # asyncio would re-raise these out of the loop and end every run.
                return self._crashed(exc)
            return self._succeeded(result)

    def _crashed(self, exc: BaseException) -> _ChildExited:
        message = f"{type(exc).__name__}: {exc}"
        self._append(
            "error",
            {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )
        return _ChildExited("error", None, message)

    def _succeeded(self, result: JSON) -> _ChildExited:
        safe, _ = dumps_safe(result)
        if safe is not result:
            message = f"result is not JSON-serialisable: {type(result).__name__}"
            self._append("error", {"type": "TypeError", "message": message})
            return _ChildExited("error", safe, message)
        if self._stop_reason is not None:
            return _ChildExited("stopped", result, self._stop_reason)
        return _ChildExited("success", result, None)

    # -- the end -----------------------------------------------------------

    def _finish(self, outcome: _ChildExited) -> None:
        if self._final is not None:
            return  # an abandoned child's late exit
        self._cancel_timers()
        status = outcome.status
        error: str | None = outcome.error
        if status == "stopped" and error is None:
            error = self._stop_reason or "stopped"
        self._append("done", {"status": status, "result": outcome.result, "error": error})
        now = self._clock.now()
        self._final = self.record(
            status=status, result=outcome.result, error=error, finished_at=now
        )
        self.live.status = status
        for sub in self._subs:
            sub.close(Finished(self._final))
        self._subs.clear()
        self.live.subscribers = 0
        # The registry stops this actor once it has taken the record over, so
        # anything it forwarded before that is still answered from here.
        self._registry.tell(RunEnded(self._final))

    def record(
        self,
        *,
        status: RunStatus | None = None,
        result: JSON = None,
        error: str | None = None,
        finished_at: float | None = None,
    ) -> RunRecord:
        if self._final is not None and status is None:
            return self._final
        live = self.live
        return RunRecord(
            run_id=live.run_id,
            owner=live.owner,
            agent=live.agent,
            status=status or "running",
            input=self._input,
            started_at=live.started_at,
            finished_at=finished_at,
            events=tuple(self._trace),
            result=result,
            error=error,
            updated_at=self._clock.now(),
            options=self._settings.options,
        )

    def _checkpoint(self) -> None:
        self._checkpoint_timer = None
        if self._final is not None or self._store is None:
            return
        if len(self._trace) > self._checkpointed_len:
            self._checkpointed_len = len(self._trace)
            self._store.tell(SaveRuns((self.record(),), ack_to=self.actor_ref))

    def _stored(self, msg: RunsPersisted) -> None:
        for saved in msg.saved:
            self.live.stored_events = max(self.live.stored_events, saved.event_count)

    # -- helpers -----------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.actor_loop is not None
        return self.actor_loop

    def _schedule(self, delay: float, callback: Any) -> None:
        now = self._loop().time()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > now]
        self._timers.append(self._loop().call_later(delay, callback))

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
