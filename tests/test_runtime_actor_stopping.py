"""AsyncioActor.on_stopping: cleanup on the loop before a stop is answered.

pykka's ``on_stop`` is synchronous; an actor that must write or close
something over the network when it stops (the CouchDB cluster backend)
defines ``on_stopping``, and ``ask_stop`` returns only once it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runyard.actors.asyncio_actor import AsyncioActor, ask, ask_stop, tell_stop
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


class Closing(AsyncioActor):
    """Its ``on_stopping`` waits for ``gate``, then records; ``fail`` makes it raise."""

    def __init__(self, log: list[str], gate: asyncio.Event, *, fail: bool = False) -> None:
        super().__init__()
        self.log = log
        self.gate = gate
        self.fail = fail

    def on_receive(self, message: Any) -> Any:
        self.log.append(f"got {message}")
        return message

    async def on_stopping(self) -> None:
        self.log.append("stopping")
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("cleanup failed")
        self.log.append("cleaned up")

    def on_stop(self) -> None:
        self.log.append("stopped")


async def test_a_stop_is_answered_after_on_stopping_and_on_stop() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    ref = Closing.start(log, gate)
    stopping = asyncio.ensure_future(ask_stop(ref, timeout=5))
    await wait_until_async(lambda: "stopping" in log, 5, "on_stopping to start")
    # Still serving while it cleans up.
    assert await ask(ref, "late", timeout=2) == "late"
    assert not stopping.done()
    gate.set()
    await stopping
    assert log == ["stopping", "got late", "cleaned up", "stopped"]
    assert not ref.is_alive()


async def test_a_failing_on_stopping_still_stops_the_actor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    gate = asyncio.Event()
    gate.set()
    ref = Closing.start(log, gate, fail=True)
    await ask_stop(ref, timeout=5)
    assert log == ["stopping", "stopped"]
    assert not ref.is_alive()
    assert "on_stopping of" in caplog.text


async def test_a_second_stop_during_on_stopping_stops_at_once() -> None:
    log: list[str] = []
    gate = asyncio.Event()  # never set: only the second stop ends it
    ref = Closing.start(log, gate)
    tell_stop(ref)
    await wait_until_async(lambda: "stopping" in log, 5, "on_stopping to start")
    await ask_stop(ref, timeout=5)
    assert "stopped" in log
    assert "cleaned up" not in log
    await wait_until_async(lambda: not ref.is_alive(), 5, "the actor to be gone")
