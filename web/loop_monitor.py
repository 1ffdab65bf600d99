"""Event-loop lag: how late a timer fires tells whether something blocks the loop.

Everything in runyard shares one loop, so a blocking call anywhere shows up
here first; operators read the last sample from ``/ops/registry`` and every
sample's distribution from ``/metrics`` (``runyard_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time

from runyard.actors.histogram import Histogram


class LoopMonitor:
    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self.lag_histogram = Histogram()
        """Every sample's lag, in seconds (one observation per ``interval_s``)."""
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            planned = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lag_s = max(0.0, loop.time() - planned)
            self.lag_histogram.observe(self.lag_s)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started


def rss_bytes() -> int:
    """Resident set size now (``/proc``), falling back to the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
