"""``Client.stream`` / ``AsyncClient.stream`` across real dropped connections.

The client talks to a real server through :class:`~tests.tcp_proxy.TcpProxy`;
the test cuts (or freezes) that path while the run is in the middle of its
work.  Whatever happens to the path, the caller receives exactly seqs
``1..N``: no gap, no duplicate, ending with ``done``.  A transport that
counts stream requests shows that the client really reconnected.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from actors.agents import builtin_catalog
from actors.context import RunContext
from tests.live_server import TOKENS, LiveServer, LiveServerFactory
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async
from web.client import AsyncClient, Client, EventModel, RetryPolicy

pytestmark = pytest.mark.server

BEARER = {"Authorization": f"Bearer {TOKENS['alice']}"}
QUICK_RETRY = RetryPolicy(first_delay_s=0.02, max_delay_s=0.2, give_up_after_s=30)

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


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    catalog = builtin_catalog()
    catalog.register("phased", phased)
    return live_server(app_kwargs={"catalog": catalog}, heartbeat_s=0.2)


@pytest.fixture
def alice(live: LiveServer) -> Iterator[Client]:
    with Client(live.base_url, TOKENS["alice"]) as client:
        yield client


class CountingTransport(httpx.HTTPTransport):
    """httpx's own transport, counting the stream connections it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            self.streams += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            self.streams += 1
        return await super().handle_async_request(request)


def assert_exact_trace(events: list[EventModel], n_steps: int) -> None:
    assert [e.seq for e in events] == list(range(1, n_steps + 2))
    assert [e.type for e in events] == ["step"] * n_steps + ["done"]
    assert events[-1].data["status"] == "success"


async def stored_count(live: LiveServer, run_id: str) -> int:
    """How many events of the run the server holds (read directly, not through the proxy)."""
    async with httpx.AsyncClient(base_url=live.base_url, headers=BEARER) as http:
        count: int = (await http.get(f"/runs/{run_id}")).json()["event_count"]
        return count


async def drop_twice_mid_run(
    live: LiveServer, proxy: TcpProxy, run_id: str, gate: str, got: list[EventModel]
) -> None:
    """Phase 0 is received, then the path is cut twice while the run waits at its gates."""
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


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_sync_stream_gets_exactly_1_to_n_across_cuts(live: LiveServer, alice: Client) -> None:
    gate = uuid.uuid4().hex
    run_id = alice.start("phased", {"phases": [5, 5, 5], "gate": gate}).run_id
    got: list[EventModel] = []
    transport = CountingTransport()
    async with TcpProxy(live.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        with Client(url, TOKENS["alice"], retry=QUICK_RETRY, transport=transport) as client:

            def follow() -> None:
                for event in client.stream(run_id):
                    got.append(event)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lambda: anyio.to_thread.run_sync(follow, abandon_on_cancel=True))
                await drop_twice_mid_run(live, proxy, run_id, gate, got)
    assert_exact_trace(got, 15)
    assert transport.streams >= 3, transport.streams


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_async_stream_gets_exactly_1_to_n_across_cuts(
    live: LiveServer, alice: Client
) -> None:
    gate = uuid.uuid4().hex
    run_id = alice.start("phased", {"phases": [5, 5, 5], "gate": gate}).run_id
    got: list[EventModel] = []
    transport = AsyncCountingTransport()
    async with TcpProxy(live.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        async with AsyncClient(
            url, TOKENS["alice"], retry=QUICK_RETRY, transport=transport
        ) as client:

            async def follow() -> None:
                async for event in client.stream(run_id):
                    got.append(event)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(follow)
                await drop_twice_mid_run(live, proxy, run_id, gate, got)
    assert_exact_trace(got, 15)
    assert transport.streams >= 3, transport.streams
