"""run-code's pool of pre-started, single-use children (runyard.actors.code.pool).

A run takes an idle child that serves only it; the pool tops itself up,
replaces children that died while idle and is emptied (killed and reaped)
when the factory closes.
"""

from __future__ import annotations

import os
import signal

import pytest

from runyard.actors.code.agent import CodeSettings, make_code_agent
from runyard.actors.code.pool import WorkerPool
from runyard.actors.runtime import Runtime
from tests.run_code_helpers import SETTINGS, code_runtime, gone, of_type, run_code
from tests.waiting import wait_until_async


def pool_of(runtime: Runtime) -> WorkerPool:
    pool = runtime._code_agent.pool
    assert isinstance(pool, WorkerPool)
    return pool


PID_AGENT = """
import os

async def run(input_dict, ctx):
    ctx.emit("hello")
    return {"pid": os.getpid(), "cwd": os.getcwd(), "home": os.environ["HOME"],
            "env": dict(os.environ)}
"""


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_a_run_takes_a_pre_started_child_which_serves_only_it_and_is_replaced() -> None:
    async with code_runtime() as runtime:
        pool = pool_of(runtime)
        await wait_until_async(lambda: len(pool.idle_pids) == 2)
        idle = pool.idle_pids
        record, _ = await run_code(runtime, PID_AGENT, env={"GREETING": "hi"})
        assert record.status == "success", record.error
        result = record.result
        assert isinstance(result, dict)
        assert result["pid"] in idle
        # The per-run part happened after the job arrived: its own directory and env.
        assert result["cwd"] == result["home"] != "/"
        assert result["env"] == {
            "HOME": result["home"],
            "TMPDIR": result["home"],
            "LANG": "C.UTF-8",
            "GREETING": "hi",
        }
        # Single use: the child is gone after its run, and the pool is topped up.
        await wait_until_async(lambda: gone(result["pid"]))
        await wait_until_async(
            lambda: len(pool.idle_pids) == 2 and result["pid"] not in pool.idle_pids
        )
        second, _ = await run_code(runtime, PID_AGENT)
        assert isinstance(second.result, dict)
        assert second.result["pid"] != result["pid"]
        assert second.result["cwd"] != result["cwd"]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_a_child_that_died_while_idle_is_replaced_and_never_handed_to_a_run() -> None:
    async with code_runtime() as runtime:
        pool = pool_of(runtime)
        await wait_until_async(lambda: len(pool.idle_pids) == 2)
        victim = pool.idle_pids[0]
        os.kill(victim, signal.SIGKILL)
        record, _ = await run_code(runtime, PID_AGENT)  # at once: no waiting for the watcher
        assert record.status == "success", record.error
        assert isinstance(record.result, dict)
        assert record.result["pid"] != victim
        await wait_until_async(lambda: gone(victim))
        await wait_until_async(lambda: len(pool.idle_pids) == 2 and victim not in pool.idle_pids)
        # Every idle child dead: the run spawns its own and still succeeds.
        for pid in pool.idle_pids:
            os.kill(pid, signal.SIGKILL)
        record, _ = await run_code(runtime, PID_AGENT)
        assert record.status == "success", record.error


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_pool_size_zero_spawns_a_child_per_run() -> None:
    async with code_runtime(CodeSettings(memory_mib=256, pool_size=0)) as runtime:
        assert runtime._code_agent.pool is None
        record, events = await run_code(runtime, PID_AGENT, env={"GREETING": "hi"})
        assert record.status == "success", record.error
        assert isinstance(record.result, dict)
        assert record.result["env"]["GREETING"] == "hi"
        assert record.result["cwd"] == record.result["home"]
        assert of_type(events, "hello") == [{}]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_closing_the_factory_kills_and_reaps_the_idle_children() -> None:
    factory = make_code_agent(SETTINGS)
    await factory.start()
    assert factory.pool is not None
    pids = factory.pool.idle_pids
    assert len(pids) == 2
    await factory.aclose()
    assert factory.pool.idle_pids == []
    assert all(gone(pid) for pid in pids)  # reaped, not zombies
