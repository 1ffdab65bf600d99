"""The benchmark harness at a tiny size, so it cannot rot.

Each benchmark runs once per side through the same code path as
``python -m bench`` (``run_benchmark`` with the ``TINY`` sizes) and its own
correctness claims are checked: every event delivered, in order, nothing
duplicated, exact resume.  Speed is never asserted.
"""

from __future__ import annotations

import pytest

from bench import (
    concurrency,
    event_cost,
    fanout,
    live_sse,
    persistence,
    replay,
    resume,
    start_rate,
)
from bench.__main__ import goals, table
from bench.common import KINDS, TINY, Benchmark, Outcome, run_benchmark

pytestmark = pytest.mark.server


async def run(bench: Benchmark) -> Outcome:
    outcome = await run_benchmark(bench, TINY, reps=1)
    for kind in KINDS:
        assert outcome.values[kind], f"{kind} measured nothing"
    return outcome


def zero(outcome: Outcome, *keys: str) -> None:
    for kind in KINDS:
        for key in keys:
            assert outcome.value(kind, key) == 0, f"{kind}: {key} = {outcome.value(kind, key)}"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_start_rate() -> None:
    outcome = await run(start_rate.BENCH)
    for kind in KINDS:
        value = outcome.value(kind, "seq_rate")
        assert value is not None
        assert value > 0


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_live_sse_delivers_every_event_once() -> None:
    outcome = await run(live_sse.BENCH)
    zero(outcome, "lost", "dup", "lagged")
    for kind in KINDS:
        assert outcome.value(kind, "delivered") == TINY.live_events


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_replay_is_complete() -> None:
    outcome = await run(replay.BENCH)  # raises BenchFailure on a gap, a repeat or no `done`
    for kind in KINDS:
        value = outcome.value(kind, "events_per_s")
        assert value is not None
        assert value > 0


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_resume_is_exact() -> None:
    outcome = await run(resume.BENCH)
    zero(outcome, "lost", "dup", "bad_data", "bad_cursor")
    expected = TINY.resume_chains * TINY.resume_cuts
    for kind in KINDS:
        assert outcome.value(kind, "reconnects") == expected
        # every chain read all N events and `done`
        assert outcome.value(kind, "delivered") == TINY.resume_chains * (TINY.resume_events + 1)


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_fanout_every_subscriber_gets_everything() -> None:
    outcome = await run(fanout.BENCH)
    zero(outcome, "lost", "dup", "lagged", "incomplete")


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_concurrency_all_runs_live() -> None:
    outcome = await run(concurrency.BENCH)
    zero(outcome, "unfinished", "not_running", "refused")
    for kind in KINDS:
        assert outcome.value(kind, "accepted") == TINY.conc_runs
        assert outcome.value(kind, "live") == TINY.conc_runs


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_persistence_writes_every_record() -> None:
    outcome = await run(persistence.BENCH)  # raises if the store holds a different count
    for kind in KINDS:
        value = outcome.value(kind, "sqlite")
        assert value is not None
        assert value > 0


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_event_cost_delivers_in_order() -> None:
    outcome = await run(event_cost.BENCH)  # raises if a subscription misses or reorders
    text = table([outcome])
    assert "emit" in text
    assert goals([outcome])
