"""Shared helpers for the runtime tests (tests/test_runtime_*.py).

Async tests run on the anyio pytest plugin: ``@pytest.mark.anyio`` on an
``async def test_...`` (the ``anyio_backend`` fixture in ``conftest.py``
picks asyncio), each test on a fresh loop.  Waiting is always on something
(a subscription, a future, an event) or a poll with a deadline
(:mod:`tests.waiting`), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pykka

from runyard.actors.agents import AgentCatalog, builtin_catalog
from runyard.actors.clock import Clock
from runyard.actors.context import RunContext
from runyard.actors.messages import Caller, StartRun, Subscribe
from runyard.actors.records import Event, RunRecord
from runyard.actors.runtime import Runtime, RuntimeConfig
from runyard.actors.stream_items import Closing, Finished, Lagged

ALICE = Caller("alice")
BOB = Caller("bob")
ADMIN = Caller("ops", admin=True)


def config(**overrides: Any) -> RuntimeConfig:
    """A test config: short stop grace, no background eviction timer."""
    values: dict[str, Any] = {"stop_grace_s": 0.2, "evict_interval_s": 0}
    values.update(overrides)
    return RuntimeConfig(**values)


@asynccontextmanager
async def running_runtime(
    cfg: RuntimeConfig | None = None,
    *,
    catalog: AgentCatalog | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Runtime]:
    runtime = Runtime(cfg or config(), catalog=catalog, clock=clock)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.shutdown(grace_s=0.1)


async def collect(sub: Any) -> tuple[list[Event], Any]:
    """Read a subscription to its end: (events, terminal item)."""
    events: list[Event] = []
    terminal: Any = None
    async for item in sub:
        if isinstance(item, Event):
            assert terminal is None, "an event arrived after the terminal item"
            events.append(item)
        else:
            assert isinstance(item, Finished | Lagged | Closing), item
            terminal = item
    return events, terminal


async def run_to_end(
    runtime: Runtime, caller: Caller, agent: str, input: dict[str, Any] | None = None, **kw: Any
) -> tuple[RunRecord, list[Event]]:
    """Start a run, follow it from seq 0 and return its final record and the events seen."""
    started = await runtime.ask(StartRun(caller, agent, input or {}, **kw), timeout=5)
    sub = await runtime.ask(Subscribe(caller, started.run_id), timeout=5)
    events, terminal = await collect(sub)
    assert isinstance(terminal, Finished), terminal
    return terminal.record, events


def assert_dense(events: list[Event], first: int = 1) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))


def actor_refs() -> set[str]:
    return {ref.actor_urn for ref in pykka.ActorRegistry.get_all()}


def run_actor_tasks() -> list[asyncio.Task[Any]]:
    """Tasks that belong to run actors or their agents (by the names the runtime gives them)."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("RunActor", "run ")) and not t.done()
    ]


class Gate:
    """A hand-driven agent: it emits what the test feeds it and ends when told.

    ``await gate.emit(n)`` makes the agent emit ``n`` ``step`` events and
    returns once they are in the trace; ``gate.finish(result)`` ends the run.
    Create it on the runtime's loop.
    """

    def __init__(self) -> None:
        self._commands: asyncio.Queue[tuple[str, Any, asyncio.Future[int]]] = asyncio.Queue()
        self.started = asyncio.Event()

    async def agent(self, input_dict: dict[str, Any], ctx: RunContext) -> Any:
        self.started.set()
        while True:
            kind, arg, done = await self._commands.get()
            if kind == "finish":
                done.set_result(0)
                return arg
            last = 0
            for _ in range(arg):
                last = ctx.emit("step", n=last)
            done.set_result(last)

    async def emit(self, n: int) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._commands.put_nowait(("emit", n, done))
        return await done

    def finish(self, result: Any = None) -> None:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._commands.put_nowait(("finish", result, done))


def catalog_with(**agents: Callable[[dict[str, Any], RunContext], Awaitable[Any]]) -> AgentCatalog:
    catalog = builtin_catalog()
    for name, agent in agents.items():
        catalog.register(name, agent)
    return catalog


def threads_named() -> set[str]:
    return {t.name for t in threading.enumerate()}
