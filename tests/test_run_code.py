"""run-code in the runtime: submitted code in a child process (runyard.actors.code).

Real children through a real :class:`~runyard.actors.runtime.Runtime` with the code
agent (:func:`tests.run_code_helpers.code_runtime`), so stop, limits and
crashes go through the run actor exactly as in the server.  Waiting is on
subscriptions or polls with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest

from runyard.actors.code.agent import CodeAgent, CodeSettings
from runyard.actors.messages import StartRun, StopRun, Subscribe
from runyard.actors.quotas import PREVIEW_CHARS
from runyard.actors.stream_items import Finished
from tests.run_code_helpers import (
    STOP_GRACE_S,
    code_runtime,
    marked_processes,
    next_event,
    of_type,
    run_code,
)
from tests.runtime_helpers import ALICE, collect
from tests.waiting import wait_until_async


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_events_print_and_logging_arrive_in_order_and_the_result_crosses_back() -> None:
    code = """
import logging, os

async def run(input_dict, ctx):
    print("hello", input_dict["name"])
    logging.getLogger("agent.mine").info("working on %s", input_dict["name"])
    ctx.emit("progress", pct=50)
    print("to stderr", file=__import__("sys").stderr)
    try:
        1 / 0
    except ZeroDivisionError:
        logging.exception("caught")
    return {"greeting": "hi " + input_dict["name"], "run_id": ctx.run_id, "user": ctx.user_id}
"""

    async with code_runtime() as runtime:
        record, events = await run_code(runtime, code, {"name": "ada"})
        assert record.status == "success", record.error
        assert record.agent == "run-code"
        assert record.result == {
            "greeting": "hi ada",
            "run_id": record.run_id,
            "user": "alice",
        }
        kinds = [(e.type, e.data.get("stream") or e.data.get("level")) for e in events]
        assert kinds == [
            ("stdout", "stdout"),
            ("log", "INFO"),
            ("progress", None),
            ("stdout", "stderr"),
            ("log", "ERROR"),
            ("done", None),
        ]
        assert events[0].data["text"] == "hello ada\n"
        assert events[1].data == {
            "level": "INFO",
            "logger": "agent.mine",
            "message": "working on ada",
        }
        assert "ZeroDivisionError" in events[4].data["exception"]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_cpu_bound_agent_is_killed_within_stop_grace_plus_one_second() -> None:
    code = """
async def run(input_dict, ctx):
    ctx.emit("spinning")
    while True:
        pass
"""

    async with code_runtime() as runtime:
        started = await runtime.ask(StartRun(ALICE, "run-code", code=code))
        sub = await runtime.ask(Subscribe(ALICE, started.run_id))
        await next_event(sub, "spinning")
        t0 = time.monotonic()
        await runtime.ask(StopRun(ALICE, started.run_id))
        _, terminal = await collect(sub)
        elapsed = time.monotonic() - t0
        assert isinstance(terminal, Finished)
        assert terminal.record.status == "stopped"
        assert elapsed < STOP_GRACE_S + 1.0, elapsed


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_cooperative_stop_reaches_a_busy_loop_and_ctx_sleep() -> None:
    busy = """
async def run(input_dict, ctx):
    n = 0
    while not ctx.stopping:
        n += 1
        if n == 1000:
            ctx.emit("spinning")
    return {"spun": n >= 1000}
"""
    sleeper = """
async def run(input_dict, ctx):
    ctx.emit("sleeping")
    await ctx.sleep(60)
    return "not reached"
"""

    async with code_runtime() as runtime:
        for code, first in ((busy, "spinning"), (sleeper, "sleeping")):
            started = await runtime.ask(StartRun(ALICE, "run-code", code=code))
            sub = await runtime.ask(Subscribe(ALICE, started.run_id))
            await next_event(sub, first)
            t0 = time.monotonic()
            await runtime.ask(StopRun(ALICE, started.run_id, reason="enough"))
            _, terminal = await collect(sub)
            assert isinstance(terminal, Finished)
            # Well before the grace: the child heard the stop and ended on its own.
            assert time.monotonic() - t0 < STOP_GRACE_S, first
            assert terminal.record.status == "stopped"
            assert terminal.record.error == "enough"
            if code is busy:
                assert terminal.record.result == {"spun": True}


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_max_duration_kills_a_spinning_child() -> None:
    code = "async def run(input_dict, ctx):\n    while True:\n        pass\n"

    async with code_runtime() as runtime:
        t0 = time.monotonic()
        record, _ = await run_code(runtime, code, max_duration_s=0.5)
        assert time.monotonic() - t0 < 2.0
        assert record.status == "error"
        assert record.error == "timed out after 0.5 s"


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_processes_the_code_started_die_with_its_run() -> None:
    marker = f"runyard-test-{uuid.uuid4().hex}"
    code = f"""
import asyncio, subprocess, sys

async def run(input_dict, ctx):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
    ctx.emit("spawned", pid=p.pid)
    while True:
        await asyncio.sleep(1)
"""

    async with code_runtime() as runtime:
        started = await runtime.ask(StartRun(ALICE, "run-code", code=code))
        sub = await runtime.ask(Subscribe(ALICE, started.run_id))
        await next_event(sub, "spawned")
        # Popen returns after the fork; the exec that shows the marker may lag it.
        await wait_until_async(
            lambda: len(marked_processes(marker)) == 1, timeout=5, what="the grandchild's exec"
        )
        await runtime.ask(StopRun(ALICE, started.run_id))
        _, terminal = await collect(sub)
        assert terminal.record.status == "stopped"
        await wait_until_async(
            lambda: not marked_processes(marker), timeout=5, what="the grandchild to die"
        )


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_memory_hog_is_stopped_by_the_address_space_limit() -> None:
    at_once = "async def run(input_dict, ctx):\n    return len(bytearray(1 << 30))\n"
    creeping = """
async def run(input_dict, ctx):
    hoard = []
    while True:
        hoard.append(bytearray(8 << 20))
"""

    async with code_runtime() as runtime:
        for code in (at_once, creeping):
            record, events = await run_code(runtime, code)
            assert record.status == "error"
            assert record.error is not None
            assert "out of memory (address-space limit 256 MiB)" in record.error
            (error,) = of_type(events, "error")
            assert error["type"] == "MemoryError"
            assert 'File "<agent>"' in error["traceback"]  # the child's own traceback


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_crashing_children_end_their_run_and_nothing_else() -> None:
    calm = """
import asyncio
async def run(input_dict, ctx):
    for i in range(10):
        ctx.emit("tick", i=i)
        await asyncio.sleep(0.02)
    return "calm"
"""
    exits = "import os\nasync def run(input_dict, ctx):\n    os._exit(3)\n"
    segfaults = """
import os, signal
async def run(input_dict, ctx):
    os.kill(os.getpid(), signal.SIGSEGV)
"""

    async with code_runtime() as runtime:
        results = await asyncio.gather(
            run_code(runtime, calm), run_code(runtime, exits), run_code(runtime, segfaults)
        )
        (calm_record, calm_events), (exit_record, _), (segv_record, _) = results
        assert calm_record.status == "success"
        assert calm_record.result == "calm"
        assert len(of_type(calm_events, "tick")) == 10
        assert exit_record.status == "error"
        assert exit_record.error == "ChildCrashed: child exited with code 3"
        assert segv_record.status == "error"
        assert segv_record.error is not None
        assert "killed by signal SIGSEGV" in segv_record.error
        # And the runtime still runs code afterwards.
        record, _ = await run_code(runtime, "async def run(i, ctx):\n    return 'still here'\n")
        assert record.result == "still here"


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_two_concurrent_printing_runs_keep_their_own_output() -> None:
    code = """
import asyncio, logging
async def run(input_dict, ctx):
    for i in range(40):
        print(input_dict["marker"], i)
        logging.warning("%s log %d", input_dict["marker"], i)
        await asyncio.sleep(0.002)
    return input_dict["marker"]
"""

    async with code_runtime() as runtime:
        (a, a_events), (b, b_events) = await asyncio.gather(
            run_code(runtime, code, {"marker": "AAA"}), run_code(runtime, code, {"marker": "BBB"})
        )
        for record, events, mine, theirs in (
            (a, a_events, "AAA", "BBB"),
            (b, b_events, "BBB", "AAA"),
        ):
            assert record.status == "success", record.error
            text = "".join(d["text"] for d in of_type(events, "stdout"))
            assert text == "".join(f"{mine} {i}\n" for i in range(40))
            assert theirs not in text
            logs = [d["message"] for d in of_type(events, "log")]
            assert logs == [f"{mine} log {i}" for i in range(40)]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_child_environment_has_only_basics_and_the_request_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNYARD_TOKENS", "alice:super-secret-token")
    monkeypatch.setenv("SECRET", "hunter2")
    code = """
import os, sys
async def run(input_dict, ctx):
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "path": sys.path,
        "flags": sys.flags.isolated,
    }
"""

    async with code_runtime() as runtime:
        record, _ = await run_code(runtime, code, env={"API_KEY": "mine", "MODE": "test"})
        assert record.status == "success", record.error
        env = record.result["env"]
        assert "RUNYARD_TOKENS" not in env
        assert "SECRET" not in env
        assert "super-secret-token" not in json.dumps(record.result)
        assert "hunter2" not in json.dumps(record.result)
        assert env["API_KEY"] == "mine"
        assert env["MODE"] == "test"
        assert set(env) <= {"API_KEY", "MODE", "HOME", "TMPDIR", "LANG", "LC_CTYPE"}
        assert env["HOME"] == record.result["cwd"]
        assert "runyard-code-" in record.result["cwd"]
        assert record.result["flags"] == 1
        assert os.getcwd() not in record.result["path"]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_results_and_exceptions_cross_back_clearly() -> None:
    non_json = "async def run(input_dict, ctx):\n    return {1, 2}\n"
    raises = "async def run(input_dict, ctx):\n    x = 1\n    raise ValueError(f'boom {x}')\n"
    reserved = "async def run(input_dict, ctx):\n    ctx.emit('done', status='success')\n"
    plain_call = "import asyncio\nasync def run(i, ctx):\n    return await asyncio.sleep(0, 7)\n"

    async with code_runtime() as runtime:
        record, _ = await run_code(runtime, non_json)
        assert record.status == "error"
        assert record.error is not None
        assert record.error.startswith("TypeError: run() returned a value that is not JSON (set)")

        record, events = await run_code(runtime, raises)
        assert record.error == "ValueError: boom 1"
        (error,) = of_type(events, "error")
        assert 'File "<agent>", line 3, in run' in error["traceback"]
        assert "raise ValueError(f'boom {x}')" in error["traceback"]

        record, events = await run_code(runtime, reserved)
        assert record.status == "error"
        assert record.error == "ValueError: event type 'done' is reserved for the runtime"
        assert [e.type for e in events] == ["error", "done"]

        record, _ = await run_code(runtime, plain_call)
        assert record.result == 7


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_an_oversized_event_arrives_truncated_with_the_marker() -> None:
    code = """
async def run(input_dict, ctx):
    ctx.emit("big", blob="x" * 300_000)
    print("y" * 300_000)
    ctx.emit("small", n=1)
    return "ok"
"""

    async with code_runtime() as runtime:
        record, events = await run_code(runtime, code)
        assert record.status == "success", record.error
        big, out = events[0].data, events[1].data
        (small,) = of_type(events, "small")
        assert events[0].type == "big"
        assert big["truncated"] is True
        assert big["original_bytes"] > 300_000
        assert big["preview"].startswith('{"blob":"xxxx')
        assert len(big["preview"]) <= PREVIEW_CHARS
        assert events[1].type == "stdout"
        assert out["truncated"] is True
        assert small == {"n": 1}


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_cpu_limit_follows_max_duration() -> None:
    agent = CodeAgent("", max_duration_s=2.5, settings=CodeSettings(cpu_margin_s=5))
    assert agent.cpu_s == 8
    assert CodeAgent("", settings=CodeSettings(default_cpu_s=99)).cpu_s == 99
    assert CodeAgent("", max_duration_s=1, settings=CodeSettings(cpu_s=3)).cpu_s == 3

    code = "async def run(input_dict, ctx):\n    while True:\n        pass\n"

    async with code_runtime(CodeSettings(memory_mib=256, cpu_s=1)) as runtime:
        record, _ = await run_code(runtime, code)
        assert record.status == "error"
        assert record.error is not None
        assert "CPU time limit exceeded (1 s)" in record.error
