"""``Client.stream`` / ``AsyncClient.stream`` across real dropped connections.

The client talks to a real server through :class:`~tests.tcp_proxy.TcpProxy`;
the test cuts (or freezes) that path while the run is in the middle of its
work.  Whatever happens to the path, the caller receives exactly seqs
``1..N``: no gap, no duplicate, ending with ``done``.  A transport that
counts stream requests shows that the client really reconnected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anyio
import httpx
import pytest

from runyard.web.client import AsyncClient, Client, EventModel, RetryPolicy
from tests.live_server import TOKENS, LiveServer, LiveServerFactory
from tests.phased_agent import drop_twice_mid_run, open_gate, phased_catalog
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

pytestmark = pytest.mark.server

QUICK_RETRY = RetryPolicy(first_delay_s=0.02, max_delay_s=0.2, give_up_after_s=30)


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(app_kwargs={"catalog": phased_catalog()}, heartbeat_s=0.2)


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


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_a_reader_cut_off_with_lagged_resumes_exactly(
    live: LiveServer, alice: Client
) -> None:
    """The path freezes while a 40 MB burst is emitted: the server's queue for this
    reader overflows and it sends ``lagged``; the client reconnects from its seq."""
    n, gate = 20_000, uuid.uuid4().hex
    run_id = alice.start("phased", {"phases": [1, n], "gate": gate, "size": 2000}).run_id
    seqs: list[int] = []
    transport = AsyncCountingTransport()
    async with TcpProxy(live.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        async with AsyncClient(
            url, TOKENS["alice"], retry=QUICK_RETRY, transport=transport, stream_read_timeout_s=80
        ) as client:

            async def follow() -> None:
                async for event in client.stream(run_id):
                    seqs.append(event.seq)  # the seqs only: 40 MB of events need not stay

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(follow)
                await wait_until_async(lambda: len(seqs) >= 1, 20, "the first event")
                proxy.freeze()  # the reader stalls; the connection stays open
                open_gate(live, f"{gate}-1")

                def finished() -> bool:
                    page = alice.page(agent="phased", status="success", limit=1000)
                    return run_id in [run.run_id for run in page.runs]

                await wait_until_async(lambda: anyio.to_thread.run_sync(finished), 60, "the burst")
                assert transport.streams == 1
                proxy.heal()
    assert seqs == list(range(1, n + 3))
    assert transport.streams >= 2, transport.streams  # it was cut off and came back
