"""``phased``: a test agent that emits in phases, each after a gate the test opens.

So a test can drop a connection while the run is provably in the middle of
its work (blocked at a gate, events before it stored, events after it not
yet emitted).  Register it in a server's catalog with :func:`phased_catalog`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Any

import httpx

from runyard.actors.agents import AgentCatalog, builtin_catalog
from runyard.actors.context import RunContext
from tests.live_server import TOKENS, LiveServer
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

BEARER = {"Authorization": f"Bearer {TOKENS['alice']}"}

GATES: dict[str, asyncio.Event] = {}
"""Phases waiting to be released by a test (on the server's loop)."""


def _gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


async def phased(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    """Emits ``phases[k]`` events per phase; phase k > 0 waits for gate ``<gate>-k``.

    So a test can drop the connection while the run is provably mid-run.
    """
    phases = [int(n) for n in input_dict["phases"]]
    for k, count in enumerate(phases):
        if k:
            await _gate(f"{input_dict['gate']}-{k}").wait()
        for i in range(count):
            ctx.emit("step", phase=k, i=i, pad="x" * int(input_dict.get("size", 0)))
            if i % 100 == 99:
                await ctx.ready()
    return {"phases": len(phases)}


def open_gate(live: LiveServer, name: str) -> None:
    live.gateway.runtime.loop.call_soon_threadsafe(lambda: _gate(name).set())


def phased_catalog() -> AgentCatalog:
    """The built-in agents plus ``phased``."""
    catalog = builtin_catalog()
    catalog.register("phased", phased)
    return catalog


async def stored_count(live: LiveServer, run_id: str) -> int:
    """How many events of the run the server holds (read directly, not through the proxy)."""
    async with httpx.AsyncClient(base_url=live.base_url, headers=BEARER) as http:
        count: int = (await http.get(f"/runs/{run_id}")).json()["event_count"]
        return count


async def drop_twice_mid_run(
    live: LiveServer, proxy: TcpProxy, run_id: str, gate: str, got: Sized
) -> None:
    """Once ``got`` (what the client received) holds phase 0, cut the path twice mid-run.

    For ``phased`` with ``phases=[5, 5, 5]``; the run ends after the second cut.
    """
    await wait_until_async(lambda: len(got) >= 5, 20, "phase 0 through the proxy")
    proxy.cut()  # the open stream is reset while the run is blocked mid-run
    open_gate(live, f"{gate}-1")  # phase 1 happens while the client cannot connect

    async def phase_1_stored() -> bool:
        return await stored_count(live, run_id) >= 10

    await wait_until_async(phase_1_stored, 20, "phase 1 stored during the cut")
    assert len(got) == 5
    proxy.heal()
    await wait_until_async(lambda: len(got) >= 10, 20, "phase 1 after the first drop")
    proxy.cut()
    proxy.heal()
    open_gate(live, f"{gate}-2")
