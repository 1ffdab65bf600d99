"""The agent catalog and the built-in agents.

Internal services register their own agents into a catalog and start them
by name; the built-ins exist for demos, tests and benchmarks and each one
exercises one behaviour of the run supervisor (events, stop, crash, load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from runyard.actors.context import Agent, RunContext, StopRequested
from runyard.actors.errors import UnknownAgent
from runyard.actors.records import JSON


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    agent: Agent
    description: str


class AgentCatalog:
    """Named agents a run can be started with."""

    def __init__(self) -> None:
        self._entries: dict[str, CatalogEntry] = {}

    def register(self, name: str, agent: Agent, description: str = "") -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            msg = f"agent name {name!r} must be letters, digits, '-' or '_'"
            raise ValueError(msg)
        self._entries[name] = CatalogEntry(name, agent, description or (agent.__doc__ or ""))

    def get(self, name: str) -> Agent:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownAgent(f"unknown agent {name!r}; known agents: {known}")
        return entry.agent

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))


# --------------------------------------------------------------------------
# Built-ins


def _number(input_dict: dict[str, JSON], key: str, default: float) -> float:
    value = input_dict.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"input {key!r} must be a number, got {value!r}"
        raise ValueError(msg)
    return float(value)


async def echo(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits one `echo` event with the input and returns the input."""
    ctx.emit("echo", input=input_dict)
    return input_dict


async def ticker(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits `n` `tick` events (default 10), `interval` seconds apart (default 0.1)."""
    n = int(_number(input_dict, "n", 10))
    interval = _number(input_dict, "interval", 0.1)
    for i in range(1, n + 1):
        if ctx.stopping:
            return {"ticks": i - 1, "stopped": True}
        ctx.emit("tick", i=i)
        if i < n and interval > 0:
            try:
                await ctx.sleep(interval)
            except StopRequested:
                return {"ticks": i, "stopped": True}
    return {"ticks": n}


async def sleeper(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Sleeps `seconds` (default 3600), leaving early and cleanly when asked to stop."""
    seconds = _number(input_dict, "seconds", 3600)
    ctx.emit("sleeping", seconds=seconds)
    await ctx.sleep(seconds)
    return {"slept": seconds}


async def failer(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Raises `RuntimeError(message)` after `events` events; succeeds from try `fail_times` on."""
    for i in range(int(_number(input_dict, "events", 1))):
        ctx.emit("step", i=i + 1)
    fail_times = input_dict.get("fail_times")
    if isinstance(fail_times, int) and ctx.attempt >= fail_times:
        return {"recovered_after": ctx.attempt}
    raise RuntimeError(str(input_dict.get("message", "boom")))


async def stubborn(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Ignores stop requests; only cancellation ends it."""
    ctx.emit("ignoring_stop")
    await asyncio.Event().wait()  # nothing ever sets it
    return None


async def chatty(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits `n` events (default 10,000) as fast as it can, yielding every `batch`."""
    n = int(_number(input_dict, "n", 10_000))
    batch = max(1, int(_number(input_dict, "batch", 500)))
    size = int(_number(input_dict, "size", 0))
    pad = "x" * size
    for i in range(1, n + 1):
        if pad:
            ctx.emit("chat", i=i, pad=pad)
        else:
            ctx.emit("chat", i=i)
        if i % batch == 0:
            if ctx.stopping:
                return {"sent": i, "stopped": True}
            await ctx.ready()
    return {"sent": n}


def builtin_catalog() -> AgentCatalog:
    """A fresh catalog holding the built-in agents."""
    catalog = AgentCatalog()
    for agent in (echo, ticker, sleeper, failer, stubborn, chatty):
        catalog.register(agent.__name__, agent)
    return catalog
