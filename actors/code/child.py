"""The run-code child: runs one submitted agent, in its own process, then exits.

Started by :class:`runyard.actors.code.agent.CodeAgent` as
``python -I -X utf8 -c BOOTSTRAP <package root> <fd>``: isolated mode (no
``PYTHON*`` variables, no user site, no current directory on ``sys.path``),
``<fd>`` the child's end of the socket described in
:mod:`runyard.actors.code.protocol`.  The bootstrap imports this module from
``<package root>`` and takes that entry off ``sys.path`` again before the
submitted code runs.

A child may be started ahead of its run (:mod:`runyard.actors.code.pool`): until
the job arrives it only answers ``ping`` frames.  ``main`` reads the job,
takes on the run's environment and temporary directory (:func:`enter_run`),
lowers its own resource limits (soft = hard, so the
submitted code cannot raise them back; done here rather than in a
``preexec_fn`` because that is unsafe in a threaded server and disables
``vfork``), locks itself in with Landlock (:mod:`runyard.actors.code.sandbox`; while
it is still the only thread, so every thread and process it starts later is
locked in too) and sends a ``sandbox`` frame saying whether that worked,
then:

- replaces ``sys.stdout``/``sys.stderr`` with writers that send ``stdout``
  events (``{"stream": "stdout"|"stderr", "text": ...}``, one per line or
  batch of lines) and puts a handler on the root logger that sends ``log``
  events.  This process serves exactly one run, so swapping process-wide
  streams cannot leak one run's output into another's (docs/design.md,
  "Lessons we apply");
- executes the code in a fresh module (``__agent__``), finds ``run`` and
  calls ``asyncio.run(run(input_dict, ctx))``;
- sends back the result (JSON, or a clear error when it is not), the
  exception (type, message, traceback), or ``stopped``; then exits at once
  with ``os._exit`` so threads the code left behind cannot hold the run.

The stop arrives as a ``stop`` frame read by a daemon thread, which sets a
thread-safe flag: ``ctx.stopping`` and ``ctx.check_stop()`` see it even in a
loop that never awaits.  If the socket reaches EOF, the server is gone and
the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import linecache
import logging
import os
import resource
import socket
import sys
import threading
import traceback
import types
from collections.abc import Coroutine
from typing import Any

from runyard.actors.code import protocol, sandbox
from runyard.actors.context import StopRequested, check_event_type

MODULE_NAME = "__agent__"
FILENAME = "<agent>"
JOB_LIMIT = 64 * 1024 * 1024
MAX_TRACEBACK_CHARS = 64 * 1024
STREAM_FLUSH_CHARS = 64 * 1024

EXIT_OK = 0
EXIT_BAD_JOB = 2
EXIT_REPORT_FAILED = 70
EXIT_OUT_OF_MEMORY = 71
EXIT_NO_SANDBOX = 72
"""Exit codes the server explains; anything else is reported as the bare code."""

BOOTSTRAP = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from runyard.actors.code.child import main\n"
    "del sys.path[0]\n"
    "main(int(sys.argv[2]))\n"
)
"""What ``python -I -c`` runs: import this module from the package root, then forget the root."""


class Channel:
    """The child's end of the socket; ``send`` is safe from any thread."""

    def __init__(self, sock: socket.socket, max_event_bytes: int) -> None:
        self.sock = sock
        self.max_event_bytes = max_event_bytes
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        frame = protocol.encode(message)
        with self._lock:
            self.sock.sendall(frame)

    def event(self, type: str, data: dict[str, Any]) -> None:
        self.send(protocol.event_message(type, data, self.max_event_bytes))


class ChildContext:
    """The submitted code's ``ctx``: the same surface as :class:`runyard.actors.context.RunContext`.

    ``emit`` returns None here (the run actor numbers events in the server;
    waiting for the number would cost a round trip per event).
    """

    def __init__(self, channel: Channel, run_id: str, user_id: str, attempt: int) -> None:
        self.run_id = run_id
        self.user_id = user_id
        self.attempt = attempt
        self._channel = channel
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None

    def emit(self, type: str, /, **data: Any) -> None:
        """Record one event of ``type`` with ``data`` in this run's trace."""
        check_event_type(type)
        _flush_streams()
        self._channel.event(type, data)

    @property
    def stopping(self) -> bool:
        """True once a stop was requested; finish up and return."""
        return self._stop.is_set()

    def check_stop(self) -> None:
        """Raise :class:`~runyard.actors.context.StopRequested` if a stop was requested."""
        if self._stop.is_set():
            raise StopRequested

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise ``StopRequested`` as soon as a stop arrives."""
        event = self._bind()
        if event.is_set():
            raise StopRequested
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return
        raise StopRequested

    async def wait_stop(self) -> None:
        """Wait until a stop is requested."""
        await self._bind().wait()

    def _bind(self) -> asyncio.Event:
        with self._lock:
            loop = asyncio.get_running_loop()
            if self._async_stop is None or self._loop is not loop:
                self._loop = loop
                self._async_stop = asyncio.Event()
                if self._stop.is_set():
                    self._async_stop.set()
            return self._async_stop

    def _request_stop(self) -> None:
        """Called from the control thread."""
        with self._lock:
            self._stop.set()
            loop, event = self._loop, self._async_stop
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(event.set)


class EventStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of the child: complete lines become ``stdout`` events."""

    def __init__(self, channel: Channel, stream: str, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._fd = fd
        self._buffer: list[str] = []
        self._size = 0
        self._lock = threading.RLock()

    encoding = "utf-8"
    errors = "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that hands sys.stdout to a subprocess gets the real pipe, which
        # the server relays too.
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            msg = f"write() argument must be str, not {type(text).__name__}"
            raise TypeError(msg)
        with self._lock:
            self._buffer.append(text)
            self._size += len(text)
            if "\n" in text or self._size >= STREAM_FLUSH_CHARS:
                self._send(complete_lines_only=self._size < STREAM_FLUSH_CHARS)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._send(complete_lines_only=False)

    def _send(self, *, complete_lines_only: bool) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        rest = ""
        if complete_lines_only:
            cut = text.rfind("\n") + 1
            text, rest = text[:cut], text[cut:]
        self._buffer = [rest] if rest else []
        self._size = len(rest)
        if text:
            self._channel.event("stdout", {"stream": self._stream, "text": text})


class EventLogHandler(logging.Handler):
    """``logging`` records become ``log`` events (level, logger, message[, exception])."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(logging.NOTSET)
        self._channel = channel
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data: dict[str, Any] = {
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                data["exception"] = self._formatter.formatException(record.exc_info)
            _flush_streams()
            self._channel.event("log", data)
        except Exception:
            self.handleError(record)


_streams: list[EventStream] = []


def _flush_streams() -> None:
    """Keep order: pending print output goes out before the next event."""
    for stream in _streams:
        stream.flush()


def enter_run(job: dict[str, Any]) -> None:
    """Take on the run's environment and directory (a pre-started child had neither).

    ``os.environ`` (and ``os.environb``, a separate mapping) become exactly the
    job's ``env``; the process moves into the job's fresh ``workdir``.  Nothing
    of the idle child's own start-up environment is left for the code to see.
    """
    env = job.get("env")
    if isinstance(env, dict):
        os.environb.clear()
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.environb.update({k.encode(): v.encode() for k, v in os.environ.items()})
        with contextlib.suppress(Exception):
            import locale

            locale.setlocale(locale.LC_CTYPE, "")
        tempfile = sys.modules.get("tempfile")
        if tempfile is not None:
            vars(tempfile)["tempdir"] = None  # recomputed from the new TMPDIR
    workdir = job.get("workdir")
    if isinstance(workdir, str) and workdir:
        os.chdir(workdir)


def apply_limits(limits: dict[str, Any]) -> None:
    """Lower this process's rlimits (soft = hard: the code cannot raise them again)."""
    names = {
        "as_bytes": resource.RLIMIT_AS,
        "cpu_s": resource.RLIMIT_CPU,
        "fsize_bytes": resource.RLIMIT_FSIZE,
        "nofile": resource.RLIMIT_NOFILE,
        "core_bytes": resource.RLIMIT_CORE,
    }
    for key, which in names.items():
        value = limits.get(key)
        if value is None:
            continue
        _, hard = resource.getrlimit(which)
        want = int(value)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        soft = want
        if which == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY:
            # SIGXCPU at the soft limit (reported as such), SIGKILL a second later.
            resource.setrlimit(which, (soft, want + 1))
        else:
            resource.setrlimit(which, (soft, want))


def lock_in(channel: Channel, settings: dict[str, Any]) -> None:
    """Apply Landlock as ``settings`` say and report the outcome in a ``sandbox`` frame.

    ``settings``: ``landlock`` (``"auto"``: apply when the kernel can,
    ``"require"``: refuse to run the code without it, ``"off"``) and
    ``hide`` (paths no grant may contain).  Runs before any other thread
    exists: Landlock restricts the calling thread and what it starts.
    """
    mode = settings.get("landlock", "auto")
    if mode == "off":
        status = "unavailable: turned off (CodeSettings.landlock)"
    else:
        hide = list(settings.get("hide") or ())
        # The bootstrap put the package root on sys.path only to import this
        # module; if it is still there, it is an install location (site-packages),
        # not a source tree holding the data directory.
        root = sys.argv[1] if len(sys.argv) > 1 else ""
        if root and root not in sys.path and root not in hide:
            hide.append(root)
        status = sandbox.apply(os.getcwd(), hide)
    channel.send({"t": "sandbox", "landlock": status})
    if mode == "require" and not status.startswith("abi "):
        channel.send(
            {
                "t": "error",
                "type": "SandboxUnavailable",
                "message": f"Landlock is required but {status}",
                "traceback": "",
            }
        )
        os._exit(EXIT_NO_SANDBOX)


def _control(sock: socket.socket, ctx: ChildContext) -> None:
    """The control thread: stop frames set the flag; EOF means the server is gone."""
    try:
        while True:
            message = protocol.recv_message(sock, 1 << 16)
            if message is None:
                break
            if message.get("t") == "stop":
                ctx._request_stop()
    except (OSError, protocol.ProtocolError):
        pass
    os._exit(0)


def _describe(exc: BaseException) -> dict[str, Any]:
    # Start the traceback at the submitted code: this module's and asyncio's
    # frames above it are noise to the author.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "...\n" + text[-MAX_TRACEBACK_CHARS:]
    try:
        message = str(exc)
    except Exception as err:  # a broken __str__
        message = f"<unprintable {type(exc).__name__}: {err!r}>"
    return {"t": "error", "type": type(exc).__name__, "message": message, "traceback": text}


def _result_message(value: Any, max_bytes: int) -> dict[str, Any]:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return {
            "t": "error",
            "type": "TypeError",
            "message": (
                f"run() returned a value that is not JSON ({type(value).__name__}): {exc}; "
                "return dicts, lists, strings, numbers, booleans or None"
            ),
            "traceback": "",
        }
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return {
            "t": "error",
            "type": "ValueError",
            "message": f"run() returned {size} bytes of JSON, more than the limit of {max_bytes}",
            "traceback": "",
        }
    return {"t": "result", "value": value}


def load_agent(code: str) -> Any:
    """Execute ``code`` as the fresh module ``__agent__``; return its ``run``."""
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = FILENAME
    sys.modules[MODULE_NAME] = module
    # Tracebacks show the submitted source lines.
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(keepends=True), FILENAME)
    exec(compile(code, FILENAME, "exec", dont_inherit=True), module.__dict__)
    run = module.__dict__.get("run")
    if run is None:
        msg = "the code defines no `run`"
        raise NameError(msg)
    return run


async def _call(run: Any, input_dict: dict[str, Any], ctx: ChildContext) -> Any:
    coro = run(input_dict, ctx)
    if not isinstance(coro, Coroutine):
        msg = f"run() must be `async def`; it returned {type(coro).__name__}"
        raise TypeError(msg)
    return await coro


def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    job = protocol.recv_message(sock, JOB_LIMIT)
    while job is not None and job.get("t") == "ping":  # a pool checking this child is alive
        sock.sendall(protocol.encode({"t": "pong"}))
        job = protocol.recv_message(sock, JOB_LIMIT)
    if job is None or job.get("t") != "job":
        os._exit(EXIT_BAD_JOB)
    enter_run(job)
    apply_limits(job.get("limits") or {})
    channel = Channel(sock, int(job["max_event_bytes"]))
    lock_in(channel, job.get("sandbox") or {})
    ctx = ChildContext(channel, job["run_id"], job["user_id"], int(job.get("attempt", 0)))

    threading.stack_size(256 * 1024)
    threading.Thread(target=_control, args=(sock, ctx), name="runyard-control", daemon=True).start()
    threading.stack_size(0)

    out = EventStream(channel, "stdout", 1)
    err = EventStream(channel, "stderr", 2)
    _streams.extend((out, err))
    sys.stdout = out
    sys.stderr = err
    root = logging.getLogger()
    root.handlers[:] = [EventLogHandler(channel)]
    root.setLevel(logging.INFO)

    try:
        run = load_agent(job["code"])
        value = asyncio.run(_call(run, job.get("input") or {}, ctx))
    except StopRequested:
        message: dict[str, Any] = {"t": "stopped"}
    except BaseException as exc:  # SystemExit, KeyboardInterrupt too: report, do not vanish
        try:
            message = _describe(exc)
        except BaseException:  # e.g. no memory left to format the traceback
            message = {"t": "error", "type": type(exc).__name__, "message": "", "traceback": ""}
    else:
        message = _result_message(value, int(job["max_result_bytes"]))
    code = EXIT_OK
    try:
        _flush_streams()
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        channel.send(message)
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    except BaseException:
        code = EXIT_REPORT_FAILED
    finally:
        os._exit(code)
