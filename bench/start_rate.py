"""1. Start rate: ``POST /runs`` of a 10-event agent, 1 and N concurrent clients.

All three servers: the plain baseline answers before anything is stored, so
runyard's goal is set against the durable one (same promise: 202 once the
run is committed, one transaction per ~5 ms window).
"""

from __future__ import annotations

import asyncio
import time

from bench.common import KINDS, BenchFailure, Benchmark, Metric, Sizes, percentile, serving, shares
from bench.rawhttp import Connection

BODY = {"agent": "ticker", "input_dict": {"n": 10, "interval": 0}}


async def _client(conn: Connection, count: int, latencies: list[float], ids: set[str]) -> None:
    for _ in range(count):
        t0 = time.perf_counter()
        resp = await conn.request("POST", "/runs", json_body=BODY)
        latencies.append(time.perf_counter() - t0)
        if resp.status != 202:
            raise BenchFailure(f"POST /runs answered {resp.status}: {resp.body[:200]!r}")
        ids.add(resp.json()["run_id"])


async def _phase(server_conns: list[Connection], total: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    ids: set[str] = set()
    per = shares(total, len(server_conns))
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_client(c, n, latencies, ids) for c, n in zip(server_conns, per, strict=True))
    )
    elapsed = time.perf_counter() - t0
    return total / elapsed, latencies, len(ids)


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    out: dict[str, float] = {}
    async with serving(kind) as server:
        conns = [await server.connection().connect() for _ in range(sizes.start_clients)]
        try:
            # warm-up: first requests import and compile lazily on both servers
            await _phase(conns[:1], 20)
            phases = (
                ("seq", conns[:1], sizes.start_seq_runs),
                ("conc", conns, sizes.start_conc_runs),
            )
            for name, clients, total in phases:
                rate, lat, distinct = await _phase(clients, total)
                if distinct != total:
                    raise BenchFailure(f"{kind}: {distinct} distinct run ids for {total} starts")
                out[f"{name}_rate"] = rate
                out[f"{name}_p50"] = percentile(lat, 50) * 1000
                out[f"{name}_p99"] = percentile(lat, 99) * 1000
        finally:
            for c in conns:
                await c.close()
    return out


BENCH = Benchmark(
    name="start",
    title="start rate (POST /runs, ticker n=10 interval=0)",
    metrics=[
        Metric("seq_rate", "start rate, 1 client", "runs/s"),
        Metric("seq_p50", "start p50, 1 client", "ms", better="lower", fmt="{:.2f}"),
        Metric("seq_p99", "start p99, 1 client", "ms", better="lower", fmt="{:.2f}"),
        Metric("conc_rate", "start rate, 20 clients", "runs/s"),
        Metric("conc_p50", "start p50, 20 clients", "ms", better="lower", fmt="{:.2f}"),
        Metric("conc_p99", "start p99, 20 clients", "ms", better="lower", fmt="{:.2f}"),
    ],
    measure=measure,
    # A start is acknowledged once it is stored: the durable baseline is the bar.
    goals=["seq_rate>=0.9x@durable", "conc_rate>=0.9x@durable"],
    kinds=KINDS,
)
