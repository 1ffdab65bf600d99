"""Does any catalog agent, with any input it accepts, slow the server down?

``python -m bench.loop_hogs [--seconds S]``: a runyard server (SQLite) is
probed with ``GET /healthz`` every 10 ms, first idle, then while the worst
accepted input of every built-in agent runs at once (:data:`WORST`: each
count at its limit, no pauses, the largest events).  ``/healthz`` does no
work, so its latency is the time a request waits for the shared event loop;
the goal is p99 < 50 ms.  The figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import BenchFailure, percentile, serving
from bench.rawhttp import Connection

GOAL_P99_MS = 50.0

_BIG_INPUT = {f"k{i}": "v" * 8 for i in range(40_000)}
"""echo's worst case: a ~0.9 MiB input of many small keys, under the 1 MiB body limit."""

WORST: list[dict[str, Any]] = [
    {"agent": "chatty", "input_dict": {"n": 1_000_000, "batch": 10_000}},
    {"agent": "chatty", "input_dict": {"n": 1_000_000, "batch": 10_000, "size": 262_144}},
    {"agent": "ticker", "input_dict": {"n": 1_000_000, "interval": 0}},
    {
        "agent": "failer",
        "input_dict": {"events": 100_000, "fail_times": 100},
        "restart": {"max_restarts": 100, "backoff_s": 0},
    },
    {"agent": "sleeper", "input_dict": {"seconds": 604_800}},
    {"agent": "stubborn", "input_dict": {}},
    {"agent": "echo", "input_dict": _BIG_INPUT},
]
"""The start bodies: every built-in agent with the largest input it accepts."""


async def probe(conn: Connection, seconds: float, every_s: float = 0.01) -> list[float]:
    """``GET /healthz`` latencies (seconds) for ``seconds``, one request every ``every_s``."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        resp = await conn.request("GET", "/healthz")
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise BenchFailure(f"/healthz answered {resp.status}")
        await asyncio.sleep(every_s)
    return latencies


def summary(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"n={len(ms)} p50={percentile(ms, 50):.1f} ms p99={percentile(ms, 99):.1f} ms "
        f"max={max(ms):.1f} ms"
    )


async def main(seconds: float) -> int:
    async with (
        serving("runyard", kill=True) as server,
        server.connection() as conn,
        server.connection() as probe_conn,
    ):
        idle = await probe(probe_conn, min(seconds, 3.0))
        print(f"idle:           {summary(idle)}")
        for body in WORST:
            resp = await conn.request("POST", "/runs", json_body=body)
            if resp.status != 202:
                raise BenchFailure(f"start {body['agent']}: {resp.status} {resp.body[:200]!r}")
        busy = await probe(probe_conn, seconds)
        print(f"worst inputs:   {summary(busy)}")
    p99 = percentile([x * 1000 for x in busy], 99)
    verdict = "met" if p99 < GOAL_P99_MS else "MISSED"
    print(f"goal /healthz p99 < {GOAL_P99_MS:g} ms while they run: {verdict} ({p99:.1f} ms)")
    return 0 if p99 < GOAL_P99_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    raise SystemExit(asyncio.run(main(parser.parse_args().seconds)))
