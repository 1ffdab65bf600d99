"""First event after start: from sending ``POST /runs`` to holding the run's first event.

What a user waits for between "start" and the first sign of life: the 202
(on a server that keeps its word, the start's commit), then a stream's
first event (there, that event's commit).  One client, one run at a time
(``echo``: one event, then ``done``), a new stream per run; p50 and p99
over ``first_runs`` runs after a warm-up.
"""

from __future__ import annotations

import time

from bench.common import (
    KINDS,
    BenchFailure,
    Benchmark,
    Metric,
    Sizes,
    percentile,
    serving,
    start_run,
)

WARM_UP = 10


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    latencies: list[float] = []
    async with serving(kind) as server, server.connection() as conn:
        for i in range(WARM_UP + sizes.first_runs):
            t0 = time.perf_counter()
            run_id = await start_run(conn, "echo", {"i": i})
            result = await server.follow(run_id, 30)
            if result.status != 200 or not result.done or result.ids[:1] != [1]:
                raise BenchFailure(f"{kind}: run {run_id} streamed {result.ids} ({result.error})")
            assert result.t_first_event is not None
            if i >= WARM_UP:
                latencies.append((result.t_first_event - t0) * 1000)
    return {"first_p50": percentile(latencies, 50), "first_p99": percentile(latencies, 99)}


BENCH = Benchmark(
    name="first",
    title="first event after start (POST /runs, then its stream)",
    metrics=[
        Metric("first_p50", "first event after start p50", "ms", better="lower", fmt="{:.2f}"),
        Metric("first_p99", "first event after start p99", "ms", better="lower", fmt="{:.2f}"),
    ],
    measure=measure,
    goals=["first_p50<=+10@baseline"],
    kinds=KINDS,
)
