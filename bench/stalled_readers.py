"""10. Stalled readers: many SSE streams of one large stored run that never read.

A run's trace lives in memory while it runs and for a while after; later
only the store has it, and a reader of it is fed a page at a time
(:mod:`runyard.actors.stored_replay`).  A reader that stops reading must then cost
the server one page and a socket's worth of buffers, not the trace: before
paging, 300 stalled readers of a 300,000-event run took a server from 190
to 979 MiB.

Steps: a runyard server on SQLite runs ``chatty`` with N events to its end
and is stopped; a second server on the same data directory (so the run is
only in the store) reports its RSS idle (``/proc/<pid>/status`` VmRSS,
after one short read of the run to warm the code paths), then R raw
sockets with a small receive buffer each send ``GET /runs/{id}/stream``
and never read.  Once every socket has bytes waiting and the server's RSS
has stopped growing (or after :data:`STALL_S`, well inside the server's
30 s send timeout), the RSS is read again; the readers then hang up.
Only runyard is measured: the baselines keep no store to page from.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
import socket
import tempfile
import termios
import time
from pathlib import Path

from bench.common import (
    AUTH,
    HOST,
    BenchFailure,
    Benchmark,
    Metric,
    Server,
    Sizes,
    rss_kib,
    serving,
    settle,
    start_run,
)
from bench.rawhttp import Connection

RCVBUF_BYTES = 4096
"""Each reader's receive buffer (the kernel doubles it): a reader that stops at once."""
STALL_S = 20.0
"""Longest wait for the RSS to settle with every reader stalled (the send timeout is 30 s)."""
SETTLED_KIB = 1024
"""RSS that moved less than this over four samples (2 s) has settled."""


async def _finish_run(server: Server, n: int) -> str:
    """Run ``chatty`` with ``n`` events to its end (watched through the cheap run list)."""
    async with server.connection() as conn:
        run_id = await start_run(conn, "chatty", {"n": n})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            page = (await conn.request("GET", "/runs?limit=5")).json()["runs"]
            mine = next((r for r in page if r["run_id"] == run_id), None)
            if mine is not None and mine["status"] != "running":
                if mine["status"] != "success" or mine["event_count"] != n + 1:
                    raise BenchFailure(f"the {n}-event run ended {mine}")
                return run_id
            await asyncio.sleep(0.2)
    raise BenchFailure(f"the {n}-event run did not finish within 600 s")


async def _stalled_reader(port: int, run_id: str) -> socket.socket:
    """A connected socket that asked for the run's stream and will never read it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (HOST, port))
        headers = {"Host": f"{HOST}:{port}", "Accept": "text/event-stream", **AUTH}
        request = f"GET /runs/{run_id}/stream HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        await loop.sock_sendall(sock, (request + "\r\n").encode())
    except BaseException:
        sock.close()
        raise
    return sock


def _waiting_bytes(sock: socket.socket) -> int:
    """Bytes the server sent that sit unread in this socket's receive buffer."""
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


async def _settled_rss(server: Server, socks: list[socket.socket]) -> tuple[float, int]:
    """(highest RSS seen in KiB, readers that got bytes) once every reader is stalled.

    Stalled: every socket got bytes, the bytes waiting unread in them stopped
    changing (the server can push no more) and so did the server's RSS,
    over four samples (2 s).  Filling 300 readers takes seconds, so waiting
    for the RSS alone would stop while it still climbs.
    """
    deadline = time.monotonic() + STALL_S
    rss: list[int] = []
    unread: list[int] = []
    served = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rss.append(rss_kib(server.pid))
        waiting = [_waiting_bytes(s) for s in socks]
        served = sum(1 for w in waiting if w > 0)
        unread.append(sum(waiting))
        if (
            served == len(socks)
            and len(rss) >= 4
            and len(set(unread[-4:])) == 1
            and max(rss[-4:]) - min(rss[-4:]) < SETTLED_KIB
        ):
            break
    return float(max(rss)), served


async def _healthz_ms(server: Server) -> float:
    async with Connection(HOST, server.port) as conn:
        t0 = time.perf_counter()
        resp = await conn.request("GET", "/healthz")
        if resp.status != 200:
            raise BenchFailure(f"/healthz answered {resp.status} with the readers stalled")
        return (time.perf_counter() - t0) * 1000


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    n, readers = sizes.stalled_events, sizes.stalled_readers
    data_dir = Path(tempfile.mkdtemp(prefix="bench-stalled-"))
    env = {"RUNYARD_DATA_DIR": str(data_dir)}
    try:
        async with serving(kind, env) as first:
            run_id = await _finish_run(first, n)
            await settle(first)
        # A new process on the same store: the run is in no memory, only in the store.
        async with serving(kind, env) as server:
            warm = await server.stream(run_id)
            await asyncio.wait_for(warm.wait_headers(), 30)
            warm.close()
            await asyncio.sleep(1.0)
            before = rss_kib(server.pid)
            socks: list[socket.socket] = []
            try:
                t0 = time.perf_counter()
                for _ in range(readers):
                    socks.append(await _stalled_reader(server.port, run_id))
                connect_s = time.perf_counter() - t0
                peak, served = await _settled_rss(server, socks)
                health_ms = await _healthz_ms(server)
                waiting = sum(_waiting_bytes(s) for s in socks)
            finally:
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.close()
            await asyncio.sleep(2.0)
            after = rss_kib(server.pid)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "rss_idle_mib": before / 1024,
        "rss_stalled_mib": peak / 1024,
        "growth_mib": (peak - before) / 1024,
        "kib_per_reader": (peak - before) / readers,
        "rss_after_mib": after / 1024,
        "unserved": float(readers - served),
        "connect_s": connect_s,
        "healthz_ms": health_ms,
        "client_kib": waiting / 1024 / readers,
    }


BENCH = Benchmark(
    name="stalled",
    title="stalled readers of a large run only the store holds",
    metrics=[
        Metric("rss_idle_mib", "stalled readers: RSS idle", "MiB", better="lower", fmt="{:.1f}"),
        Metric(
            "rss_stalled_mib", "stalled readers: RSS with all stalled", "MiB", "lower", fmt="{:.1f}"
        ),
        Metric("growth_mib", "stalled readers: RSS growth", "MiB", better="lower", fmt="{:.1f}"),
        Metric("kib_per_reader", "stalled readers: RSS per reader", "KiB", "lower", fmt="{:.0f}"),
        Metric("rss_after_mib", "stalled readers: RSS after hang-up", "MiB", "lower", fmt="{:.1f}"),
        Metric("unserved", "stalled readers: streams never started", "", better="zero", agg="max"),
        Metric(
            "healthz_ms", "stalled readers: GET /healthz meanwhile", "ms", "lower", fmt="{:.1f}"
        ),
        Metric(
            "client_kib", "stalled readers: bytes unread per reader", "KiB", "info", fmt="{:.1f}"
        ),
    ],
    measure=measure,
    # 300 stalled readers of a 300k-event run once took 190 -> 979 MiB (+789).
    goals=["growth_mib<=200", "unserved==0"],
    kinds=("runyard",),
)
