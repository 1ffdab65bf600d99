"""RunActor supervision (crashes, limits, restarts, unencodable output) and slow subscribers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from runyard.actors.context import RunContext
from runyard.actors.errors import InvalidRequest
from runyard.actors.messages import GetRun, Introspect, RestartPolicy, StartRun, Subscribe
from runyard.actors.records import Event
from runyard.actors.stream_items import Finished, Lagged
from tests.runtime_helpers import (
    ADMIN,
    ALICE,
    Gate,
    catalog_with,
    collect,
    run_to_end,
    running_runtime,
)

# The default; a test that needs longer says so with its own timeout mark.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

# --------------------------------------------------------------------------
# supervision


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
