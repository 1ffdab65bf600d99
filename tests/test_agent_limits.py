"""The built-in agents cannot hold the shared loop: bounded inputs, paced emits.

Each agent declares the range of its numeric inputs; a start outside it is
refused (422 naming the field and the limit) before a run exists.  Inside
it, an agent that emits in a burst yields once the agents have held a turn
of the loop for ~2 ms together (:mod:`runyard.actors.loop_budget`).  A turn's
length is measured in CPU time of the loop thread, so a test machine busy
with other work (which only delays the thread) cannot make it fail or pass.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runyard.actors import InvalidInput, ListRuns, StartRun
from runyard.actors.agents import builtin_catalog
from tests.run_code_helpers import code_runtime, run_code
from tests.runtime_helpers import ALICE, run_to_end, running_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    ("agent", "input_dict", "words"),
    [
        ("chatty", {"n": 1_000_001}, "input_dict.n must be <= 1000000"),
        ("chatty", {"n": 10, "batch": 1_000_000_000}, "input_dict.batch must be <= 10000"),
        ("chatty", {"batch": 0}, "input_dict.batch must be >= 1"),
        ("chatty", {"size": 10**9}, "input_dict.size must be <= 262144"),
        ("chatty", {"n": 2.5}, "input_dict.n must be an integer"),
        ("chatty", {"n": "many"}, "input_dict.n must be an integer, got 'many'"),
        ("ticker", {"n": 300_000_000, "interval": 0}, "input_dict.n must be <= 1000000"),
        ("ticker", {"interval": -1}, "input_dict.interval must be >= 0"),
        ("ticker", {"interval": float("inf")}, "input_dict.interval must be a finite number"),
        ("ticker", {"interval": True}, "input_dict.interval must be a number"),
        ("sleeper", {"seconds": 10**9}, "input_dict.seconds must be <= 604800"),
        ("failer", {"events": 10**7}, "input_dict.events must be <= 100000"),
        ("failer", {"fail_times": -1}, "input_dict.fail_times must be >= 0"),
    ],
)
async def test_out_of_range_inputs_are_refused_before_a_run_exists(
    agent: str, input_dict: dict[str, Any], words: str
) -> None:
    async with running_runtime() as runtime:
        with pytest.raises(InvalidInput) as err:
            await runtime.ask(StartRun(ALICE, agent, input_dict), timeout=5)
        page = await runtime.ask(ListRuns(ALICE), timeout=5)
    assert words in err.value.message
    assert err.value.http_status == 422
    assert err.value.code == "validation_error"
    assert page.runs == ()


async def test_inputs_at_their_limits_are_accepted_and_defaults_still_apply() -> None:
    async with running_runtime() as runtime:
        record, _ = await run_to_end(runtime, ALICE, "ticker", {"n": 3, "interval": 0})
        assert record.result == {"ticks": 3}
        record, _ = await run_to_end(runtime, ALICE, "chatty", {"n": 5, "batch": 10_000})
        assert record.result == {"sent": 5}
        record, _ = await run_to_end(runtime, ALICE, "failer", {"events": 2, "fail_times": 0})
        assert record.result == {"recovered_after": 0}
        record, _ = await run_to_end(runtime, ALICE, "sleeper", {"seconds": 0})
        assert record.result == {"slept": 0.0}


def test_the_catalog_describes_each_agents_limits() -> None:
    described = {entry.name: entry.description for entry in builtin_catalog()}
    assert "n: integer 0..1000000, default 10000" in described["chatty"]
    assert "interval: number 0..3600, default 0.1" in described["ticker"]


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The collector off: a full collection walks every object alive (here, every
    event of the runs) and would be measured as a long turn of whatever ran."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _longest_turn_cpu_s(stop: asyncio.Event) -> float:
    """The most CPU time the loop thread spent between two turns of this task."""
    longest = 0.0
    last = time.thread_time()
    while not stop.is_set():
        await asyncio.sleep(0)
        now = time.thread_time()
        longest = max(longest, now - last)
        last = now
    return longest


@pytest.mark.parametrize(
    ("runs", "agent", "input_dict"),
    [
        (1, "chatty", {"n": 200_000, "batch": 10_000}),
        (1, "ticker", {"n": 50_000, "interval": 0}),
        (1, "failer", {"events": 50_000, "fail_times": 0}),
        (6, "chatty", {"n": 30_000, "batch": 10_000}),
    ],
)
@pytest.mark.usefixtures("no_gc")
async def test_bursts_never_hold_a_turn_of_the_loop_for_long(
    runs: int, agent: str, input_dict: dict[str, Any]
) -> None:
    async with running_runtime() as runtime:
        stop = asyncio.Event()
        probe = asyncio.create_task(_longest_turn_cpu_s(stop))
        await asyncio.sleep(0)
        results = await asyncio.gather(
            *(run_to_end(runtime, ALICE, agent, input_dict) for _ in range(runs))
        )
        stop.set()
        longest = await probe
    assert all(record.status == "success" for record, _ in results)
    # ~2 ms of agents per turn, plus the turn's other work; without pacing a
    # burst holds the loop for 100 ms and more.
    assert longest < 0.03, f"one turn of the loop took {longest * 1000:.1f} ms of CPU"


FAST_CHILD = """
async def run(input_dict, ctx):
    for i in range(input_dict["n"]):
        ctx.emit("fast", i=i)
    return input_dict["n"]
"""


@pytest.mark.usefixtures("no_gc")
async def test_a_child_that_emits_fast_does_not_hold_the_loop_either() -> None:
    async with code_runtime() as runtime:
        stop = asyncio.Event()
        probe = asyncio.create_task(_longest_turn_cpu_s(stop))
        await asyncio.sleep(0)
        record, _ = await run_code(runtime, FAST_CHILD, {"n": 50_000})
        stop.set()
        longest = await probe
    assert record.status == "success", record.error
    assert longest < 0.03, f"one turn of the loop took {longest * 1000:.1f} ms of CPU"
