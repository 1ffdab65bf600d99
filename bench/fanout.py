"""5. Fan-out: S SSE subscribers on one run; every one must get every event, in order.

All subscribers connect (raw asyncio connections in this one process) while
the ``gated`` run waits; then it emits N events as fast as it can.  The
aggregate rate is S*N deliveries over the time from the first event any
subscriber saw to the last subscriber's ``done``.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Benchmark, Metric, Sizes, raise_fd_limit, serving, start_run
from bench.rawhttp import SSEStream, check_contiguous

CONNECT_PARALLEL = 50


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    subs, n = sizes.fanout_subs, sizes.fanout_events
    raise_fd_limit(subs * 2 + 1000)
    gate = 1.5 + subs * 0.004  # long enough for every subscriber to connect first
    async with serving(kind) as server, server.connection() as conn:
        run_id = await start_run(conn, "gated", {"delay": gate, "n": n})
        t_post = time.perf_counter()
        streams: list[SSEStream] = []
        limiter = asyncio.Semaphore(CONNECT_PARALLEL)

        async def connect() -> None:
            async with limiter:
                s = await server.stream(run_id)
                await s.wait_headers()
                streams.append(s)

        await asyncio.gather(*(connect() for _ in range(subs)))
        t_connected = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(*(s.finished for s in streams)), 60 + subs * n / 20_000
        )
    early = sum(1 for r in results if r.t_first_event is not None and r.t_first_event < t_connected)
    lost = dup = incomplete = lagged = 0
    for r in results:
        if not r.done:
            incomplete += 1
        lagged += r.lagged
        events = [i for i in r.ids if i <= n]
        lo, du = check_contiguous(events, 0)
        lost += lo + max(0, n - (events[-1] if events else 0))
        dup += du
    t_first = min(r.t_first_event for r in results if r.t_first_event is not None)
    t_last = max(r.t_done for r in results if r.t_done is not None)
    return {
        "deliveries_per_s": subs * n / (t_last - t_first),
        "connect_s": t_connected - t_post,
        "lost": float(lost),
        "dup": float(dup),
        "lagged": float(lagged),
        "early": float(early),
        "incomplete": float(incomplete),
    }


BENCH = Benchmark(
    name="fanout",
    title="fan-out: S subscribers on one run",
    metrics=[
        Metric("deliveries_per_s", "fan-out, 1,000 subscribers", "deliveries/s"),
        Metric("connect_s", "fan-out: connect all subscribers", "s", better="lower", fmt="{:.2f}"),
        Metric("lost", "fan-out: events lost", "", better="zero", agg="sum"),
        Metric("dup", "fan-out: events duplicated / out of order", "", better="zero", agg="sum"),
        Metric("lagged", "fan-out: subscribers cut off (lagged)", "", better="zero", agg="sum"),
        Metric("incomplete", "fan-out: subscribers without done", "", better="zero", agg="sum"),
        Metric("early", "fan-out: subscribers fed before all joined", "", better="info", agg="sum"),
    ],
    measure=measure,
    goals=[],
)
