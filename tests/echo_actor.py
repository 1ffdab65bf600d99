"""``Echo``: a small AsyncioActor with every kind of handler the runtime relies on.

Shared by the AsyncioActor suites (tests/test_runtime_actor*.py): plain
replies, raised failures, ``SystemExit``/``KeyboardInterrupt``, ``Forward``,
deferred (async) replies held behind a gate, and proxy methods.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

import pykka

from runyard.actors.asyncio_actor import RESUME, AsyncioActor, Forward
from tests.waiting import wait_until_async


class Boom(Exception):
    pass


class Echo(AsyncioActor):
    """A small actor with every kind of handler the runtime relies on."""

    def __init__(self, *, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resume = resume
        self.seen: list[Any] = []
        self.failures: list[BaseException | None] = []
        self.gate: asyncio.Event | None = None
        self.stopped_hook = False
        self.loop_thread: int | None = None

    def on_start(self) -> None:
        self.loop_thread = threading.get_ident()

    def on_stop(self) -> None:
        self.stopped_hook = True

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> str | None:
        self.failures.append(exception_value)
        return RESUME if self.resume else None

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)
        match message:
            case ("raise", text):
                raise Boom(text)
            case ("exit", kind):
                raise kind("bye")
            case ("forward", target, inner):
                return Forward(target, inner)
            case ("later", value):
                return self._later(value)
            case ("later-exit",):
                return self._later_exit()
            case ("thread",):
                return threading.get_ident()
            case _:
                return ("echo", message)

    async def _later(self, value: Any) -> Any:
        if self.gate is None:
            self.gate = asyncio.Event()
        await self.gate.wait()
        return ("later", value)

    async def _later_exit(self) -> Any:
        await asyncio.sleep(0)
        raise SystemExit("deferred bye")

    def release(self) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.gate.set()

    def add(self, a: int, b: int) -> int:
        return a + b

    async def add_later(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    def count(self) -> int:
        return len(self.seen)


def stop_all(*refs: pykka.ActorRef[Any]) -> None:
    for ref in refs:
        if ref.is_alive():
            ref.stop(block=False)


async def stopped(ref: pykka.ActorRef[Any]) -> None:
    await wait_until_async(lambda: not ref.is_alive(), what=f"{ref} to stop")
