"""Pre-started, single-use run-code workers.

Starting a child costs tens of milliseconds, nearly all of it the
interpreter coming up and importing :mod:`asyncio`.  The pool keeps
``CodeSettings.pool_size`` children that have done exactly that generic part
and nothing else: the interpreter is up, :mod:`runyard.actors.code.child` is
imported, and the child sits blocked on its socket waiting for a job.  An
idle worker runs in ``/`` with the environment ``LANG=C.UTF-8`` only; it
holds nothing that belongs to a run.

Everything per-run happens in the child after it reads its job (the job
carries it): the environment is replaced by the run's, the child moves into
the run's fresh temporary directory, lowers its rlimits and locks itself in
with Landlock, and only then executes the code (:func:`runyard.actors.code.child.main`).

Each worker serves exactly one run and then exits, so nothing can leak from
one run to the next.  :func:`end` stops a worker: SIGTERM to the keeper
(which kills the child's PID namespace, or what its subreaper adopted:
:mod:`runyard.actors.code.isolation`), then SIGKILL to its process group, then the
server closes its ends of the child's pipes, so a process that escaped
anyway cannot hold the server's descriptors.  A taken
worker is replaced in the background with ``asyncio`` subprocess APIs (the
loop never blocks).  An idle worker that died (or wrote anything) is
noticed (a watcher awaits every idle worker's exit; ``acquire`` checks the
socket and does a ``ping``/``pong`` round trip) and is never handed to a
run.  :meth:`WorkerPool.aclose` kills and reaps the idle workers; a worker
whose server vanished without closing the pool reads EOF on its socket and
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from runyard.actors.code import isolation, protocol
from runyard.actors.code.child import BOOTSTRAP
from runyard.actors.code.settings import CodeSettings

log = logging.getLogger(__name__)

IDLE_ENV = {"LANG": "C.UTF-8"}
IDLE_CWD = "/"
REAP_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 1.0
PING = protocol.encode({"t": "ping"})
PONG = protocol.encode({"t": "pong"})


KEEPER_GRACE_S = 1.0
"""How long the keeper gets to kill its namespace after SIGTERM before SIGKILL."""


@dataclass(eq=False)
class Worker:
    """A started child, the server's end of its socket, and the read ends of its fd 1/2."""

    proc: asyncio.subprocess.Process
    sock: socket.socket
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    pipes: list[asyncio.BaseTransport] = field(default_factory=list, repr=False)
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    def close_pipes(self) -> None:
        """Close the server's read ends of the child's stdout/stderr (idempotent)."""
        for transport in self.pipes:
            try:
                transport.close()
            except RuntimeError:  # its loop is closed: close the pipe itself
                pipe = transport.get_extra_info("pipe")
                if pipe is not None:
                    pipe.close()
        self.pipes.clear()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fit(self) -> bool:
        """Alive and silent: an idle worker must not have exited or said anything."""
        if self.proc.returncode is not None:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read and no EOF: still waiting for its job
        except OSError:
            return False
        return False  # EOF (it died) or bytes it had no business sending

    async def ping(self, timeout: float = PING_TIMEOUT_S) -> bool:
        """One ``ping``/``pong`` round trip: proof the child is alive right now.

        A signal sent before the ping (a kill) is handled before the child can
        answer, so a worker killed while idle is never taken for a live one.
        """
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        got = b""
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(self.sock, PING)
                while len(got) < len(PONG):
                    chunk = await loop.sock_recv(self.sock, len(PONG) - len(got))
                    if not chunk:
                        return False
                    got += chunk
        except (OSError, TimeoutError):
            return False
        return got == PONG


async def _read_pipe() -> tuple[asyncio.StreamReader, asyncio.BaseTransport, int]:
    """A pipe whose read end the server owns (a reader and its transport) and its write end."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    reader = asyncio.StreamReader(limit=1 << 16, loop=loop)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            os.fdopen(read_fd, "rb", buffering=0),
        )
    except BaseException:
        os.close(write_fd)
        raise
    return reader, transport, write_fd


async def spawn_worker(
    settings: CodeSettings, package_root: str, *, cwd: str, env: dict[str, str]
) -> Worker:
    """Start one child (``python -I -X utf8 -c BOOTSTRAP``), in its own session.

    The child gets its socket (``pass_fds``), ``/dev/null`` as stdin and
    pipes of its own as stdout/stderr; every other descriptor is closed.
    """
    parent_sock, child_sock = socket.socketpair()
    transports: list[asyncio.BaseTransport] = []
    write_fds: list[int] = []
    try:
        out, out_transport, out_w = await _read_pipe()
        transports.append(out_transport)
        write_fds.append(out_w)
        err, err_transport, err_w = await _read_pipe()
        transports.append(err_transport)
        write_fds.append(err_w)
        proc = await asyncio.create_subprocess_exec(
            settings.python,
            "-I",
            "-X",
            "utf8",
            "-c",
            BOOTSTRAP,
            package_root,
            str(child_sock.fileno()),
            isolation.argv_options(settings.network, settings.namespaces),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(child_sock.fileno(),),
            close_fds=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        parent_sock.close()
        for transport in transports:
            transport.close()
        raise
    finally:
        child_sock.close()
        for fd in write_fds:
            os.close(fd)
    return Worker(proc, parent_sock, out, err, transports)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def end(
    worker: Worker, keeper_grace_s: float = KEEPER_GRACE_S, *, close_pipes: bool = True
) -> None:
    """Stop every process of a worker and reap it; close the server's pipe ends.

    SIGTERM first: the keeper then kills its PID namespace (or the orphans its
    subreaper adopted), which a SIGKILL to the group would not let it do.
    SIGKILL to the process group after ``keeper_grace_s``, and always at the
    end for what the group still holds.  Safe to call twice.
    """
    proc = worker.proc
    try:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(keeper_grace_s):
                    await proc.wait()
        kill_group(proc.pid)
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REAP_TIMEOUT_S):
                    await proc.wait()
    finally:
        if close_pipes:
            worker.close_pipes()


async def discard(worker: Worker) -> None:
    """:func:`end` an idle worker and close its socket."""
    if worker.watcher is not None:
        worker.watcher.cancel()
        worker.watcher = None
    try:
        await end(worker)
    finally:
        worker.sock.close()


class WorkerPool:
    """``size`` idle workers, pre-started on the loop of the first :meth:`acquire`."""

    def __init__(self, settings: CodeSettings, package_root: str) -> None:
        self.settings = settings
        self.size = settings.pool_size
        self.package_root = package_root
        self._idle: deque[Worker] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filler: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self.spawned = 0
        """Workers pre-started so far; with ``spawn_seconds`` (their total start time,
        in seconds) what ``/metrics`` shows of the pool."""
        self.spawn_seconds = 0.0

    @property
    def idle_pids(self) -> list[int]:
        return [w.pid for w in self._idle]

    async def start(self) -> None:
        """Pre-start the idle workers now, on this loop (otherwise the first acquire does)."""
        if self._closed or self.size <= 0:
            return
        self._bind()
        self.fill()
        if self._filler is not None:
            await asyncio.shield(self._filler)

    async def acquire(self) -> Worker | None:
        """A fit idle worker, now the caller's; None when there is none (spawn one then)."""
        if self._closed or self.size <= 0:
            return None
        self._bind()
        taken: Worker | None = None
        while self._idle and taken is None:
            worker = self._idle.popleft()
            if worker.watcher is not None:
                worker.watcher.cancel()
                worker.watcher = None
            try:
                alive = worker.fit() and await worker.ping()
            except BaseException:  # cancelled while checking: the worker is nobody's
                self._later(discard(worker))
                raise
            if alive:
                taken = worker
            else:
                log.warning("run-code worker %d died while idle; replacing it", worker.pid)
                self._later(discard(worker))
        self.fill()
        return taken

    def fill(self) -> None:
        """Start topping the pool up in the background (no-op if already under way)."""
        if self._closed or self._loop is None:
            return
        if self._filler is None or self._filler.done():
            self._filler = self._loop.create_task(self._fill())

    async def aclose(self) -> None:
        """Kill and reap every idle worker; later acquires return None."""
        self._closed = True
        filler = self._filler
        if filler is not None and not filler.done():
            # Let a spawn in progress finish (it sees _closed and discards its worker).
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(REAP_TIMEOUT_S):
                    await asyncio.shield(filler)
            filler.cancel()
        idle = list(self._idle)
        self._idle.clear()
        await asyncio.gather(*(discard(w) for w in idle), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- internals ---------------------------------------------------------

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        # First use, or the previous loop is gone (its processes cannot be awaited
        # there any more): kill what it left and start over on this loop.
        for worker in self._idle:
            kill_group(worker.pid)
            worker.sock.close()
            worker.close_pipes()
        self._idle.clear()
        self._filler = None
        self._background.clear()
        self._loop = loop

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fill(self) -> None:
        while not self._closed and len(self._idle) < self.size:
            started = time.perf_counter()
            try:
                worker = await spawn_worker(
                    self.settings, self.package_root, cwd=IDLE_CWD, env=dict(IDLE_ENV)
                )
                self.spawned += 1
                self.spawn_seconds += time.perf_counter() - started
            except Exception as exc:
                log.warning("could not pre-start a run-code worker: %s", exc)
                return  # the next acquire tries again
            if self._closed:
                await discard(worker)
                return
            worker.watcher = asyncio.get_running_loop().create_task(self._watch(worker))
            self._idle.append(worker)

    async def _watch(self, worker: Worker) -> None:
        """An idle worker that exits is dropped and replaced."""
        await worker.proc.wait()
        if worker in self._idle:
            self._idle.remove(worker)
            worker.watcher = None
            log.warning(
                "run-code worker %d exited while idle (code %s); replacing it",
                worker.pid,
                worker.proc.returncode,
            )
            worker.sock.close()
            worker.close_pipes()
            self.fill()
