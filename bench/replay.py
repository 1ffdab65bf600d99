"""3. Replay: reconnect from seq 0 to a finished run of N events; events/s at the client."""

from __future__ import annotations

import asyncio
import time

from bench.common import BenchFailure, Benchmark, Metric, Sizes, median, serving, settle, start_run
from bench.rawhttp import check_contiguous


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    n = sizes.replay_events
    rates: list[float] = []
    firsts: list[float] = []
    async with serving(kind) as server, server.connection() as conn:
        run_id = await start_run(conn, "chatty", {"n": n})
        # Follow it to the end once: the run is then finished (and warm).
        result = await server.follow(run_id, 300)
        if not result.done:
            raise BenchFailure(f"{kind}: the {n}-event run did not finish ({result.error})")
        await settle(server)  # runyard: the finished record is in the store
        await asyncio.sleep(0.5)
        for _ in range(sizes.replay_reads):
            t0 = time.perf_counter()
            result = await server.follow(run_id, 300)
            if not result.done or result.status != 200:
                raise BenchFailure(f"{kind}: replay ended without done ({result.error})")
            assert result.t_done is not None
            assert result.t_first_event is not None
            lost, dup = check_contiguous(result.ids, 0)
            if lost or dup or result.ids[-1] != n + 1:
                raise BenchFailure(f"{kind}: replay lost {lost}, duplicated {dup}")
            rates.append((n + 1) / (result.t_done - t0))
            firsts.append((result.t_first_event - t0) * 1000)
    return {"events_per_s": median(rates), "first_ms": median(firsts)}


BENCH = Benchmark(
    name="replay",
    title="replay of a finished run from seq 0",
    metrics=[
        Metric("events_per_s", "replay from seq 0", "events/s"),
        Metric("first_ms", "replay: time to first event", "ms", better="lower", fmt="{:.1f}"),
    ],
    measure=measure,
    goals=["events_per_s>=2.0x"],
)
