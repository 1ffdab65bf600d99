"""RunActor: events, replay-then-live, stop, supervision, slow subscribers."""

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

from actors.context import RunContext
from actors.errors import AlreadyFinished, InvalidRequest
from actors.messages import (
    GetRun,
    Introspect,
    RestartPolicy,
    RunStarted,
    StartRun,
    StopAccepted,
    StopRun,
    Subscribe,
    Unsubscribe,
)
from actors.records import Event
from actors.stream_items import Finished, Lagged
from actors.subscription import Subscription
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

# --------------------------------------------------------------------------
# start, events, done


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
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


@pytest.mark.anyio
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


@pytest.mark.anyio
@pytest.mark.timeout(10)
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


# --------------------------------------------------------------------------
# supervision


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_crash_ends_as_error_with_an_error_event() -> None:
    async with running_runtime() as rt:
        record, events = await run_to_end(rt, ALICE, "failer", {"events": 2, "message": "kaboom"})
    assert record.status == "error"
    assert record.error == "RuntimeError: kaboom"
    assert [e.type for e in events] == ["step", "step", "error", "done"]
    error = events[2].data
    assert error["type"] == "RuntimeError"
    assert error["message"] == "kaboom"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert "in failer" in error["traceback"]
    assert "RuntimeError: kaboom" in error["traceback"]
    assert events[-1].data == {
        "status": "error",
        "result": None,
        "error": "RuntimeError: kaboom",
    }


@pytest.mark.anyio
@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
async def test_agent_raising_system_exit_ends_only_its_run(kind: type[BaseException]) -> None:
    async def quitter(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        ctx.emit("quitting")
        raise kind(3)

    async with running_runtime(catalog=catalog_with(quitter=quitter)) as rt:
        other = await rt.ask(StartRun(ALICE, "sleeper", {"seconds": 3600}))
        record, events = await run_to_end(rt, ALICE, "quitter")
        assert record.status == "error"
        assert record.error is not None
        assert kind.__name__ in record.error
        assert events[-2].type == "error"
        # The loop and the other run are fine.
        assert (await rt.ask(GetRun(ALICE, other.run_id))).status == "running"
        echoed, _ = await run_to_end(rt, ALICE, "echo", {"still": "here"})
        assert echoed.status == "success"


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_max_duration_ends_as_error_timed_out() -> None:
    async with running_runtime() as rt:
        t0 = time.monotonic()
        record, events = await run_to_end(
            rt, ALICE, "sleeper", {"seconds": 3600}, max_duration_s=0.2
        )
        assert time.monotonic() - t0 < 3
        with pytest.raises(InvalidRequest):
            await rt.ask(StartRun(ALICE, "echo", max_duration_s=0))
    assert record.status == "error"
    assert record.error is not None
    assert "timed out" in record.error
    assert [e.type for e in events] == ["sleeping", "error", "done"]
    assert "timed out" in events[1].data["message"]


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_non_json_result_ends_with_a_clear_error_not_a_broken_stream() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 42>"

    async def weird(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        ctx.emit("working")
        return {"value": Thing()}

    async with running_runtime(catalog=catalog_with(weird=weird)) as rt:
        record, events = await run_to_end(rt, ALICE, "weird")
    assert record.status == "error"
    assert record.error is not None
    assert "not JSON-serialisable" in record.error
    for event in events:
        json.loads(event.data_json)  # every frame still encodes
    json.dumps(record.result)
    assert "<Thing 42>" in json.dumps(record.result)
    assert events[-1].type == "done"
    assert events[-1].data["status"] == "error"


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_non_json_event_data_gets_a_visible_repr_marker() -> None:
    async def odd(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        ctx.emit("odd", when={1, 2}, nan=float("nan"), ok="fine")
        ctx.emit("after", i=2)
        return "done"

    async with running_runtime(catalog=catalog_with(odd=odd)) as rt:
        record, events = await run_to_end(rt, ALICE, "odd")
    assert record.status == "success"
    assert [e.type for e in events] == ["odd", "after", "done"]
    odd_data = events[0].data
    assert odd_data["ok"] == "fine"
    assert odd_data["when"] == {"__repr__": "{1, 2}"}
    assert odd_data["nan"] == {"__repr__": "nan"}
    assert json.loads(events[0].data_json) == odd_data
    assert events[1].data == {"i": 2}


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_restart_policy_restarts_a_crashed_agent_until_it_succeeds() -> None:
    async with running_runtime() as rt:
        record, events = await run_to_end(
            rt,
            ALICE,
            "failer",
            {"fail_times": 2, "message": "flaky"},
            restart=RestartPolicy(max_restarts=3, backoff_s=0.01),
        )
    assert record.status == "success"
    assert record.result == {"recovered_after": 2}
    assert [e.type for e in events] == ["step", "restart", "step", "restart", "step", "done"]
    restarts = [e.data for e in events if e.type == "restart"]
    assert [r["attempt"] for r in restarts] == [1, 2]
    assert [r["backoff_s"] for r in restarts] == [0.01, 0.02]
    assert restarts[0]["error"] == "RuntimeError: flaky"
    assert record.options == {"restart": {"max_restarts": 3, "backoff_s": 0.01}}


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_restart_policy_gives_up_after_max_restarts_and_default_never_restarts() -> None:
    async with running_runtime() as rt:
        exhausted, events = await run_to_end(
            rt,
            ALICE,
            "failer",
            {"fail_times": 5},
            restart=RestartPolicy(max_restarts=1, backoff_s=0),
        )
        assert exhausted.status == "error"
        assert [e.type for e in events].count("restart") == 1

        default, events = await run_to_end(rt, ALICE, "failer", {"fail_times": 1})
        assert default.status == "error"
        assert "restart" not in [e.type for e in events]

        with pytest.raises(InvalidRequest):
            await rt.ask(StartRun(ALICE, "failer", restart=RestartPolicy(max_restarts=-1)))


# --------------------------------------------------------------------------
# slow subscribers


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_slow_subscriber_is_cut_off_with_lagged_and_memory_stays_bounded() -> None:
    max_queue = 50
    total = 5_000

    gate = Gate()
    async with running_runtime(catalog=catalog_with(gate=gate.agent)) as rt:
        started = await rt.ask(StartRun(ALICE, "gate"))
        slow = await rt.ask(Subscribe(ALICE, started.run_id, max_queue=max_queue))
        fast = await rt.ask(Subscribe(ALICE, started.run_id, max_queue=max_queue))
        fast_seen: list[int] = []
        peak = 0
        sent = 0
        while sent < total:
            await gate.emit(10)  # bursts smaller than max_queue: a reader keeps up
            sent += 10
            peak = max(peak, sum(1 for i in slow._items if isinstance(i, Event)))
            for item in await asyncio.wait_for(fast.next_batch(), 5):
                assert isinstance(item, Event), item
                fast_seen.append(item.seq)
        assert fast_seen == list(range(1, total + 1))
        assert peak <= max_queue
        assert slow.pending <= max_queue + 1  # the events it may still read + Lagged

        snap = await rt.ask(Introspect(ADMIN))
        assert snap.live[0].subscribers == 1  # the slow one was dropped

        events, terminal = await collect(slow)
        assert isinstance(terminal, Lagged)
        assert [e.seq for e in events] == list(range(1, max_queue + 1))
        assert terminal.last_seq == max_queue

        # It resumes exactly where it was cut off.
        resumed = await rt.ask(
            Subscribe(ALICE, started.run_id, after_seq=terminal.last_seq, max_queue=100_000)
        )
        gate.finish("bye")
        rest, final = await collect(resumed)
        assert isinstance(final, Finished)
        assert [e.seq for e in rest] == list(range(max_queue + 1, total + 2))
        fast_rest, fast_final = await collect(fast)
        assert isinstance(fast_final, Finished)
        assert [e.type for e in fast_rest] == ["done"]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_never_reading_subscriber_under_a_chatty_agent_stays_bounded() -> None:
    async with running_runtime() as rt:
        started = await rt.ask(StartRun(ALICE, "chatty", {"n": 50_000, "batch": 1000}))
        never = await rt.ask(Subscribe(ALICE, started.run_id, max_queue=100))
        reader = await rt.ask(Subscribe(ALICE, started.run_id, max_queue=100_000))
        events, terminal = await collect(reader)
        assert isinstance(terminal, Finished)
        assert [e.seq for e in events] == list(range(1, 50_002))
        # Never read: at most max_queue events were kept for it, then Lagged.
        assert never.pending <= 101
        replay = never.take_replay()
        items = await never.next_batch()
        live = [i for i in items if isinstance(i, Event)]
        assert len(live) <= 100
        assert isinstance(items[-1], Lagged)
        assert [e.seq for e in replay + live] == list(range(1, items[-1].last_seq + 1))
        assert await never.next_batch() == []


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_thread_reader_that_times_out_loses_no_events() -> None:
    gate = Gate()
    async with running_runtime(catalog=catalog_with(gate=gate.agent)) as rt:
        started = await rt.ask(StartRun(ALICE, "gate"))
        sub = await rt.ask(Subscribe(ALICE, started.run_id))

        def time_out_twice() -> None:
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    sub.get_batch(timeout=0.05)

        await asyncio.to_thread(time_out_twice)
        await gate.emit(3)
        gate.finish()

        def read_all() -> list[int]:
            seqs: list[int] = []
            while batch := sub.get_batch(timeout=5):
                seqs.extend(i.seq for i in batch if isinstance(i, Event))
            return seqs

        assert await asyncio.to_thread(read_all) == [1, 2, 3, 4]
