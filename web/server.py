"""``RunyardServer``: uvicorn, with runyard's drain before it stops listening.

Plain uvicorn on SIGTERM stops accepting, then waits for open connections;
sse-starlette's own hook would meanwhile cut every stream at once.  Neither
lets live runs finish.  Here the first SIGTERM/SIGINT starts the drain while
the server still answers: new starts get 503, live runs get
``shutdown_grace_s`` to finish, the rest are stopped and recorded, streams
receive ``done`` (or ``closing``), and only then does uvicorn exit.  A
second signal exits at once.  Unlike plain uvicorn, a drained shutdown does
not re-raise the signal: the process exits 0, because it ended as asked.
"""

from __future__ import annotations

import asyncio
import logging
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

logger = logging.getLogger("runyard.server")


class RunyardServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._drain_task: asyncio.Task[None] | None = None
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal = 0
        # Our drain closes streams itself; sse-starlette must not cut them first.
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
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
