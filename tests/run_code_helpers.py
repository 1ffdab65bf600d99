"""Shared helpers for the run-code runtime suites (tests/test_run_code*.py).

``code_runtime`` is a real :class:`~runyard.actors.runtime.Runtime` with the code
agent and its pool of pre-started children, so stop, limits and crashes go
through the run actor exactly as in the server.  Use it inside an
``@pytest.mark.anyio`` test: ``async with code_runtime() as runtime: ...``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from runyard.actors.code.agent import CodeSettings, make_code_agent
from runyard.actors.records import Event, RunRecord
from runyard.actors.runtime import Runtime
from runyard.actors.stream_items import Finished
from tests.runtime_helpers import ALICE, config, run_to_end

STOP_GRACE_S = 0.5
SETTINGS = CodeSettings(memory_mib=256)


@asynccontextmanager
async def code_runtime(settings: CodeSettings = SETTINGS) -> AsyncIterator[Runtime]:
    """A started runtime whose ``run-code`` agent has started its pool (if ``pool_size > 0``)."""
    factory = make_code_agent(settings)
    runtime = Runtime(config(stop_grace_s=STOP_GRACE_S), code_agent=factory)
    await runtime.start()
    await factory.start()  # the runs get pre-started children (pool_size > 0)
    try:
        yield runtime
    finally:
        await runtime.shutdown(grace_s=0.5)
        await factory.aclose()


async def run_code(
    runtime: Runtime, code: str, input: dict[str, Any] | None = None, **kw: Any
) -> tuple[RunRecord, list[Event]]:
    """Run ``code`` as alice to its end: (final record, every event seen from seq 1)."""
    return await run_to_end(runtime, ALICE, "run-code", input or {}, code=code, **kw)


def of_type(events: list[Event], type: str) -> list[dict[str, Any]]:
    """The data of the events of one type, in order."""
    return [e.data for e in events if e.type == type]


async def next_event(sub: Any, type: str) -> Event:
    """Read ``sub`` until an event of ``type`` (fails if the run ends first)."""
    async for item in sub:
        if isinstance(item, Event) and item.type == type:
            return item
        assert not isinstance(item, Finished), f"run ended before a {type!r} event: {item}"
    raise AssertionError(f"subscription ended before a {type!r} event")


def gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
