"""``RunyardServer``: uvicorn, with runyard's drain before it stops listening.

Plain uvicorn on SIGTERM stops accepting, then waits for open connections;
sse-starlette's own hook would meanwhile cut every stream at once.  Neither
lets live runs finish.  Here the first SIGTERM/SIGINT starts the drain while
the server still answers: new starts get 503, live runs get
``shutdown_grace_s`` to finish, the rest are stopped and recorded, streams
receive ``done`` (or ``closing``), and only then does uvicorn exit.  A
second signal exits at once.  Unlike plain uvicorn, a drained shutdown does
not re-raise the signal: the process exits 0, because it ended as asked.

The whole shutdown is bounded by ``config.timeout_graceful_shutdown``
counted from the first signal, not after the drain: uvicorn then waits for
open connections (a client that stopped reading never finishes its
response), and would otherwise wait that long again after the drain.

:func:`http_options` picks the HTTP protocol (:mod:`runyard.web.http_limits`), and
:meth:`RunyardServer.serve` sets ``TCP_USER_TIMEOUT`` on the listening
sockets, which the accepted connections inherit.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import sys
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from runyard.actors.messages import (
    SYSTEM,
    Caller,
    GetRun,
    Introspect,
    LiveRunInfo,
    RegistrySnapshot,
)
from runyard.web.gateway import Gateway
from runyard.web.http_limits import MAX_HEAD_BYTES, TCP_USER_TIMEOUT_MS

logger = logging.getLogger("runyard.server")

MIN_CONNECTION_WAIT_S = 1.0
"""After the drain, open connections get at least this long to finish their responses."""

EXIT_RESERVE_S = 2.0
"""Of the shutdown bound, what is kept for after the connections: the app's own
shutdown (the runtime, the store's last writes) and the process's exit."""


def http_options() -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the HTTP/1.1 protocol.

    httptools (``uvicorn[standard]``) with :class:`runyard.web.http_limits.LimitedHttpToolsProtocol`
    (431 past :data:`~runyard.web.http_limits.MAX_HEAD_BYTES`, timeouts); without httptools,
    h11 with its own limit on an unfinished head (it answers 400, and has no timeouts).
    """
    if importlib.util.find_spec("httptools") is not None:
        from runyard.web.http_limits import LimitedHttpToolsProtocol

        return {"http": LimitedHttpToolsProtocol}
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}


def set_user_timeout(sock: socket.socket, milliseconds: int = TCP_USER_TIMEOUT_MS) -> bool:
    """``TCP_USER_TIMEOUT`` on a TCP socket (Linux); False where it does not apply."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or sys.platform != "linux":
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, milliseconds)
    except OSError:
        return False
    return True


class RunyardServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._drain_task: asyncio.Task[None] | None = None
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal = 0
        self._exit_by: float | None = None  # time.monotonic() when shutdown must be over
        # Our drain closes streams itself; sse-starlette must not cut them first.
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in sockets or ():
            set_user_timeout(sock)
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway = getattr(self._app.state, "gateway", None)
        if self._draining or self._loop is None or not isinstance(gateway, Gateway):
            # A second signal (or no app yet): exit now, as plain uvicorn would.
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        self._signal = sig
        bound = self.config.timeout_graceful_shutdown
        if bound is not None:
            self._exit_by = time.monotonic() + bound
        # A signal handler may interrupt the loop mid-step: only hand over, thread-safely.
        self._loop.call_soon_threadsafe(self._start_drain, gateway)

    def _start_drain(self, gateway: Gateway) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(gateway))

    async def _drain(self, gateway: Gateway) -> None:
        try:
            live = await _live_runs(gateway)
            logger.info(
                "signal %s: draining started: %d live run(s), %d open stream(s); "
                "new starts are refused, live runs get up to %g s to finish",
                self._signal,
                len(live),
                len(gateway.streams),
                self._grace_s,
            )
            await gateway.drain(self._grace_s)
            stopped = await _stopped_by_drain(gateway, live)
            logger.info(
                "drained: %d run(s) finished within the grace, %d stopped at its end%s; "
                "%d open stream(s) told to reconnect later",
                len(live) - len(stopped),
                len(stopped),
                f" ({', '.join(stopped[:20])}{' ...' if len(stopped) > 20 else ''})"
                if stopped
                else "",
                len(gateway.streams),
            )
        finally:
            if self._exit_by is not None:
                # What is left of the bound, not the whole bound again: uvicorn now
                # waits for open connections, and a stuck reader never closes its own.
                left = self._exit_by - EXIT_RESERVE_S - time.monotonic()
                self.config.timeout_graceful_shutdown = max(MIN_CONNECTION_WAIT_S, left)  # type: ignore[assignment]
            self.should_exit = True


async def _live_runs(gateway: Gateway) -> tuple[LiveRunInfo, ...]:
    """The runs live as the drain starts (empty if the registry cannot say)."""
    try:
        snapshot: RegistrySnapshot = await gateway.ask(Introspect(caller=SYSTEM))
    except Exception:  # only the log line is at stake: the drain must go on
        logger.exception("could not list the live runs before draining")
        return ()
    return snapshot.live


async def _stopped_by_drain(gateway: Gateway, live: tuple[LiveRunInfo, ...]) -> list[str]:
    """Which of ``live`` the drain stopped (they end ``stopped``, "server shutdown")."""
    stopped = []
    for info in live:
        try:
            record = await gateway.ask(GetRun(Caller(info.owner), info.run_id))
        except Exception:  # a run that cannot be read is not claimed either way
            continue
        if record.status == "stopped" and record.error == "server shutdown":
            stopped.append(info.run_id)
    return stopped
