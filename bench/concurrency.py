"""6. Concurrency: N live sleeping runs in one server process.

Starts N ``sleeper`` runs (an hour each) from a few concurrent connections
within a time budget, then, with all of them alive: the server's RSS growth
per live run (``/proc/<pid>/status`` VmRSS after the runs minus before, both
after the server went quiet), the live-run count it reports, and the latency
of ``GET /runs/{id}`` on random live runs from one client.  The server is
killed afterwards (nobody waits for N runs to be stopped).
"""

from __future__ import annotations

import asyncio
import random
import time

from bench.common import (
    BenchFailure,
    Benchmark,
    Metric,
    Sizes,
    percentile,
    rss_kib,
    serving,
    settle,
    shares,
    start_run,
)

BODY = {"agent": "sleeper", "input_dict": {"seconds": 3600}}


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    n = sizes.conc_runs
    rng = random.Random(11)
    async with serving(kind, kill=True) as server:
        async with server.connection() as conn:
            warm = await start_run(conn, "sleeper", {"seconds": 3600})
            await conn.request("GET", f"/runs/{warm}")
        await settle(server)
        await asyncio.sleep(min(1.0, sizes.conc_quiet_s))
        rss_idle = rss_kib(server.pid)

        ids: list[str] = []
        refused: list[int] = []
        deadline = time.monotonic() + sizes.conc_budget_s
        per = shares(n, sizes.conc_clients)

        async def client(count: int) -> None:
            async with server.connection() as c:
                for _ in range(count):
                    if time.monotonic() > deadline:
                        return
                    resp = await c.request("POST", "/runs", json_body=BODY)
                    if resp.status == 202:
                        ids.append(resp.json()["run_id"])
                    else:
                        refused.append(resp.status)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in per))
        flood_s = time.perf_counter() - t0
        await asyncio.sleep(sizes.conc_quiet_s)
        await settle(server, timeout=120)
        await asyncio.sleep(min(1.0, sizes.conc_quiet_s))
        rss_live = rss_kib(server.pid)

        conn = await server.connection().connect()
        try:
            ready = (await conn.request("GET", "/readyz")).json()
            live = int(ready["detail"]["live_runs"]) - 1  # minus the warm-up run
            latencies: list[float] = []
            not_running = 0
            for run_id in rng.sample(ids, min(sizes.conc_gets, len(ids))):
                t = time.perf_counter()
                resp = await conn.request("GET", f"/runs/{run_id}")
                latencies.append(time.perf_counter() - t)
                if resp.status != 200 or b'"status":"running"' not in resp.body:
                    not_running += 1
        finally:
            await conn.close()
        rss_after = rss_kib(server.pid)
    accepted = len(ids)
    if accepted == 0:
        raise BenchFailure(f"{kind}: no run was accepted ({refused[:5]})")
    return {
        "accepted": float(accepted),
        "refused": float(len(refused)),
        "unfinished": float(n - accepted - len(refused)),
        "live": float(live),
        "start_rate": accepted / flood_s,
        "rss_idle_mib": rss_idle / 1024,
        "rss_live_mib": rss_live / 1024,
        "kib_per_run": (rss_live - rss_idle) / accepted,
        "rss_after_gets_mib": rss_after / 1024,
        "get_p50": percentile(latencies, 50) * 1000,
        "get_p99": percentile(latencies, 99) * 1000,
        "not_running": float(not_running),
    }


BENCH = Benchmark(
    name="concurrency",
    title="concurrency: N live sleeping runs in one process",
    metrics=[
        Metric("accepted", "live runs: accepted", "runs", better="info", agg="max"),
        Metric("live", "live runs: reported live", "runs", better="info", agg="max"),
        Metric("unfinished", "live runs: not started within budget", "", better="zero", agg="max"),
        Metric("not_running", "live runs: sampled GET not running", "", better="zero", agg="sum"),
        Metric("start_rate", "live runs: start rate (32 clients)", "runs/s"),
        Metric("rss_idle_mib", "live runs: RSS idle", "MiB", better="lower", fmt="{:.1f}"),
        Metric("rss_live_mib", "live runs: RSS with all live", "MiB", better="lower", fmt="{:.1f}"),
        Metric("kib_per_run", "live runs: RSS per live run", "KiB", better="lower", fmt="{:.2f}"),
        Metric("get_p50", "live runs: GET /runs/{id} p50", "ms", better="lower", fmt="{:.2f}"),
        Metric("get_p99", "live runs: GET /runs/{id} p99", "ms", better="lower", fmt="{:.2f}"),
    ],
    measure=measure,
    goals=["kib_per_run<=20", "get_p99<10", "unfinished==0"],
)
