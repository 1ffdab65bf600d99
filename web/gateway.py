"""How a route reaches the runtime: the one object the app keeps in ``app.state``.

Routes hold no run state; they ask the registry and shape the answer.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated, Any

from fastapi import Depends, Request

from runyard.actors.feed import Feed
from runyard.actors.messages import Shutdown
from runyard.actors.runtime import Runtime
from runyard.actors.stream_items import Closing
from runyard.actors.subscription import Subscription


class Gateway:
    """The runtime plus the web layer's view of open streams (for shutdown)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.streams: weakref.WeakSet[Subscription | Feed] = weakref.WeakSet()
        self.draining = asyncio.Event()

    async def ask(self, message: Any) -> Any:
        return await self.runtime.ask(message)

    async def drain(self, grace_s: float, reason: str = "server shutdown") -> None:
        """Refuse new runs, give live ones ``grace_s``, stop the rest, then close streams.

        Runs stopped here end ``stopped`` with ``reason``; their streams get
        ``done`` first.  Idempotent: the signal handler and the lifespan may
        both call it.
        """
        if not self.draining.is_set():
            self.draining.set()
            registry = self.runtime.registry
            if registry.is_alive():
                await self.runtime.ask(Shutdown(grace_s=grace_s, reason=reason))
            self.close_streams(reason)

    def close_streams(self, reason: str) -> None:
        """Tell every open stream to end with a 'come back later' frame."""
        for stream in list(self.streams):
            last_seq = stream.last_seq if isinstance(stream, Subscription) else 0
            stream.close(Closing(last_seq=last_seq, reason=reason))


def gateway_of(request: Request) -> Gateway:
    """The app's gateway; ``RuntimeError`` before the lifespan started it.

    Called directly by the hottest route (``POST /runs``): as a dependency it
    costs FastAPI one more sub-dependency to solve per request, about 15 us.
    """
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        msg = "the runtime is not running (app lifespan not started)"
        raise RuntimeError(msg)
    return gateway


async def get_gateway(request: Request) -> Gateway:
    # async on purpose: FastAPI runs a plain-def dependency in its thread pool.
    return gateway_of(request)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
