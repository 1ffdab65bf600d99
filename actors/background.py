"""``BackgroundRuntime``: the runtime on its own thread, for synchronous services.

A service that has no event loop of its own (a worker, a script, a Django
view) starts runyard here and talks to it with pykka's ordinary blocking
calls: ``registry.ask(msg, timeout=5)`` works from any thread because the
registry's futures block plain threads on a ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka

from runyard.actors.runtime import Runtime


class BackgroundRuntime:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runyard-loop")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(runtime.start(), self._loop).result(timeout=30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            raise

    @property
    def registry(self) -> pykka.ActorRef[Any]:
        return self.runtime.registry

    def ask(self, message: Any, timeout: float | None = 30.0) -> Any:
        """Send ``message`` to the registry and block this thread for the reply."""
        return self.registry.ask(message, timeout=timeout)

    def call(self, coro: Any, timeout: float | None = 30.0) -> Any:
        """Run a coroutine on the runtime's loop (e.g. iterating a subscription)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self, grace_s: float | None = None) -> None:
        """Shut the runtime down (``grace_s``: see :meth:`Runtime.shutdown`) and end its thread."""
        if grace_s is None:
            grace_s = self.runtime.config.shutdown_grace_s
        try:
            self.call(self.runtime.shutdown(grace_s=grace_s), timeout=grace_s + 60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> BackgroundRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
