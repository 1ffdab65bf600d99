"""The agents both servers run in the benchmarks: runyard's built-ins plus one gate.

``gated`` is ``chatty`` after a pause: it lets every subscriber connect
before the burst starts, so the live and fan-out numbers measure live
delivery, not a replay of what was emitted while clients were connecting.
Both servers register exactly these agents.
"""

from __future__ import annotations

from runyard.actors.agents import AgentCatalog, builtin_catalog, chatty
from runyard.actors.context import RunContext
from runyard.actors.records import JSON


async def gated(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Sleeps `delay` seconds, then behaves like `chatty` (n, batch, size)."""
    delay = input_dict.get("delay", 1.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool):
        raise ValueError("delay must be a number")
    await ctx.sleep(float(delay))
    return await chatty(input_dict, ctx)


def bench_catalog() -> AgentCatalog:
    catalog = builtin_catalog()
    catalog.register("gated", gated)
    return catalog
