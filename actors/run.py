"""``RunActor``: the supervisor of one run.

It owns two things and nobody else touches them: the agent task (its only
child) and the run's log (:class:`~runyard.actors.run_log.RunLog`: the trace and the
subscriber set).  Everything that changes them runs on the event loop thread,
one step at a time, which is what makes "replay then live" exact.

It is also the only writer of its run's record.  Its first write (the
``running`` header) goes to the store at start; every emit is appended at
once and handed to the store link in the same loop step's write; the link's
acknowledgement raises the log's high-water mark, and only then do
subscribers see the events, a reader of ``GetRun`` the trace, and the
registry the terminal status (``RunEnded``).  Whatever crashes, nothing a
client was told is taken back.

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
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import pykka

from runyard.actors.asyncio_actor import RESUME, AsyncioActor
from runyard.actors.clock import Clock
from runyard.actors.context import Agent, RunContext, StopRequested
from runyard.actors.errors import AlreadyFinished, StoreUnavailable
from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.live_run import (
    EpochSeen,
    LiveRun,
    Resume,
    RunEnded,
    RunFenced,
    RunSettings,
    StartAck,
)
from runyard.actors.messages import GetRun, StopAccepted, StopRun, Subscribe, Unsubscribe
from runyard.actors.ops_log import OP_TYPE, OpsTally, shrunk_op
from runyard.actors.owed_answers import Owed, OwedAnswers
from runyard.actors.persistence_protocol import RunsPersisted, RunWrite, SaveRuns
from runyard.actors.quotas import QuotaExceeded, encoded_size, truncated
from runyard.actors.records import JSON, Event, RunRecord, RunStatus
from runyard.actors.run_log import RunLog
from runyard.actors.run_outcome import ChildExited, check_result, crash_report, done_data
from runyard.actors.stats import RuntimeStats
from runyard.actors.stream_items import Closing, Finished
from runyard.actors.subscription import Subscription

logger = logging.getLogger("runyard.run")


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
        resume: Resume | None = None,
        start_ack: StartAck | None = None,
        stats: RuntimeStats | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``resume``: go on from a stored trace (a run taken over from a dead node);
        ``start_ack``: the start's answer, owed once the run's header is stored;
        ``stats``: the runtime's counters (:mod:`runyard.actors.stats`)."""
        super().__init__(loop=loop)
        self._stats = stats if stats is not None else RuntimeStats()
        self._start_ack = start_ack
        self.live = live
        self.run_id = live.run_id
        self._input = input
        self._agent = agent
        self._registry = registry
        self._store = store
        self._settings = settings
        self._config = settings.config
        self._run_bytes = 0
        self._quota_error: str | None = None
        self._clock = clock
        self._log = RunLog(live.run_id, self._loop(), durable=store is not None, stats=self._stats)
        self._resume = resume
        self._epoch = 0 if resume is None else resume.epoch
        """The fencing token every write of this run carries (RunRecord.epoch)."""
        self._ops = OpsTally(() if resume is None else resume.events)
        if resume is not None:
            self._log.seed(resume.events)
            self._run_bytes = sum(len(e.data_json) for e in resume.events)
        self._header_stored = store is None
        self._owed = OwedAnswers(
            self._loop(), self._config.store_timeout_s, live.run_id, self._start_refused
        )
        self._write_queued = False
        self._final_sent = False
        self._ended = False
        self._fenced = False
        self._ctx = RunContext(live.run_id, live.owner, self._emit, self._ready)
        self._child: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._stop_reason: str | None = None
        self._stop_seq = 0
        self._cancelled_by_stop = False
        self._final: RunRecord | None = None
        """The terminal record, once the agent is done (stored or on its way)."""
        self._final_header: RunRecord | None = None
        """``_final`` without its trace: what the final write carries."""
        self._loop_thread: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def on_start(self) -> None:
        loop = self._loop()
        self._loop_thread = threading.get_ident()
        ack, self._start_ack = self._start_ack, None
        if ack is not None:
            self._owed.add(Owed(0, ack.answer, ack.reply, start=True))
        try:
            self._write()  # the `running` header: the run exists in the store
        except pykka.ActorDeadError:  # the store link is gone: the server is stopping
            self._owed.fail_all(StoreUnavailable("the store is not running (server stopping)"))
            raise
        self._child = loop.create_task(self._supervise(), name=f"run {self.run_id}")

    def on_stop(self) -> None:
        self._cancel_timers()
        # Owed only if the actor is torn down before its end is stored.
        self._owed.fail_all(pykka.ActorDeadError(f"run {self.run_id} is no longer running"))
        if self._child is not None and not self._child.done():
            self._child.cancel()  # only if the actor is torn down from outside

    def on_failure(self, *exc_info: Any) -> str:  # type: ignore[override]
        # A failed `tell` (say, a stop that could not be put on record in time)
        # must not end the supervisor: its run would never end.
        logger.warning("run %s: a message failed: %s", self.run_id, exc_info[1])
        return RESUME

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Subscribe):
            return self._subscribe(message)
        if isinstance(message, Unsubscribe):
            self._log.unsubscribe(message.subscription)
            self.live.subscribers = self._log.subscribers
            return None
        if isinstance(message, StopRun):
            return self._on_stop_run(message.reason)
        if isinstance(message, GetRun):
            return self.record()
        if isinstance(message, ChildExited):
            return self._finish(message)
        if isinstance(message, RunsPersisted):
            return self._stored(message)
        if isinstance(message, EpochSeen):
            if message.epoch > self._epoch:
                self._drop_fenced()
            return None
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
        if self._quota_error is not None:
            raise QuotaExceeded(self._quota_error)
        safe, encoded = dumps_safe(data)
        size = encoded_size(encoded)
        config = self._config
        if size > config.max_event_bytes:
            small = shrunk_op(safe, size) if type == OP_TYPE else truncated(encoded, size)
            safe, encoded = dumps_safe(small)
            size = encoded_size(encoded)
        self._run_bytes += size
        if len(self._log) >= config.max_run_events:
            self._over_quota(f"the run passed its quota of {config.max_run_events} events")
        elif self._run_bytes > config.max_run_bytes:
            self._over_quota(f"the run passed its quota of {config.max_run_bytes} bytes of events")
        return self._append(type, safe, encoded)

    async def _emit_async(self, type: str, data: dict[str, JSON]) -> int:
        return self._emit(type, data)

    def _over_quota(self, message: str) -> None:
        """End the run ``error``: no more events, the agent is stopped now."""
        self._quota_error = message
        self._append("error", {"type": "QuotaExceeded", "message": message})
        self._ctx._request_stop()
        if self._child is not None and not self._child.done():
            self._child.cancel()
        raise QuotaExceeded(message)

    async def _ready(self) -> None:
        """Backpressure for ``ctx.ready()``: wait while too much is not yet stored."""
        limit = self._config.max_unstored_bytes
        if self._log.unstored_bytes > limit:
            await self._log.when_unstored_below(limit // 2)

    def _append(self, type: str, data: dict[str, JSON], encoded: str | None = None) -> int:
        seq = len(self._log) + 1
        if encoded is None:
            data, encoded = dumps_safe(data)
        event = Event(seq, self._clock.now(), str(type), data, encoded)
        self._log.append(event)
        if type == OP_TYPE:
            self._ops.add(event)
        self.live.unstored_bytes = self._log.unstored_bytes
        if self._store is None:
            self.live.trace_length = seq
            self.live.subscribers = self._log.subscribers  # a lagged one may have left
        elif not self._write_queued:
            # One write per loop step: an agent emitting in a burst costs one message.
            self._write_queued = True
            self._loop().call_soon(self._write)
        return seq

    def _subscribe(self, msg: Subscribe) -> Subscription:
        after = max(0, msg.after_seq)
        if self._ended:
            assert self._final is not None
            return Subscription.of_finished(self._final, self._loop(), after, msg.max_queue)
        sub = self._log.subscribe(after, msg.max_queue, "running")
        self.live.subscribers = self._log.subscribers
        return sub

    # -- to the store --------------------------------------------------------

    def _write(self) -> None:
        """Hand the store everything it does not have yet, in one write."""
        self._write_queued = False
        if self._store is None or self._final_sent or self._fenced:
            return  # (a write queued before the run ended: the final one carried it all)
        if self._final is not None:
            self._final_sent = True
        header = self._header() if self._final_header is None else self._final_header
        write = RunWrite(header, len(self._log), self._log.take_unsent())
        self._store.tell(SaveRuns((write,), ack_to=self.actor_ref))

    def _stored(self, msg: RunsPersisted) -> None:
        for saved in msg.saved:
            if saved.fenced:
                self._drop_fenced()
                return
            self._header_stored = True
            self._log.commit(saved.event_count)
            self.live.trace_length = self._log.committed
            self.live.unstored_bytes = self._log.unstored_bytes
            self.live.subscribers = self._log.subscribers
            self._owed.settle(self._log.committed)
            if saved.finished and self._final is not None:
                self._end()

    def _drop_fenced(self) -> None:
        """Another node took this run over and fenced it in the store: this node
        was judged dead (its lease expired while it was paused or cut off).
        Nothing more of the run is stored or served from here: the agent is
        cancelled, waiting answers fail, and each stream gets ``closing``, so
        its client reconnects and is served the stored run by a live node."""
        if self._fenced:
            return
        self._fenced = True
        logger.error(
            "run %s was taken over by another node (this node was judged dead): dropping it",
            self.run_id,
        )
        self._cancel_timers()
        self._owed.fail_all(StoreUnavailable(f"run {self.run_id} was taken over by another node"))
        self._log.close_all(Closing(self._log.committed, "the run was taken over by another node"))
        self.live.subscribers = 0
        if self._child is not None and not self._child.done():
            self._child.cancel()
        self._registry.tell(RunFenced(self.run_id))

    def _reply_when_stored(self, seq: int, answer: Any) -> Any:
        """``answer`` (raised if an exception) once the header and events ``1..seq`` are
        stored: now if they are, else from :meth:`_stored` when the store says so."""
        if self._header_stored and self._log.committed >= seq:
            if isinstance(answer, BaseException):
                raise answer
            return answer
        self._owed.add(Owed(seq, answer, self.take_reply()))
        return None

    def _start_refused(self) -> None:
        """The store did not confirm the start in time: it was refused, so stop the run."""
        if self._final is None:
            self._request_stop("the store is unavailable")

    # -- stop --------------------------------------------------------------

    def _on_stop_run(self, reason: str) -> Any:
        """Reply :class:`StopAccepted` once the request is on record (its
        ``stop_requested`` event is stored)."""
        if self._final is not None:
            if self._ended:
                raise self._already_finished()
            # It ended, but until that is stored a reader still sees it running.
            return self._reply_when_stored(len(self._log), self._already_finished())
        self._request_stop(reason)
        return self._reply_when_stored(self._stop_seq, StopAccepted(run_id=self.run_id))

    def _request_stop(self, reason: str) -> None:
        """The first request puts ``stop_requested`` on record and starts the grace period."""
        if self._stop_reason is None:
            self._stats.stops += 1
            self._stop_reason = reason
            self.live.stopping = True
            self._stop_seq = self._append("stop_requested", {"reason": reason})
            self._ctx._request_stop()
            self._schedule(self._config.stop_grace_s, self._cancel_child)

    def _already_finished(self) -> AlreadyFinished:
        assert self._final is not None
        return AlreadyFinished(
            f"run {self.run_id} already finished with status {self._final.status!r}",
            self._final.status,
        )

    def _cancel_child(self) -> None:
        child = self._child
        if child is None or child.done():
            return
        self._cancelled_by_stop = True
        child.cancel()
        # A child that swallows CancelledError would keep the run alive forever.
        self._schedule(self._config.stop_grace_s, self._abandon_child)

    def _abandon_child(self) -> None:
        if self._final is None and self._child is not None and not self._child.done():
            logger.warning("run %s: agent ignored cancellation; abandoning it", self.run_id)
            self._finish(ChildExited("stopped", None, f"{self._stop_reason} (agent abandoned)"))

    # -- the child ---------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            outcome = await self._run_agent()
        except asyncio.CancelledError:
            outcome = ChildExited("stopped", None, self._stop_reason or "cancelled")
        schema = self._settings.output_schema
        if outcome.status == "success" and schema is not None:
            outcome = replace(outcome, schema_warnings=await check_result(schema, outcome.result))
        if self.actor_ref.is_alive():
            self.actor_ref.tell(outcome)

    async def _run_agent(self) -> ChildExited:
        settings = self._settings
        loop = self._loop()
        deadline = (
            None if settings.max_duration_s is None else (loop.time() + settings.max_duration_s)
        )
        restart = settings.restart
        attempt = 0
        if self._resume is not None:
            attempt = self._resume.attempt
            self._append("restart", {"attempt": attempt, "error": self._resume.reason})
        while True:
            self._ctx.attempt = attempt
            limit = asyncio.timeout_at(deadline) if deadline is not None else nullcontext()
            try:
                async with limit:
                    result = await self._agent(self._input, self._ctx)
            except StopRequested:
                return ChildExited("stopped", None, self._stop_reason)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return ChildExited("stopped", None, self._stop_reason or "cancelled")
            except TimeoutError as exc:
                if isinstance(limit, asyncio.Timeout) and limit.expired():
                    message = f"timed out after {settings.max_duration_s:g} s"
                    self._append("error", {"type": "Timeout", "message": message})
                    return ChildExited("error", None, message)
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
                        return ChildExited("stopped", None, self._stop_reason)
                    continue
                return self._crashed(exc)
            except (SystemExit, KeyboardInterrupt) as exc:
                # asyncio would re-raise these out of the loop and end every run.
                return self._crashed(exc)
            return self._succeeded(result)

    def _crashed(self, exc: BaseException) -> ChildExited:
        data, message = crash_report(self.run_id, exc)
        self._append("error", data)
        return ChildExited("error", None, message)

    def _succeeded(self, result: JSON) -> ChildExited:
        safe, _ = dumps_safe(result)
        if safe is not result:
            message = f"result is not JSON-serialisable: {type(result).__name__}"
            self._append("error", {"type": "TypeError", "message": message})
            return ChildExited("error", safe, message)
        if self._stop_reason is not None:
            return ChildExited("stopped", result, self._stop_reason)
        return ChildExited("success", result, None)

    # -- the end -----------------------------------------------------------

    def _finish(self, outcome: ChildExited) -> None:
        if self._final is not None or self._fenced:
            return  # an abandoned child's late exit, or a run another node owns now
        self._cancel_timers()
        status = outcome.status
        error: str | None = outcome.error
        if self._quota_error is not None:
            status, error = "error", self._quota_error
        if status == "stopped" and error is None:
            error = self._stop_reason or "stopped"
        warnings = outcome.schema_warnings if status == "success" else None
        ops_log = self._ops.summary()
        self._append("done", done_data(status, outcome.result, error, warnings, ops_log))
        self._final_header = replace(
            self._header(status, outcome.result, error, self._clock.now()),
            schema_warnings=warnings,
            ops_log=ops_log,
        )
        self._final = replace(self._final_header, events=tuple(self._log.events))
        if self._store is None:
            self._end()
        else:
            self._write()  # the terminal header; the run ends when the store has it

    def _end(self) -> None:
        """The terminal record is stored: now subscribers, readers and the registry see it."""
        assert self._final is not None
        self._ended = True
        self.live.status = self._final.status
        self._log.close_all(Finished(self._final))
        self.live.subscribers = 0
        # The registry stops this actor once it has taken the record over, so
        # anything it forwarded before that is still answered from here.
        self._registry.tell(RunEnded(self._final, self._run_bytes))

    def record(self) -> RunRecord:
        """The run as a reader may see it: what the store holds."""
        if self._ended:
            assert self._final is not None
            return self._final
        return replace(self._header(), events=self._log.committed_events())

    def _header(
        self,
        status: RunStatus = "running",
        result: JSON = None,
        error: str | None = None,
        finished_at: float | None = None,
    ) -> RunRecord:
        """The run without its trace: what its writes carry (``running`` until the end)."""
        live = self.live
        return RunRecord(
            run_id=live.run_id,
            owner=live.owner,
            workspace=live.workspace,
            agent=live.agent,
            status=status,
            input=self._input,
            started_at=live.started_at,
            updated_at=self._clock.now(),
            options=self._settings.options,
            node=self._config.node_id,
            epoch=self._epoch,
            result=result,
            error=error,
            finished_at=finished_at,
        )

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
