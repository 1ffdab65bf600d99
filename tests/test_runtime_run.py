"""RunActor: events, replay-then-live, stop.

Supervision and slow subscribers are in test_runtime_supervision.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.actors.context import RunContext
from runyard.actors.errors import AlreadyFinished, InvalidRequest
from runyard.actors.messages import (
    GetRun,
    Introspect,
    RunStarted,
    StartRun,
    StopAccepted,
    StopRun,
    Subscribe,
    Unsubscribe,
)
from runyard.actors.records import Event
from runyard.actors.stream_items import Finished
from runyard.actors.subscription import Subscription
from tests.runtime_helpers import (
    ADMIN,
    ALICE,
    Gate,
    assert_dense,
    catalog_with,
    collect,
    config,
    run_actor_tasks,
    run_to_end,
    running_runtime,
)
from tests.waiting import wait_until_async

# The default; a test that needs longer says so with its own timeout mark.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

# --------------------------------------------------------------------------
# start, events, done


async def test_start_returns_a_run_id_at_once() -> None:
    async with running_runtime() as rt:
        t0 = time.monotonic()
        started = await rt.ask(StartRun(ALICE, "sleeper", {"seconds": 3600}), timeout=2)
        assert time.monotonic() - t0 < 1.0  # did not wait for the hour-long agent
        assert isinstance(started, RunStarted)
        assert re.fullmatch(r"[0-9a-f]{32}", started.run_id)
        assert started.status == "running"
        record = await rt.ask(GetRun(ALICE, started.run_id))
        assert record.status == "running"
        assert record.finished_at is None
        await rt.ask(StopRun(ALICE, started.run_id))


async def test_events_are_dense_timestamped_typed_and_end_with_done() -> None:
    async with running_runtime() as rt:
        before = time.time()
        record, seen = await run_to_end(rt, ALICE, "ticker", {"n": 5, "interval": 0})
        after = time.time()
    assert record.status == "success"
    assert record.result == {"ticks": 5}
    assert record.error is None
    assert_dense(seen)
    assert seen == list(record.events)  # the record holds the very events streamed
    assert [e.type for e in seen] == ["tick"] * 5 + ["done"]
    assert [e.data["i"] for e in seen[:5]] == [1, 2, 3, 4, 5]
    for event in seen:
        assert before <= event.ts <= after
        assert json.loads(event.data_json) == event.data
    stamps = [e.ts for e in seen]
    assert stamps == sorted(stamps)
    # POSIX seconds are UTC: converted with an explicit UTC zone, they are "now".
    as_utc = datetime.fromtimestamp(seen[0].ts, UTC)
    assert abs((datetime.now(UTC) - as_utc).total_seconds()) < 60
    done = seen[-1]
    assert done.data == {"status": "success", "result": {"ticks": 5}, "error": None}
    assert record.started_at <= seen[0].ts
    assert record.finished_at is not None
    assert record.finished_at >= done.ts


async def test_subscribe_after_seq_past_the_end_waits_for_live_events() -> None:
    gate = Gate()
    async with running_runtime(catalog=catalog_with(gate=gate.agent)) as rt:
        started = await rt.ask(StartRun(ALICE, "gate"))
        assert await gate.emit(2) == 2
        sub = await rt.ask(Subscribe(ALICE, started.run_id, after_seq=5))
        assert sub.take_replay() == []
        assert await gate.emit(3) == 5  # seqs 3..5: not after 5
        assert sub.pending == 0
        assert await gate.emit(2) == 7
        batch = await asyncio.wait_for(sub.next_batch(), 5)
        assert [e.seq for e in batch] == [6, 7]
        gate.finish("ok")
        events, terminal = await collect(sub)
        assert [e.seq for e in events] == [8]
        assert events[0].type == "done"
        assert isinstance(terminal, Finished)
        assert terminal.record.status == "success"

        with pytest.raises(InvalidRequest):
            await rt.ask(Subscribe(ALICE, started.run_id, after_seq=-1))


async def test_unsubscribe_leaves_the_run_running() -> None:
    gate = Gate()
    async with running_runtime(catalog=catalog_with(gate=gate.agent)) as rt:
        started = await rt.ask(StartRun(ALICE, "gate"))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))
        await gate.emit(1)
        await rt.ask(Unsubscribe(started.run_id, sub))
        await gate.emit(1)
        snap = await rt.ask(Introspect(ADMIN))
        assert snap.live[0].subscribers == 0
        assert snap.live[0].trace_length == 2
        record = await rt.ask(GetRun(ALICE, started.run_id))
        assert record.status == "running"
        gate.finish()


# --------------------------------------------------------------------------
# replay then live


async def _follow(
    rt: Any, run_id: str, after_seq: int, delay_yields: int
) -> tuple[int, list[Event], Any]:
    for _ in range(delay_yields):
        await asyncio.sleep(0)  # join at an arbitrary point of the emission
    sub = await rt.ask(Subscribe(ALICE, run_id, after_seq=after_seq, max_queue=100_000))
    events, terminal = await collect(sub)
    return after_seq, events, terminal


def _check_exact(after_seq: int, events: list[Event], terminal: Any) -> None:
    assert isinstance(terminal, Finished), terminal
    total = len(terminal.record.events)
    assert [e.seq for e in events] == list(range(after_seq + 1, total + 1))
    assert events == list(terminal.record.events[after_seq:])


@pytest.mark.timeout(60)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
@given(
    n=st.integers(min_value=1, max_value=3000),
    batch=st.integers(min_value=1, max_value=400),
    joins=st.lists(
        st.tuples(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=3100)),
        min_size=1,
        max_size=12,
    ),
)
async def test_replay_then_live_has_no_gap_and_no_duplicate(
    n: int, batch: int, joins: list[tuple[int, int]]
) -> None:
    async with running_runtime() as rt:
        started = await rt.ask(StartRun(ALICE, "chatty", {"n": n, "batch": batch}))
        results = await asyncio.gather(
            *(_follow(rt, started.run_id, after, delay) for delay, after in joins)
        )
    for after_seq, events, terminal in results:
        _check_exact(after_seq, events, terminal)
        assert terminal.record.status == "success"
        assert len(terminal.record.events) == n + 1


@pytest.mark.timeout(30)
async def test_replay_then_live_with_subscribers_from_another_thread() -> None:
    """Threads join at random times with random cursors while chatty emits at full speed."""

    rng = random.Random(7)
    n = 20_000
    async with running_runtime() as rt:
        started = await rt.ask(StartRun(ALICE, "chatty", {"n": n, "batch": 50}))

        def follower(after_seq: int, spin: int) -> tuple[int, list[Event], Any]:
            for _ in range(spin):  # a random moment, not a wait for anything
                pass
            sub: Subscription = rt.registry.ask(
                Subscribe(ALICE, started.run_id, after_seq=after_seq, max_queue=100_000),
                timeout=5,
            )
            events = list(sub.take_replay())
            terminal = None
            while True:
                batch = sub.get_batch(timeout=5)
                if not batch:
                    break
                for item in batch:
                    if isinstance(item, Event):
                        events.append(item)
                    else:
                        terminal = item
            return after_seq, events, terminal

        jobs = [
            asyncio.to_thread(follower, rng.randint(0, n + 10), rng.randint(0, 200_000))
            for _ in range(8)
        ]
        jobs.append(_follow(rt, started.run_id, 0, 3))
        results = await asyncio.gather(*jobs)
    for after_seq, events, terminal in results:
        _check_exact(after_seq, events, terminal)


# --------------------------------------------------------------------------
# stop


@pytest.mark.parametrize(
    ("agent", "input", "result"),
    [
        ("sleeper", {"seconds": 3600}, None),
        ("ticker", {"n": 1000, "interval": 10}, {"ticks": 1, "stopped": True}),
    ],
)
async def test_cooperative_stop_ends_stopped(
    agent: str, input: dict[str, Any], result: Any
) -> None:
    # A long grace: a cooperative agent must not need it.
    async with running_runtime(config(stop_grace_s=30)) as rt:
        started = await rt.ask(StartRun(ALICE, agent, input))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))
        first = await anext(sub)  # the agent is running: now stop it
        t0 = time.monotonic()
        accepted = await rt.ask(StopRun(ALICE, started.run_id, reason="enough"))
        assert accepted == StopAccepted(run_id=started.run_id, status="stopping")
        rest, terminal = await collect(sub)
        events = [first, *rest]
        assert time.monotonic() - t0 < 5
    record = terminal.record
    assert record.status == "stopped"
    assert record.error == "enough"
    assert record.result == result
    types = [e.type for e in events]
    assert types[-2:] == ["stop_requested", "done"]
    assert events[-2].data == {"reason": "enough"}
    assert events[-1].data["status"] == "stopped"


async def test_stubborn_agent_is_cancelled_after_stop_grace() -> None:
    async with running_runtime(config(stop_grace_s=0.2)) as rt:
        started = await rt.ask(StartRun(ALICE, "stubborn"))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))
        first = await anext(sub)  # the agent is running (and ignoring stops)
        t0 = time.monotonic()
        await rt.ask(StopRun(ALICE, started.run_id))
        rest, terminal = await collect(sub)
        events = [first, *rest]
        elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 3
    assert terminal.record.status == "stopped"
    assert terminal.record.error == "stopped by user"
    assert [e.type for e in events] == ["ignoring_stop", "stop_requested", "done"]


async def test_agent_that_swallows_cancellation_is_abandoned_and_the_run_still_ends() -> None:
    async def mule(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ctx.emit("refusing")  # swallows the stop's cancellation once
        await asyncio.Event().wait()  # the actor's own teardown cancels it for good

    async with running_runtime(config(stop_grace_s=0.1), catalog=catalog_with(mule=mule)) as rt:
        started = await rt.ask(StartRun(ALICE, "mule"))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))
        await rt.ask(StopRun(ALICE, started.run_id))
        events, terminal = await collect(sub)
        assert terminal.record.status == "stopped"
        assert terminal.record.error == "stopped by user (agent abandoned)"
        assert [e.type for e in events] == ["stop_requested", "refusing", "done"]
        await wait_until_async(lambda: not run_actor_tasks(), what="the abandoned agent to end")


async def test_stop_twice_is_harmless_and_stop_after_finish_says_so() -> None:
    async with running_runtime(config(stop_grace_s=0.3)) as rt:
        # Two stops in a row reach the run before the agent can react.
        started = await rt.ask(StartRun(ALICE, "sleeper", {"seconds": 3600}))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))
        first = rt.registry.ask(StopRun(ALICE, started.run_id, reason="first"), block=False)
        second = rt.registry.ask(StopRun(ALICE, started.run_id, reason="second"), block=False)
        assert await first == await second == StopAccepted(started.run_id)
        events, terminal = await collect(sub)
        assert [e.type for e in events].count("stop_requested") == 1
        assert terminal.record.status == "stopped"
        assert terminal.record.error == "first"

        # A second stop while a stubborn agent is still in its grace period.
        stubborn = await rt.ask(StartRun(ALICE, "stubborn"))
        sub = await rt.ask(Subscribe(ALICE, stubborn.run_id))
        await rt.ask(StopRun(ALICE, stubborn.run_id))
        assert await rt.ask(StopRun(ALICE, stubborn.run_id)) == StopAccepted(stubborn.run_id)
        events, terminal = await collect(sub)
        assert [e.type for e in events].count("stop_requested") == 1
        assert terminal.record.status == "stopped"

        with pytest.raises(AlreadyFinished, match="'stopped'") as info:
            await rt.ask(StopRun(ALICE, started.run_id))
        assert info.value.status == "stopped"

        record, _ = await run_to_end(rt, ALICE, "echo", {"x": 1})
        with pytest.raises(AlreadyFinished, match="already finished with status 'success'"):
            await rt.ask(StopRun(ALICE, record.run_id))
        failed, _ = await run_to_end(rt, ALICE, "failer")
        with pytest.raises(AlreadyFinished, match="'error'") as info:
            await rt.ask(StopRun(ALICE, failed.run_id))
        assert info.value.status == "error"
