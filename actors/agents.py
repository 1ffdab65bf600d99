"""The agent catalog and the built-in agents.

Internal services register their own agents into a catalog and start them
by name; the built-ins exist for demos, tests and benchmarks and each one
exercises one behaviour of the run supervisor (events, stop, crash, load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from runyard.actors.agent_inputs import InputSpec, Number
from runyard.actors.context import Agent, RunContext, StopRequested
from runyard.actors.errors import UnknownAgent
from runyard.actors.records import JSON

NO_INPUTS = InputSpec()


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    agent: Agent
    description: str
    inputs: InputSpec = NO_INPUTS


class AgentCatalog:
    """Named agents a run can be started with."""

    def __init__(self) -> None:
        self._entries: dict[str, CatalogEntry] = {}

    def register(
        self, name: str, agent: Agent, description: str = "", inputs: InputSpec = NO_INPUTS
    ) -> None:
        """``inputs``: the bounds :meth:`resolve` checks a start's input against."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            msg = f"agent name {name!r} must be letters, digits, '-' or '_'"
            raise ValueError(msg)
        text = description or (agent.__doc__ or "")
        if inputs.numbers:
            text = f"{text} Inputs: {inputs.describe()}."
        self._entries[name] = CatalogEntry(name, agent, text, inputs)

    def get(self, name: str) -> Agent:
        return self._entry(name).agent

    def resolve(self, name: str, input_dict: Mapping[str, object]) -> Agent:
        """The agent for a new run, once ``input_dict`` is within its declared bounds.

        Raises :class:`UnknownAgent` or :class:`~runyard.actors.errors.InvalidInput` (422)
        before a run exists.
        """
        entry = self._entry(name)
        entry.inputs.check(input_dict)
        return entry.agent

    def _entry(self, name: str) -> CatalogEntry:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownAgent(f"unknown agent {name!r}; known agents: {known}")
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))


# --------------------------------------------------------------------------
# Built-ins
#
# Each loop that emits calls ``await ctx.pace()`` after every event, so no
# input makes one of them hold the shared loop for more than ~2 ms.

MAX_EVENTS = 1_000_000
"""The most events a built-in may be asked for: the default per-run quota
(``max_run_events``); a larger run would only end at the quota."""
MAX_SECONDS = 7 * 24 * 3600.0

TICKER_INPUTS = InputSpec(
    (
        Number("n", 10, 0, MAX_EVENTS, integer=True),
        Number("interval", 0.1, 0, 3600),
    )
)
SLEEPER_INPUTS = InputSpec((Number("seconds", 3600, 0, MAX_SECONDS),))
FAILER_INPUTS = InputSpec(
    (
        Number("events", 1, 0, 100_000, integer=True),
        Number("fail_times", None, 0, 100, integer=True),
    )
)
CHATTY_INPUTS = InputSpec(
    (
        Number("n", 10_000, 0, MAX_EVENTS, integer=True),
        Number("batch", 500, 1, 10_000, integer=True),
        Number("size", 0, 0, 256 * 1024, integer=True),
    )
)


async def echo(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits one `echo` event with the input and returns the input."""
    ctx.emit("echo", input=input_dict)
    return input_dict


async def ticker(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits `n` `tick` events, `interval` seconds apart."""
    inputs = TICKER_INPUTS.check(input_dict)
    n, interval = int(inputs["n"] or 0), float(inputs["interval"] or 0)
    for i in range(1, n + 1):
        if ctx.stopping:
            return {"ticks": i - 1, "stopped": True}
        ctx.emit("tick", i=i)
        if i < n:
            try:
                if interval > 0:
                    await ctx.sleep(interval)
                else:
                    await ctx.pace()
            except StopRequested:
                return {"ticks": i, "stopped": True}
    return {"ticks": n}


async def sleeper(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Sleeps `seconds`, leaving early and cleanly when asked to stop."""
    seconds = float(SLEEPER_INPUTS.check(input_dict)["seconds"] or 0)
    ctx.emit("sleeping", seconds=seconds)
    await ctx.sleep(seconds)
    return {"slept": seconds}


async def failer(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Raises `RuntimeError(message)` after `events` events; succeeds from try `fail_times` on."""
    inputs = FAILER_INPUTS.check(input_dict)
    for i in range(int(inputs["events"] or 0)):
        ctx.emit("step", i=i + 1)
        await ctx.pace()
    fail_times = inputs["fail_times"]
    if fail_times is not None and ctx.attempt >= fail_times:
        return {"recovered_after": ctx.attempt}
    raise RuntimeError(str(input_dict.get("message", "boom")))


async def stubborn(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Ignores stop requests; only cancellation ends it."""
    ctx.emit("ignoring_stop")
    await asyncio.Event().wait()  # nothing ever sets it
    return None


async def chatty(input_dict: dict[str, JSON], ctx: RunContext) -> JSON:
    """Emits `n` events as fast as it can, yielding every `batch` (and every 2 ms);
    `size` pads each event with that many characters."""
    inputs = CHATTY_INPUTS.check(input_dict)
    n, batch, size = (int(inputs[key] or 0) for key in ("n", "batch", "size"))
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
        else:
            await ctx.pace()
    return {"sent": n}


def builtin_catalog() -> AgentCatalog:
    """A fresh catalog holding the built-in agents."""
    catalog = AgentCatalog()
    catalog.register("echo", echo)
    catalog.register("ticker", ticker, inputs=TICKER_INPUTS)
    catalog.register("sleeper", sleeper, inputs=SLEEPER_INPUTS)
    catalog.register("failer", failer, inputs=FAILER_INPUTS)
    catalog.register("stubborn", stubborn)
    catalog.register("chatty", chatty, inputs=CHATTY_INPUTS)
    return catalog
