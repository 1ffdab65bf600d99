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
        logger.info("signal %s: draining (up to %.0f s for live runs)", sig, self._grace_s)
        # A signal handler may interrupt the loop mid-step: only hand over, thread-safely.
        self._loop.call_soon_threadsafe(self._start_drain, gateway)

    def _start_drain(self, gateway: Gateway) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(gateway))

    async def _drain(self, gateway: Gateway) -> None:
        try:
            await gateway.drain(self._grace_s)
        finally:
            self.should_exit = True
