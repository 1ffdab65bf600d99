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

Each worker serves exactly one run and then exits (its process group is
killed as today), so nothing can leak from one run to the next.  A taken
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
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from runyard.actors.code import protocol
from runyard.actors.code.child import BOOTSTRAP
from runyard.actors.code.settings import CodeSettings

log = logging.getLogger(__name__)

IDLE_ENV = {"LANG": "C.UTF-8"}
IDLE_CWD = "/"
REAP_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 1.0
PING = protocol.encode({"t": "ping"})
PONG = protocol.encode({"t": "pong"})


@dataclass(eq=False)
class Worker:
    """A started child and the server's end of its socket."""

    proc: asyncio.subprocess.Process
    sock: socket.socket
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

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


async def spawn_worker(
    settings: CodeSettings, package_root: str, *, cwd: str, env: dict[str, str]
) -> Worker:
    """Start one child (``python -I -X utf8 -c BOOTSTRAP``), in its own session."""
    parent_sock, child_sock = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            settings.python,
            "-I",
            "-X",
            "utf8",
            "-c",
            BOOTSTRAP,
            package_root,
            str(child_sock.fileno()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(child_sock.fileno(),),
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    return Worker(proc, parent_sock)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def discard(worker: Worker) -> None:
    """Kill a worker's process group, reap it and close its socket."""
    if worker.watcher is not None:
        worker.watcher.cancel()
        worker.watcher = None
    kill_group(worker.pid)
    try:
        if worker.proc.returncode is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REAP_TIMEOUT_S):
                    await worker.proc.wait()
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
            try:
                worker = await spawn_worker(
                    self.settings, self.package_root, cwd=IDLE_CWD, env=dict(IDLE_ENV)
                )
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
            self.fill()
