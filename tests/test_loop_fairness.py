"""A real server stays responsive while every built-in agent runs its worst accepted input.

``runyard serve`` in a child process (so the test's own client does not
share the server's interpreter), the start bodies of
:data:`bench.loop_hogs.WORST` all at once, then ``/healthz`` polled for a few
seconds.  ``/healthz`` does no work: its latency is the wait for the shared
event loop.  The goal (p99 < 50 ms) is measured by ``python -m
bench.loop_hogs`` and recorded in docs/performance.md; this test asserts a
bound loose enough for a loaded 2-core machine that still fails by far when
an agent holds the loop (seconds, before the agents were paced).  On
percentiles: a single slow answer on a loaded machine is the scheduler's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.loop_hogs import WORST
from tests.live_server import ServerProcessFactory

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

POLL_S = 4.0
P99_S = 0.25
"""A machine with a load average of 20 measured up to 121 ms; one agent holding the
loop made it seconds."""


def test_healthz_stays_fast_while_the_worst_inputs_run(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    # What is measured here is the loop, not the store: behind the bursts' writes
    # a start's commit on SQLite once waited past the default 5 s store timeout
    # (noted in docs/performance.md, "Loop hogs"), so this server gets 30 s.
    server = server_process(tmp_path / "data", RUNYARD_STORE_TIMEOUT_S="30")
    server.drain_output()
    with server.client("alice") as client:
        for body in WORST:
            resp = client.post("/runs", json=body)
            assert resp.status_code == 202, resp.text
        latencies: list[float] = []
        deadline = time.monotonic() + POLL_S
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - t0)
    # The bursts were still going (else the poll measured an idle server). Asked
    # of the registry's memory: a list query goes to the store, which these
    # bursts keep busy writing (a query once waited past the store timeout).
    with server.client("root") as admin:
        registry = admin.get("/ops/registry")
    assert registry.status_code == 200, registry.text
    live = registry.json()["live"]
    running = {run["agent"] for run in live}
    assert {"sleeper", "stubborn"} <= running
    assert running & {"chatty", "ticker"}  # a burst (on a quiet machine one may be done)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < P99_S, (
        f"/healthz p99 {p99 * 1000:.0f} ms (max {latencies[-1] * 1000:.0f} ms, "
        f"{len(latencies)} requests)"
    )
