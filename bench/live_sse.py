"""2. Live SSE: one client follows one run that emits N small events as fast as it can.

The run is ``gated`` (chatty after a pause) so the client is subscribed
before the burst: every event travels live.  Events/s is measured at the
client from the first event to ``done``.  The durable baseline shows what
delivering only committed events costs the simplest design.
"""

from __future__ import annotations

from bench.common import KINDS, BenchFailure, Benchmark, Metric, Sizes, serving, start_run
from bench.rawhttp import check_contiguous

GATE_S = 0.5


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    n = sizes.live_events
    async with serving(kind) as server, server.connection() as conn:
        # warm-up run (imports, first-request costs)
        warm = await start_run(conn, "chatty", {"n": 200})
        await server.follow(warm, 30)

        run_id = await start_run(conn, "gated", {"delay": GATE_S, "n": n})
        result = await server.follow(run_id, 120)
    if result.status != 200 or not result.done:
        raise BenchFailure(f"{kind}: stream ended without done ({result.error})")
    events = [i for i in result.ids if i <= n]  # the last id is `done`
    lost, dup = check_contiguous(events, 0)
    if result.ids[-1] != n + 1:
        raise BenchFailure(f"{kind}: done has id {result.ids[-1]}, expected {n + 1}")
    assert result.t_first_event is not None
    assert result.t_done is not None
    elapsed = result.t_done - result.t_first_event
    return {
        "events_per_s": n / elapsed,
        "delivered": float(len(events)),
        "lost": float(lost),
        "dup": float(dup),
        "lagged": float(result.lagged),
    }


BENCH = Benchmark(
    name="live",
    title="live SSE: one client, one run emitting N events",
    metrics=[
        Metric("events_per_s", "live SSE, 1 client", "events/s"),
        Metric("lost", "live SSE lost events", "", better="zero", agg="sum"),
        Metric("dup", "live SSE duplicated events", "", better="zero", agg="sum"),
    ],
    measure=measure,
    goals=["events_per_s>=1.0x@baseline"],
    kinds=KINDS,
)
