"""2,000 concurrent live runs start, stream and finish on one loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from runyard.actors.messages import Caller, Introspect, StartRun, Subscribe
from runyard.actors.records import Event
from runyard.actors.stream_items import Finished
from tests.runtime_helpers import (
    ADMIN,
    collect,
    config,
    run_actor_tasks,
    running_runtime,
)
from tests.waiting import wait_until_async

RUNS = 2_000
USERS = 20  # 100 live runs each: exactly the default per-user cap
TICKS = 4


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_two_thousand_concurrent_live_runs_stream_and_finish() -> None:
    # Each run lives >= 1.5 s (4 ticks, 0.5 s apart), far longer than starting them all.
    async with running_runtime(config(max_live_runs_per_user=100)) as rt:
        t0 = time.monotonic()

        async def start_and_subscribe(i: int) -> tuple[str, object]:
            caller = Caller(f"user{i % USERS}")
            started = await rt.ask(
                StartRun(caller, "ticker", {"n": TICKS, "interval": 0.5}), timeout=10
            )
            sub = await rt.ask(Subscribe(caller, started.run_id), timeout=10)
            return started.run_id, sub

        pairs = await asyncio.gather(*(start_and_subscribe(i) for i in range(RUNS)))
        snapshot = await rt.ask(Introspect(ADMIN))
        # All of them are live at the same time, each with its subscriber.
        assert snapshot.runs_by_status["running"] == RUNS
        assert len(snapshot.live) == RUNS
        assert all(info.subscribers == 1 for info in snapshot.live)
        assert len({run_id for run_id, _ in pairs}) == RUNS

        results = await asyncio.gather(*(collect(sub) for _, sub in pairs))
        elapsed = time.monotonic() - t0
        for (run_id, _), (events, terminal) in zip(pairs, results, strict=True):
            assert isinstance(terminal, Finished)
            assert terminal.record.run_id == run_id
            assert terminal.record.status == "success"
            assert terminal.record.result == {"ticks": TICKS}
            assert all(isinstance(e, Event) for e in events)
            assert [e.seq for e in events] == list(range(1, TICKS + 2))
            assert [e.type for e in events] == ["tick"] * TICKS + ["done"]

        snapshot = await rt.ask(Introspect(ADMIN))
        assert snapshot.live == ()
        assert snapshot.runs_by_status == {"running": 0, "success": RUNS}
        await wait_until_async(lambda: not run_actor_tasks(), what="all run tasks to end")
    assert elapsed < 20, f"2,000 runs took {elapsed:.1f} s"
