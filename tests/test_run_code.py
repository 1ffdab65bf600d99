"""run-code in the runtime: submitted code in a child process (actors.code).

Validation and framing are unit-tested; everything else runs real children
through a real :class:`~actors.runtime.Runtime` with the code agent, so stop,
limits and crashes go through the run actor exactly as in the server.
Waiting is on subscriptions or polls with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.code import protocol
from actors.code.agent import CodeAgent, CodeSettings, make_code_agent
from actors.code.pool import WorkerPool
from actors.code.validate import InvalidCode, check_code
from actors.errors import InvalidRequest
from actors.messages import StartRun, StopRun, Subscribe
from actors.records import Event, RunRecord
from actors.runtime import Runtime
from actors.stream_items import Finished
from tests.runtime_helpers import ALICE, collect, config, run_to_end, wait_until

STOP_GRACE_S = 0.5
SETTINGS = CodeSettings(memory_mib=256)


@asynccontextmanager
async def code_runtime(settings: CodeSettings = SETTINGS) -> AsyncIterator[Runtime]:
    factory = make_code_agent(settings)
    runtime = Runtime(config(stop_grace_s=STOP_GRACE_S), code_agent=factory)
    await runtime.start()
    await factory.start()  # the runs below get pre-started children (pool_size > 0)
    try:
        yield runtime
    finally:
        await runtime.shutdown(grace_s=0.5)
        await factory.aclose()


async def run_code(
    runtime: Runtime, code: str, input: dict[str, Any] | None = None, **kw: Any
) -> tuple[RunRecord, list[Event]]:
    return await run_to_end(runtime, ALICE, "run-code", input or {}, code=code, **kw)


def in_runtime(
    body: Callable[[Runtime], Awaitable[None]], settings: CodeSettings = SETTINGS
) -> None:
    async def main() -> None:
        async with code_runtime(settings) as runtime:
            await body(runtime)

    asyncio.run(main())


def of_type(events: list[Event], type: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type]


async def next_event(sub: Any, type: str) -> Event:
    """Read ``sub`` until an event of ``type`` (fails if the run ends first)."""
    async for item in sub:
        if isinstance(item, Event) and item.type == type:
            return item
        assert not isinstance(item, Finished), f"run ended before a {type!r} event: {item}"
    raise AssertionError(f"subscription ended before a {type!r} event")


# --------------------------------------------------------------------------
# Submit-time checks (compile + ast, nothing executed)


@pytest.mark.timeout(10)
def test_syntax_error_names_the_line() -> None:
    code = "import asyncio\n\nasync def run(input_dict, ctx)\n    return 1\n"
    with pytest.raises(InvalidCode) as err:
        check_code(code)
    assert err.value.line == 3
    assert err.value.http_status == 422
    assert err.value.code == "invalid_code"
    assert "line 3" in err.value.message
    assert err.value.reason


@pytest.mark.timeout(10)
def test_compiler_errors_are_caught_too() -> None:
    with pytest.raises(InvalidCode) as err:
        check_code("async def run(input_dict, ctx):\n    pass\n\nawait run(1, 2)\n")
    assert err.value.line == 4
    assert "await" in err.value.reason


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("code", "line", "words"),
    [
        ("x = 1\n", None, "no top-level"),
        ("def helper():\n    pass\n\ndef run(input_dict, ctx):\n    return 1\n", 4, "async"),
        ("async def run(input_dict):\n    return 1\n", 1, "two arguments"),
        ("async def run(a, b, c):\n    return 1\n", 1, "requires 3"),
        ("async def run(a, b, *, c):\n    return 1\n", 1, "keyword-only"),
        ("async def run(a, b):\n    pass\nrun = 5\n", 3, "async def"),
        ("if True:\n    async def run(a, b):\n        pass\n", None, "no top-level"),
        ("x = 'a\x00b'\x00\n", None, "null"),
    ],
)
def test_code_without_a_usable_async_run_is_refused(
    code: str, line: int | None, words: str
) -> None:
    with pytest.raises(InvalidCode) as err:
        check_code(code)
    assert err.value.line == line, err.value.message
    assert words in err.value.message


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "code",
    [
        "async def run(input_dict, ctx):\n    return 1\n",
        "async def run(*args):\n    return 1\n",
        "async def run(i, c, extra=1, *, flag=False, **kw):\n    return 1\n",
        "def run(a, b):\n    pass\n\nasync def run(a, b):\n    return 2\n",
    ],
)
def test_valid_agents_pass(code: str) -> None:
    check_code(code)


@pytest.mark.timeout(10)
def test_registry_refuses_bad_code_and_env_for_internal_callers() -> None:
    async def body(runtime: Runtime) -> None:
        with pytest.raises(InvalidCode):
            await runtime.ask(StartRun(ALICE, "run-code", code="def run(a, b): pass"))
        with pytest.raises(InvalidRequest, match="env"):
            await runtime.ask(
                StartRun(
                    ALICE,
                    "run-code",
                    code="async def run(a, b): pass",
                    env={"BAD-NAME": "x"},
                )
            )

    in_runtime(body)


# --------------------------------------------------------------------------
# Framing


@pytest.mark.timeout(10)
def test_oversized_event_is_truncated_with_a_marker_not_dropped() -> None:
    message = protocol.event_message("big", {"blob": "x" * 1000}, max_bytes=100)
    data = message["data"]
    assert message["type"] == "big"
    assert data["truncated"] is True
    assert data["original_bytes"] == len(json.dumps({"blob": "x" * 1000}, separators=(",", ":")))
    assert data["preview"].startswith('{"blob":"xxx')
    small = protocol.event_message("small", {"n": 1}, max_bytes=100)
    assert small["data"] == {"n": 1}


@pytest.mark.timeout(10)
def test_frames_round_trip_and_refuse_garbage() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        frame = protocol.encode({"t": "event", "type": "x", "data": {"s": "h\u00e9 \u2603"}})
        reader.feed_data(frame + protocol.HEADER.pack(10**9))
        reader.feed_eof()
        assert await protocol.read_message(reader, 1000) == {
            "t": "event",
            "type": "x",
            "data": {"s": "h\u00e9 \u2603"},
        }
        with pytest.raises(protocol.ProtocolError, match="larger than the limit"):
            await protocol.read_message(reader, 1000)

    asyncio.run(main())


# --------------------------------------------------------------------------
# Running code


@pytest.mark.timeout(20)
def test_events_print_and_logging_arrive_in_order_and_the_result_crosses_back() -> None:
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

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_cpu_bound_agent_is_killed_within_stop_grace_plus_one_second() -> None:
    code = """
async def run(input_dict, ctx):
    ctx.emit("spinning")
    while True:
        pass
"""

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_cooperative_stop_reaches_a_busy_loop_and_ctx_sleep() -> None:
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

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_max_duration_kills_a_spinning_child() -> None:
    code = "async def run(input_dict, ctx):\n    while True:\n        pass\n"

    async def body(runtime: Runtime) -> None:
        t0 = time.monotonic()
        record, _ = await run_code(runtime, code, max_duration_s=0.5)
        assert time.monotonic() - t0 < 2.0
        assert record.status == "error"
        assert record.error == "timed out after 0.5 s"

    in_runtime(body)


@pytest.mark.timeout(20)
def test_processes_the_code_started_die_with_its_run() -> None:
    code = """
import asyncio, subprocess, sys

async def run(input_dict, ctx):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ctx.emit("spawned", pid=p.pid)
    while True:
        await asyncio.sleep(1)
"""

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        return state in ("Z", "X")  # dead, waiting for init to reap it

    async def body(runtime: Runtime) -> None:
        started = await runtime.ask(StartRun(ALICE, "run-code", code=code))
        sub = await runtime.ask(Subscribe(ALICE, started.run_id))
        pid = (await next_event(sub, "spawned")).data["pid"]
        assert not gone(pid)
        await runtime.ask(StopRun(ALICE, started.run_id))
        _, terminal = await collect(sub)
        assert terminal.record.status == "stopped"
        await wait_until(lambda: gone(pid), timeout=5, what=f"grandchild {pid} to die")

    in_runtime(body)


@pytest.mark.timeout(20)
def test_memory_hog_is_stopped_by_the_address_space_limit() -> None:
    at_once = "async def run(input_dict, ctx):\n    return len(bytearray(1 << 30))\n"
    creeping = """
async def run(input_dict, ctx):
    hoard = []
    while True:
        hoard.append(bytearray(8 << 20))
"""

    async def body(runtime: Runtime) -> None:
        for code in (at_once, creeping):
            record, events = await run_code(runtime, code)
            assert record.status == "error"
            assert record.error is not None
            assert "out of memory (address-space limit 256 MiB)" in record.error
            (error,) = of_type(events, "error")
            assert error["type"] == "MemoryError"
            assert 'File "<agent>"' in error["traceback"]  # the child's own traceback

    in_runtime(body)


@pytest.mark.timeout(20)
def test_crashing_children_end_their_run_and_nothing_else() -> None:
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

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_two_concurrent_printing_runs_keep_their_own_output() -> None:
    code = """
import asyncio, logging
async def run(input_dict, ctx):
    for i in range(40):
        print(input_dict["marker"], i)
        logging.warning("%s log %d", input_dict["marker"], i)
        await asyncio.sleep(0.002)
    return input_dict["marker"]
"""

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_child_environment_has_only_basics_and_the_request_env(
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

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_results_and_exceptions_cross_back_clearly() -> None:
    non_json = "async def run(input_dict, ctx):\n    return {1, 2}\n"
    raises = "async def run(input_dict, ctx):\n    x = 1\n    raise ValueError(f'boom {x}')\n"
    reserved = "async def run(input_dict, ctx):\n    ctx.emit('done', status='success')\n"
    plain_call = "import asyncio\nasync def run(i, ctx):\n    return await asyncio.sleep(0, 7)\n"

    async def body(runtime: Runtime) -> None:
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

    in_runtime(body)


@pytest.mark.timeout(20)
def test_an_oversized_event_arrives_truncated_with_the_marker() -> None:
    code = """
async def run(input_dict, ctx):
    ctx.emit("big", blob="x" * 300_000)
    print("y" * 300_000)
    ctx.emit("small", n=1)
    return "ok"
"""

    async def body(runtime: Runtime) -> None:
        record, events = await run_code(runtime, code)
        assert record.status == "success", record.error
        big, out = events[0].data, events[1].data
        (small,) = of_type(events, "small")
        assert events[0].type == "big"
        assert big["truncated"] is True
        assert big["original_bytes"] > 300_000
        assert big["preview"].startswith('{"blob":"xxxx')
        assert len(big["preview"]) <= protocol.PREVIEW_CHARS
        assert events[1].type == "stdout"
        assert out["truncated"] is True
        assert small == {"n": 1}

    in_runtime(body)


@pytest.mark.timeout(20)
def test_cpu_limit_follows_max_duration() -> None:
    agent = CodeAgent("", max_duration_s=2.5, settings=CodeSettings(cpu_margin_s=5))
    assert agent.cpu_s == 8
    assert CodeAgent("", settings=CodeSettings(default_cpu_s=99)).cpu_s == 99
    assert CodeAgent("", max_duration_s=1, settings=CodeSettings(cpu_s=3)).cpu_s == 3

    code = "async def run(input_dict, ctx):\n    while True:\n        pass\n"

    async def body(runtime: Runtime) -> None:
        record, _ = await run_code(runtime, code)
        assert record.status == "error"
        assert record.error is not None
        assert "CPU time limit exceeded (1 s)" in record.error

    in_runtime(body, CodeSettings(memory_mib=256, cpu_s=1))


# --------------------------------------------------------------------------
# The pool of pre-started, single-use children


def pool_of(runtime: Runtime) -> WorkerPool:
    pool = runtime._code_agent.pool
    assert isinstance(pool, WorkerPool)
    return pool


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


PID_AGENT = """
import os

async def run(input_dict, ctx):
    ctx.emit("hello")
    return {"pid": os.getpid(), "cwd": os.getcwd(), "home": os.environ["HOME"],
            "env": dict(os.environ)}
"""


@pytest.mark.timeout(20)
def test_a_run_takes_a_pre_started_child_which_serves_only_it_and_is_replaced() -> None:
    async def body(runtime: Runtime) -> None:
        pool = pool_of(runtime)
        await wait_until(lambda: len(pool.idle_pids) == 2)
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
        await wait_until(lambda: gone(result["pid"]))
        await wait_until(lambda: len(pool.idle_pids) == 2 and result["pid"] not in pool.idle_pids)
        second, _ = await run_code(runtime, PID_AGENT)
        assert isinstance(second.result, dict)
        assert second.result["pid"] != result["pid"]
        assert second.result["cwd"] != result["cwd"]

    in_runtime(body)


@pytest.mark.timeout(20)
def test_a_child_that_died_while_idle_is_replaced_and_never_handed_to_a_run() -> None:
    async def body(runtime: Runtime) -> None:
        pool = pool_of(runtime)
        await wait_until(lambda: len(pool.idle_pids) == 2)
        victim = pool.idle_pids[0]
        os.kill(victim, signal.SIGKILL)
        record, _ = await run_code(runtime, PID_AGENT)  # at once: no waiting for the watcher
        assert record.status == "success", record.error
        assert isinstance(record.result, dict)
        assert record.result["pid"] != victim
        await wait_until(lambda: gone(victim))
        await wait_until(lambda: len(pool.idle_pids) == 2 and victim not in pool.idle_pids)
        # Every idle child dead: the run spawns its own and still succeeds.
        for pid in pool.idle_pids:
            os.kill(pid, signal.SIGKILL)
        record, _ = await run_code(runtime, PID_AGENT)
        assert record.status == "success", record.error

    in_runtime(body)


@pytest.mark.timeout(20)
def test_pool_size_zero_spawns_a_child_per_run() -> None:
    async def body(runtime: Runtime) -> None:
        assert runtime._code_agent.pool is None
        record, events = await run_code(runtime, PID_AGENT, env={"GREETING": "hi"})
        assert record.status == "success", record.error
        assert isinstance(record.result, dict)
        assert record.result["env"]["GREETING"] == "hi"
        assert record.result["cwd"] == record.result["home"]
        assert of_type(events, "hello") == [{}]

    in_runtime(body, CodeSettings(memory_mib=256, pool_size=0))


@pytest.mark.timeout(20)
def test_closing_the_factory_kills_and_reaps_the_idle_children() -> None:
    async def main() -> None:
        factory = make_code_agent(SETTINGS)
        await factory.start()
        assert factory.pool is not None
        pids = factory.pool.idle_pids
        assert len(pids) == 2
        await factory.aclose()
        assert factory.pool.idle_pids == []
        assert all(gone(pid) for pid in pids)  # reaped, not zombies

    asyncio.run(main())
