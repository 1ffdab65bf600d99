"""8. Event cost, in process: an agent's ``ctx.emit`` to S subscriber queues.

runyard: a real :class:`~runyard.actors.runtime.Runtime` (no store) runs an agent
that waits until S subscriptions have joined, then emits N events in a tight
loop; each ``emit`` stamps, encodes, appends and pushes to every
subscription.  Timed inside the agent, around the loop.  Afterwards every
subscription is drained and must hold all N events in order.

Reference: a plain loop building one event dict per event and
``put_nowait``-ing it into S ``asyncio.Queue`` objects.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import BenchFailure, Benchmark, Metric, Sizes
from runyard.actors.agents import AgentCatalog
from runyard.actors.context import RunContext
from runyard.actors.messages import Caller, StartRun, Subscribe
from runyard.actors.records import JSON, Event
from runyard.actors.runtime import Runtime, RuntimeConfig
from runyard.actors.subscription import Subscription

CALLER = Caller("bench")


async def plain_queues(n: int, subs: int) -> float:
    queues: list[asyncio.Queue[dict[str, Any]]] = [asyncio.Queue() for _ in range(subs)]
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        event = {"seq": i, "ts": time.time(), "type": "tick", "data": {"i": i}}
        for q in queues:
            q.put_nowait(event)
    elapsed = time.perf_counter() - t0
    if any(q.qsize() != n for q in queues):
        raise BenchFailure("a plain queue lost events")
    return n * subs / elapsed


async def runyard_emit(n: int, subs: int) -> float:
    gate = asyncio.Event()
    timing: dict[str, float] = {}

    async def burst(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
        await gate.wait()
        emit = ctx.emit
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            emit("tick", i=i)
        timing["elapsed"] = time.perf_counter() - t0
        return None

    catalog = AgentCatalog()
    catalog.register("burst", burst)
    runtime = Runtime(RuntimeConfig(evict_interval_s=0), catalog=catalog)
    await runtime.start()
    try:
        started = await runtime.ask(StartRun(CALLER, "burst", {}))
        subscriptions: list[Subscription] = [
            await runtime.ask(Subscribe(CALLER, started.run_id, 0, max_queue=n + 10))
            for _ in range(subs)
        ]
        gate.set()
        for sub in subscriptions:
            seqs = []
            async for item in sub:
                if isinstance(item, Event) and item.type == "tick":
                    seqs.append(item.seq)
            if seqs != list(range(1, n + 1)):
                raise BenchFailure(f"a subscription got {len(seqs)} of {n} events, or out of order")
    finally:
        await runtime.shutdown(grace_s=0)
    return n * subs / timing["elapsed"]


async def measure(kind: str, sizes: Sizes) -> dict[str, float]:
    n, subs = sizes.emit_events, sizes.emit_subs
    run = plain_queues if kind == "baseline" else runyard_emit
    await run(min(n, 1000), subs)  # warm-up
    return {"deliveries_per_s": await run(n, subs)}


BENCH = Benchmark(
    name="emit",
    title="event cost: ctx.emit to 100 subscriber queues, in process",
    metrics=[Metric("deliveries_per_s", "emit -> 100 subscriber queues", "deliveries/s")],
    measure=measure,
    goals=["deliveries_per_s>=1000000"],
)
