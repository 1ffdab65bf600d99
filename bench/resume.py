"""4. Resume exactness: many reconnects at random points, during replay and at the switch to live.

A ``ticker`` run emits N events a little apart.  Several "chains" follow it
from seq 0, each hanging up at its own random cut points and reconnecting
with ``Last-Event-ID`` (or ``?after=``, alternately) set to the last id it
read, like an ``EventSource``.  Chains start staggered across the run's
life: early reconnects land in a replay, the ones that have caught up land
right at the replay-to-live switch, late chains reconnect to the finished
run.  What each chain read, concatenated, must be exactly ``1..N`` then
``done``: every gap is a lost event, every repeat a duplicate.  Each frame's
``data.seq`` must equal its ``id`` too.
"""

from __future__ import annotations

import asyncio
import json
import random

from bench.common import AUTH, HOST, BenchFailure, Benchmark, Metric, Sizes, serving, start_run
from bench.rawhttp import check_contiguous, open_stream


async def _chain(
    port: int, run_id: str, n: int, cuts: list[int], use_header: bool, stats: dict[str, int]
) -> None:
    received: list[int] = []
    last = 0
    for i, cut in enumerate([*cuts, None]):
        path = f"/runs/{run_id}/stream"
        headers = dict(AUTH)
        if last:
            if (i % 2 == 0) == use_header:
                headers["Last-Event-ID"] = str(last)
            else:
                path += f"?after={last}"
        stream = await open_stream(HOST, port, path, headers=headers, mode="frames", stop_after=cut)
        r = await asyncio.wait_for(stream.finished, 60)
        if r.status != 200:
            raise BenchFailure(f"stream answered {r.status}: {r.error}")
        if i:
            stats["reconnects"] += 1
        first = r.first_frame
        if first is None or first[1] != "run":
            raise BenchFailure(f"first frame was {first!r}, not `run`")
        head = json.loads(first[2])
        if head.get("after") != last:
            stats["bad_cursor"] += 1
        if i:
            stats["to_running" if head.get("status") == "running" else "to_finished"] += 1
        for seq, _event, data in r.frames:
            if seq is None:
                continue
            if json.loads(data).get("seq") != seq:
                stats["bad_data"] += 1
            received.append(seq)
        if r.done:
            break
        if received:
            last = received[-1]
    lost, dup = check_contiguous(received, 0)
    top = max(received, default=0)
    lost += max(0, n + 1 - top)  # the tail never arrived (done is n + 1)
    stats["lost"] += lost
    stats["dup"] += dup
    stats["delivered"] += len(received)


async def measure(kind: str, sizes: Sizes, seed: int = 7) -> dict[str, float]:
    n = sizes.resume_events
    rng = random.Random(seed)
    stats = dict.fromkeys(
        ("reconnects", "lost", "dup", "delivered", "bad_cursor", "bad_data"), 0
    ) | {"to_running": 0, "to_finished": 0}
    async with serving(kind) as server, server.connection() as conn:
        run_id = await start_run(conn, "ticker", {"n": n, "interval": sizes.resume_interval_s})
        life = n * sizes.resume_interval_s * 1.3
        stagger = life / sizes.resume_chains
        chains = []
        for c in range(sizes.resume_chains):
            cuts = sorted(rng.sample(range(1, n + 1), sizes.resume_cuts))

            async def delayed(c: int = c, cuts: list[int] = cuts) -> None:
                await asyncio.sleep(c * stagger)
                await _chain(server.port, run_id, n, cuts, c % 2 == 0, stats)

            chains.append(delayed())
        await asyncio.gather(*chains)
    expected = sizes.resume_chains * sizes.resume_cuts
    if stats["reconnects"] != expected:
        raise BenchFailure(f"{kind}: {stats['reconnects']} reconnects, expected {expected}")
    return {k: float(v) for k, v in stats.items()}


BENCH = Benchmark(
    name="resume",
    title="resume exactness: reconnects at random points",
    metrics=[
        Metric("reconnects", "resume: reconnects per repetition", "", better="info", agg="max"),
        Metric("to_running", "  of them while the run was live", "", better="info", agg="max"),
        Metric("lost", "resume: events lost (all reps)", "", better="zero", agg="sum"),
        Metric("dup", "resume: events duplicated (all reps)", "", better="zero", agg="sum"),
        Metric("bad_data", "resume: data.seq != id", "", better="zero", agg="sum"),
        Metric("bad_cursor", "resume: wrong `after` in run frame", "", better="zero", agg="sum"),
    ],
    measure=measure,
    goals=["lost==0", "dup==0"],
)
