"""``CodeAgent``: the in-server side of run-code, an ordinary agent.

The registry calls :func:`make_code_agent`'s factory with the ``StartRun``
that carries ``code``; the agent it returns is supervised by a
:class:`~runyard.actors.run.RunActor` like any catalog agent, so stop, time limits,
restarts, persistence and streaming need nothing special.  The agent's
coroutine:

1. takes a pre-started child from the pool (:mod:`runyard.actors.code.pool`,
   ``CodeSettings.pool_size``), or when there is none, spawns
   ``python -I -X utf8 -c BOOTSTRAP`` (:mod:`runyard.actors.code.child`) with
   ``asyncio.create_subprocess_exec`` (nothing blocks the loop), in a new
   session (its own process group), with ``/dev/null`` as stdin and pipes the
   server owns as stdout/stderr, in a fresh temporary directory, with a
   minimal environment: ``HOME``/``TMPDIR`` (the temporary directory),
   ``LANG``, and the request's ``env``; nothing from the server's
   environment (``RUNYARD_TOKENS`` and friends never reach submitted code);
2. sends the job over the socket of :mod:`runyard.actors.code.protocol`; the job
   carries the run's environment and temporary directory, which the child
   takes on first (a pre-started child was started without them); the child
   lowers its own rlimits (address space, CPU seconds, file size, open
   files, no core dumps) and locks itself in with Landlock
   (:mod:`runyard.actors.code.sandbox`) before it executes the code, then reports
   ``{"landlock": "abi N" | "unavailable: why", "namespaces": ..., "network": ...,
   "capabilities": ...}`` (the namespaces were made when the child started:
   :mod:`runyard.actors.code.isolation`): a run without Landlock or without a PID
   namespace gets a ``sandbox`` event saying so, and the server logs a
   warning once;
3. relays every event frame to ``ctx.emit`` as it arrives, and the child's
   raw fd 1/2 output as ``stdout`` events;
4. forwards a cooperative stop (``ctx.stopping``) to the child;
5. returns the child's result, or raises its exception (same type name and
   message, the child's traceback as a note for the server's log and as
   the traceback its user is shown, :mod:`runyard.actors.tracebacks`),
   ``StopRequested`` when the code stopped, or :class:`ChildCrashed` with
   the reason when the child died without a word (exit code, signal, out of
   memory); errors of this machinery show its user no server frames.

The child's ``ctx.op`` arrives as an ``op`` event frame and is recorded with
``ctx.op`` here, checked again (the child is not trusted).

When the coroutine is cancelled (the run actor does that ``stop_grace``
after a stop, and at ``max_duration_s``), its ``finally`` ends the child
with :func:`runyard.actors.code.pool.end`: SIGTERM to the keeper, which kills the
child's PID namespace (every process the code started, ``setsid`` or not),
then SIGKILL to the process group, a reap, and the server's pipe ends
closed; a ``while True: pass`` agent ends within the grace.  The same
happens after a normal end, so processes the code started cannot outlive
its run, nor hold the server's descriptors.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import math
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runyard.actors.code import protocol
from runyard.actors.code.child import EXIT_BAD_JOB, EXIT_OUT_OF_MEMORY, EXIT_REPORT_FAILED
from runyard.actors.code.pool import IDLE_CWD, IDLE_ENV, Worker, WorkerPool, end, spawn_worker
from runyard.actors.code.settings import CodeSettings
from runyard.actors.code.validate import check_code_if_cheap, check_env
from runyard.actors.context import Agent, RunContext, StopRequested
from runyard.actors.messages import StartRun
from runyard.actors.ops_log import OP_TYPE
from runyard.actors.records import JSON
from runyard.actors.tracebacks import attach, frameless

MIB = 1024 * 1024
# Up one directory per dotted part of this module's name (runyard.actors.code.agent:
# three).  Not resolve(): in the source tree that would follow the runyard/actors
# symlink to the top-level actors/ folder and land one directory too high.
PACKAGE_ROOT = str(Path(__file__).absolute().parents[len(__name__.split(".")) - 1])
"""The directory holding the ``runyard`` package: the child imports its bootstrap from here."""
STDERR_TAIL_BYTES = 2048

log = logging.getLogger(__name__)


class ChildCrashed(Exception):
    """The child died without reporting an outcome; the message says how."""


class ChildProtocolError(Exception):
    """The child sent something other than the protocol's frames; it was killed."""


class ChildException(Exception):
    """Base of the exceptions re-raised from the child, named like the original."""


@functools.lru_cache(maxsize=256)
def _exception_class(name: str) -> type[ChildException]:
    cls = type(name, (ChildException,), {"__module__": "builtins"})
    return cls


def child_exception(name: str, message: str, child_traceback: str) -> ChildException:
    """An exception that reads like the child's (``ValueError: boom``), its traceback as a note."""
    if not (name.isidentifier() and len(name) <= 100):
        name = "ChildException"
    exc = _exception_class(name)(message)
    if child_traceback:
        exc.add_note("Traceback in the child process:\n" + child_traceback.rstrip("\n"))
        attach(exc, child_traceback)  # the child already left out the server's frames
    else:
        frameless(exc)
    return exc


def make_code_agent(settings: CodeSettings | None = None) -> CodeAgentFactory:
    """The registry's ``code_agent``: ``StartRun(code=...)`` -> a :class:`CodeAgent`.

    Refuses invalid code (:class:`~runyard.actors.code.validate.InvalidCode`, 422) and
    an unusable ``env`` before a run exists, for internal callers too (code
    longer than ``INLINE_CHARS`` only when it was checked off the loop first,
    :mod:`runyard.actors.code.check_process`; else its run ends with the child's
    compile error).  The
    factory owns the pool of pre-started children: ``await factory.aclose()``
    at shutdown kills the idle ones.
    """
    return CodeAgentFactory(settings or CodeSettings())


class CodeAgentFactory:
    """``StartRun`` -> :class:`CodeAgent`, all of them sharing one
    :class:`~runyard.actors.code.pool.WorkerPool`."""

    def __init__(self, settings: CodeSettings) -> None:
        self.settings = settings
        self.pool = WorkerPool(settings, PACKAGE_ROOT) if settings.pool_size > 0 else None

    def __call__(self, msg: StartRun) -> Agent:
        if msg.code is None:
            msg_ = "StartRun carries no code"
            raise ValueError(msg_)
        check_code_if_cheap(msg.code)
        check_env(msg.env)
        return CodeAgent(
            msg.code,
            env=msg.env,
            max_duration_s=msg.max_duration_s,
            settings=self.settings,
            pool=self.pool,
        )

    async def start(self) -> None:
        """Pre-start the pool's idle children now (else the first run starts them)."""
        if self.pool is not None:
            await self.pool.start()

    async def aclose(self) -> None:
        """Kill and reap the idle pre-started children (runs in progress are not touched)."""
        if self.pool is not None:
            await self.pool.aclose()


class CodeAgent:
    """One run's submitted code, run in a child process each time the agent is called."""

    def __init__(
        self,
        code: str,
        *,
        env: Mapping[str, str] | None = None,
        max_duration_s: float | None = None,
        settings: CodeSettings | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.code = code
        self.pool = pool
        self.env = dict(env or {})
        self.settings = settings or CodeSettings()
        self.cpu_s = self._cpu_limit(max_duration_s)

    def _cpu_limit(self, max_duration_s: float | None) -> int:
        s = self.settings
        if s.cpu_s is not None:
            return s.cpu_s
        if max_duration_s is not None:
            return math.ceil(max_duration_s) + s.cpu_margin_s
        return s.default_cpu_s

    # -- what the child gets -----------------------------------------------

    def child_env(self, workdir: str) -> dict[str, str]:
        """The child's whole environment: a few basics and the request's ``env``."""
        return {"HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", **self.env}

    def job(self, input_dict: dict[str, JSON], ctx: RunContext, workdir: str) -> dict[str, Any]:
        s = self.settings
        return {
            "t": "job",
            "code": self.code,
            "input": input_dict,
            "run_id": ctx.run_id,
            "user_id": ctx.user_id,
            "attempt": ctx.attempt,
            "limits": {
                "as_bytes": s.memory_mib * MIB,
                "cpu_s": self.cpu_s,
                "fsize_bytes": s.file_size_mib * MIB,
                "nofile": s.open_files,
                "core_bytes": 0,
            },
            "max_event_bytes": s.max_event_bytes,
            "max_result_bytes": s.max_result_bytes,
            "sandbox": {
                "landlock": s.landlock,
                "namespaces": s.namespaces,
                "hide": [PACKAGE_ROOT, *s.private_paths],
            },
            "workdir": workdir,
            "env": self.child_env(workdir),
        }

    # -- the run -------------------------------------------------------------

    async def __call__(self, input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
        s = self.settings
        loop = asyncio.get_running_loop()
        workdir = tempfile.mkdtemp(prefix="runyard-code-")
        worker: Worker | None = None
        writer: asyncio.StreamWriter | None = None
        side: list[asyncio.Task[None]] = []
        stderr_tail = bytearray()
        try:
            if self.pool is not None:
                worker = await self.pool.acquire()
            if worker is None:
                # Started neutral, like a pooled child: the dynamic loader reads the
                # env a process starts with, so the request's env (LD_PRELOAD...)
                # arrives only with the job and is applied inside the running child;
                # it then reaches only processes the code starts, which are sandboxed.
                worker = await spawn_worker(s, PACKAGE_ROOT, cwd=IDLE_CWD, env=dict(IDLE_ENV))
            proc = worker.proc
            reader, writer = await asyncio.open_connection(sock=worker.sock, limit=1 << 20)
            chunk = max(1024, min(64 * 1024, s.max_event_bytes // 4))
            pumps = [
                loop.create_task(_pump(worker.stdout, "stdout", ctx, chunk, None)),
                loop.create_task(_pump(worker.stderr, "stderr", ctx, chunk, stderr_tail)),
            ]
            side = [*pumps, loop.create_task(_forward_stop(ctx, writer))]

            outcome: dict[str, Any] | None = None
            try:
                writer.write(protocol.encode(self.job(input_dict, ctx, workdir)))
                await writer.drain()
                outcome = await self._relay(reader, ctx)
            except (ConnectionError, OSError):
                outcome = None  # the child went away; its exit status says why

            if outcome is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(s.exit_grace_s):
                        await proc.wait()
            else:
                await proc.wait()
            await end(worker, close_pipes=False)
            # Output still in the pipes belongs to this run: take it before returning.
            await asyncio.wait(pumps, timeout=1.0)
            return self._outcome(outcome, proc, bytes(stderr_tail))
        except Exception as exc:
            frameless(exc)  # the child's own exception keeps the child's traceback
            raise
        finally:
            for task in side:
                task.cancel()
            if worker is not None:
                # Every process of the run, escaped ones included, and the server's pipe ends.
                await end(worker)
                if writer is not None:
                    writer.close()
                else:
                    worker.sock.close()
            _remove_later(loop, workdir)

    async def _relay(self, reader: asyncio.StreamReader, ctx: RunContext) -> dict[str, Any] | None:
        """Events to ``ctx.emit`` as they come; returns the outcome frame, or None at EOF."""
        s = self.settings
        limit = protocol.frame_limit(s.max_event_bytes, s.max_result_bytes)
        while True:
            try:
                message = await protocol.read_message(reader, limit)
            except protocol.ProtocolError as exc:
                raise ChildProtocolError(f"the child broke the protocol: {exc}") from None
            if message is None:
                return None
            kind = message["t"]
            if kind == "event":
                type_, data = message.get("type"), message.get("data")
                if not isinstance(type_, str) or not isinstance(data, dict):
                    raise ChildProtocolError("the child sent a malformed event frame")
                await ctx.room()  # backpressure: the child waits while the store catches up
                try:
                    if type_ == OP_TYPE:
                        ctx.op(data.pop("kind", None), data.pop("name", None), **data)
                    else:
                        ctx.emit(type_, **data)
                except ValueError as exc:  # a type the ctx in the child would have refused
                    raise ChildProtocolError(f"the child sent an invalid event: {exc}") from None
                # Frames already buffered are read without a yield: a child that
                # writes fast would otherwise hold the loop for a buffer's worth.
                await ctx.pace()
            elif kind == "sandbox":
                status = str(message.get("landlock"))
                report = {"landlock": status}
                for key in ("namespaces", "network", "capabilities"):
                    if isinstance(message.get(key), str):
                        report[key] = message[key]
                _note_sandbox(status)
                _note_namespaces(report.get("namespaces"))
                contained = not report.get("namespaces", "").startswith("unavailable")
                if s.announce_sandbox or not status.startswith("abi ") or not contained:
                    ctx.emit("sandbox", **report)
            elif kind in ("result", "error", "stopped"):
                return message
            else:
                raise ChildProtocolError(f"the child sent an unknown frame {kind!r}")

    def _outcome(
        self, outcome: dict[str, Any] | None, proc: asyncio.subprocess.Process, stderr_tail: bytes
    ) -> JSON:
        if outcome is None:
            raise ChildCrashed(self.death_reason(proc.returncode, stderr_tail))
        kind = outcome["t"]
        if kind == "result":
            return outcome.get("value")
        if kind == "stopped":
            raise StopRequested
        name = str(outcome.get("type") or "ChildException")
        message = str(outcome.get("message") or "")
        if name == "MemoryError":
            limit = f"out of memory (address-space limit {self.settings.memory_mib} MiB)"
            message = f"{limit}: {message}" if message else limit
        raise child_exception(name, message, str(outcome.get("traceback") or ""))

    def death_reason(self, returncode: int | None, stderr_tail: bytes) -> str:
        """Why a child ended without reporting: the text a run's ``error`` shows."""
        s = self.settings
        tail = stderr_tail.decode("utf-8", "replace").strip()
        memory = f"out of memory (address-space limit {s.memory_mib} MiB)"
        if returncode is None:
            reason = "child ended without reporting an outcome"
        elif returncode < 0:
            reason = f"killed by signal {_signal_name(-returncode)}"
            if -returncode == signal.SIGXCPU:
                reason = f"CPU time limit exceeded ({self.cpu_s} s): {reason}"
            elif -returncode == signal.SIGXFSZ:
                reason = f"file size limit exceeded ({s.file_size_mib} MiB): {reason}"
        elif returncode == EXIT_OUT_OF_MEMORY:
            return memory
        elif returncode == EXIT_BAD_JOB:
            reason = "child could not read its job"
        elif returncode == EXIT_REPORT_FAILED:
            reason = "child could not report its outcome"
        else:
            reason = f"child exited with code {returncode}"
        if any(hint in tail for hint in ("MemoryError", "Cannot allocate memory", "out of memory")):
            reason = f"{memory}: {reason}"
        if tail:
            reason = f"{reason}; stderr: {tail[-500:]}"
        return reason


async def _pump(
    stream: asyncio.StreamReader,
    name: str,
    ctx: RunContext,
    chunk: int,
    tail: bytearray | None,
) -> None:
    """The child's raw fd output (subprocesses, C code, fatal errors) as ``stdout`` events."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        data = await stream.read(chunk)
        text = decoder.decode(data, final=not data)
        if tail is not None and data:
            tail += data
            del tail[:-STDERR_TAIL_BYTES]
        if text:
            await ctx.room()
            ctx.emit("stdout", stream=name, text=text)
        if not data:
            return


async def _forward_stop(ctx: RunContext, writer: asyncio.StreamWriter) -> None:
    await ctx.wait_stop()
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(protocol.encode({"t": "stop"}))
        await writer.drain()


_sandbox_noted: set[bool] = set()


def _note_sandbox(status: str) -> None:
    """Log the first child's Landlock status; a warning (once) when children run without it."""
    ok = status.startswith("abi ")
    if ok in _sandbox_noted:
        return
    _sandbox_noted.add(ok)
    if ok:
        log.info("run-code children are sandboxed with Landlock (%s)", status)
    else:
        log.warning(
            "run-code children run WITHOUT Landlock (%s): submitted code can read what the "
            "server's user can read (docs/run-code.md, isolation)",
            status,
        )


_namespaces_noted: set[bool] = set()


def _note_namespaces(status: str | None) -> None:
    """Log the first child's namespaces; a warning (once) when children run without them."""
    if status is None:
        return
    ok = not status.startswith("unavailable")
    if ok in _namespaces_noted:
        return
    _namespaces_noted.add(ok)
    if ok:
        log.info("run-code children run in their own namespaces (%s)", status)
    else:
        log.warning(
            "run-code children run WITHOUT a PID namespace (%s): a process the code "
            "detaches may outlive its run (docs/run-code.md, isolation)",
            status,
        )


def _remove_later(loop: asyncio.AbstractEventLoop, workdir: str) -> None:
    """Delete the run's directory off the loop (it may hold many files)."""
    try:
        loop.run_in_executor(None, shutil.rmtree, workdir, True)
    except RuntimeError:  # the executor is shut down: the loop is closing anyway
        shutil.rmtree(workdir, ignore_errors=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
