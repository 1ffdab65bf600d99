"""The full run record in the runtime: ``ctx.op`` and ``ops_log``, ``schema_warnings``,
and the traceback a run's user is shown (in-process agents and run-code alike).

Real runtimes (no store: the record is the run actor's own; the stores are
covered by the store contract tests), real run-code children.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from runyard.actors.context import RunContext
from runyard.actors.messages import RestartPolicy
from runyard.actors.ops_log import MAX_KINDS, OpsTally, check_op
from runyard.actors.records import Event
from tests.run_code_helpers import code_runtime, of_type, run_code
from tests.runtime_helpers import ALICE, catalog_with, config, run_to_end, running_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

ROOT = str(Path(__file__).resolve().parents[1])
"""The server's install directory: never in what a run's user is shown."""

ITEMS = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def spender(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    ctx.op("llm", "chat", model="m", tokens=120, cost=0.002, duration_s=1.25)
    ctx.op("llm", "chat", model="m", tokens=80, cost=0.001)
    ctx.op("tool", "search", duration_s=0.2, query="x")
    ctx.op("cache", "lookup")
    if ctx.attempt < int(input_dict.get("fail_times", 0)):
        raise RuntimeError("flaky")
    return input_dict.get("result", {"n": 1})


CATALOG = catalog_with(spender=spender)


# --------------------------------------------------------------------------
# ctx.op and ops_log


async def test_ops_are_op_events_and_the_record_sums_them_per_kind() -> None:
    async with running_runtime(catalog=CATALOG) as rt:
        record, events = await run_to_end(rt, ALICE, "spender")
    ops = [e.data for e in events if e.type == "op"]
    assert ops[0] == {
        "kind": "llm",
        "name": "chat",
        "model": "m",
        "tokens": 120,
        "cost": 0.002,
        "duration_s": 1.25,
    }
    assert ops[2] == {"kind": "tool", "name": "search", "duration_s": 0.2, "query": "x"}
    expected = {
        "llm": {"count": 2, "tokens": 200, "cost": 0.003, "duration_s": 1.25},
        "tool": {"count": 1, "duration_s": 0.2},
        "cache": {"count": 1},  # a total no op gave is left out
    }
    assert record.ops_log == expected
    assert events[-1].type == "done"
    assert events[-1].data["ops_log"] == expected
    assert record.schema_warnings is None  # no schema: nothing checked
    assert "schema_warnings" not in events[-1].data


async def test_ops_from_before_a_restart_count_too() -> None:
    policy = RestartPolicy(max_restarts=2, backoff_s=0)
    async with running_runtime(catalog=CATALOG) as rt:
        record, events = await run_to_end(rt, ALICE, "spender", {"fail_times": 2}, restart=policy)
    assert record.status == "success"
    assert [e.type for e in events].count("restart") == 2
    assert record.ops_log["llm"] == {"count": 6, "tokens": 600, "cost": 0.009, "duration_s": 3.75}
    assert record.ops_log["cache"] == {"count": 3}


async def test_a_run_without_ops_has_an_empty_ops_log_and_the_same_done_as_before() -> None:
    async with running_runtime() as rt:
        record, events = await run_to_end(rt, ALICE, "echo", {"a": 1})
    assert record.ops_log == {}
    assert events[-1].data == {"status": "success", "result": {"a": 1}, "error": None}


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda ctx: ctx.op("has space", "x"), "op kind 'has space' must match"),
        (lambda ctx: ctx.op("llm", ""), "op name '' must be a non-empty string"),
        (lambda ctx: ctx.op("llm", "chat", tokens=-1), "'tokens' must be a finite number >= 0"),
        (lambda ctx: ctx.op("llm", "chat", cost="1"), "'cost' must be a finite number >= 0"),
        (lambda ctx: ctx.op("llm", "chat", duration_s=True), "'duration_s' must be a finite"),
        (lambda ctx: ctx.op("llm", "chat", kind="x"), "may not be named 'kind'"),
        (lambda ctx: ctx.emit("op", kind="llm"), "event type 'op' is reserved"),
    ],
)
async def test_a_malformed_op_is_refused_in_the_agent(call: Any, words: str) -> None:
    seen: list[str] = []

    async def careless(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        try:
            call(ctx)
        except ValueError as exc:
            seen.append(str(exc))
        return None

    async with running_runtime(catalog=catalog_with(careless=careless)) as rt:
        record, events = await run_to_end(rt, ALICE, "careless")
    assert len(seen) == 1
    assert words in seen[0]
    assert [e.type for e in events] == ["done"]
    assert record.ops_log == {}


def test_the_tally_is_seeded_from_a_stored_trace_and_bounds_its_kinds() -> None:
    def op(seq: int, **data: Any) -> Event:
        return Event(seq, 0.0, "op", data)

    stored = [op(1, kind="llm", tokens=5), op(2, kind=7), Event(3, 0.0, "log", {"kind": "llm"})]
    tally = OpsTally(stored)
    tally.add(op(4, kind="llm", tokens=5.5, cost="free"))
    assert tally.summary() == {"llm": {"count": 2, "tokens": 10.5}}
    for i in range(MAX_KINDS + 5):
        tally.add(op(5 + i, kind=f"k{i}"))
    summary = tally.summary()
    assert len(summary) == MAX_KINDS + 1
    assert summary["(other)"] == {"count": 6}
    assert check_op("a.b:c-d_e", "n", {"x": [1]}) == {"kind": "a.b:c-d_e", "name": "n", "x": [1]}


# --------------------------------------------------------------------------
# schema_warnings


async def test_a_success_that_does_not_match_its_schema_stays_a_success_with_warnings() -> None:
    async with running_runtime(catalog=CATALOG) as rt:
        bad, events = await run_to_end(
            rt, ALICE, "spender", {"result": {"n": "one"}}, output_schema=ITEMS
        )
        good, _ = await run_to_end(rt, ALICE, "spender", {"result": {"n": 1}}, output_schema=ITEMS)
        failed, failed_events = await run_to_end(
            rt, ALICE, "failer", {"message": "x"}, output_schema=ITEMS
        )
    assert bad.status == "success"
    assert bad.schema_warnings == [{"path": "/n", "message": "'one' is not of type 'integer'"}]
    assert events[-1].data["schema_warnings"] == bad.schema_warnings
    assert bad.options == {"output_schema": ITEMS}
    assert good.schema_warnings == []
    assert failed.status == "error"
    assert failed.schema_warnings is None
    assert "schema_warnings" not in failed_events[-1].data


# --------------------------------------------------------------------------
# tracebacks


async def test_an_in_process_agents_traceback_starts_at_its_own_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="runyard.run")

    async def emits_badly(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        ctx.emit("done")  # reserved: the runtime raises ValueError from inside ctx

    async with running_runtime(catalog=catalog_with(emits_badly=emits_badly)) as rt:
        record, events = await run_to_end(rt, ALICE, "emits_badly")
        _, failer_events = await run_to_end(rt, ALICE, "failer", {"message": "kaboom"})
    shown = of_type(events, "error")[0]["traceback"]
    lines = shown.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "tests/test_run_record.py", line ')
    assert lines[1].endswith(", in emits_badly")
    assert lines[-1] == "ValueError: event type 'done' is reserved for the runtime"
    assert "context.py" not in shown
    assert "run.py" not in shown
    assert ROOT not in shown
    failer = of_type(failer_events, "error")[0]["traceback"]
    assert '  File "runyard/actors/agents.py", line ' in failer
    assert "in failer" in failer
    assert ROOT not in failer
    assert "_run_agent" not in failer
    # Operators get all of it in the log: the runtime's frames, full paths.
    logged = [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    assert any("emits_badly" in text and f"{ROOT}/runyard/actors/run.py" in text for text in logged)
    assert record.error == "ValueError: event type 'done' is reserved for the runtime"


RAISES = """
async def run(input_dict, ctx):
    helper(input_dict)

def helper(input_dict):
    ctx_less = input_dict["missing"]
"""

BAD_OP = """
async def run(input_dict, ctx):
    ctx.op("llm", "chat", tokens=1)
    ctx.op("bad kind", "chat")
"""

OPS = """
import json

async def run(input_dict, ctx):
    ctx.op("llm", "chat", model="m", tokens=120, cost=0.002, duration_s=1.3)
    ctx.op("tool", "search", duration_s=0.2)
    json.dumps({"x": object()})
"""


async def test_run_code_tracebacks_show_the_agents_frames_and_no_server_path() -> None:
    async with code_runtime() as rt:
        record, events = await run_code(rt, RAISES)
        bad_op, bad_op_events = await run_code(rt, BAD_OP)
        ops, ops_events = await run_code(rt, OPS)
        crash, crash_events = await run_code(
            rt, "import os\nasync def run(input_dict, ctx):\n    os._exit(3)\n"
        )
    shown = of_type(events, "error")[0]["traceback"]
    assert shown.splitlines()[:2] == [
        "Traceback (most recent call last):",
        '  File "<agent>", line 3, in run',
    ]
    assert '  File "<agent>", line 6, in helper' in shown
    assert shown.splitlines()[-1] == "KeyError: 'missing'"
    assert record.error == "KeyError: 'missing'"

    # An op refused by the child's ctx: the user's line, then the error; no ctx internals.
    op_tb = of_type(bad_op_events, "error")[0]["traceback"]
    assert op_tb.splitlines()[1] == '  File "<agent>", line 4, in run'
    assert op_tb.splitlines()[-1].startswith("ValueError: op kind 'bad kind' must match")
    assert "child.py" not in op_tb
    assert "ops_log.py" not in op_tb
    assert bad_op.ops_log == {"llm": {"count": 1, "tokens": 1}}

    # Frames in the standard library stay, by their short path.
    std_tb = of_type(ops_events, "error")[0]["traceback"]
    assert '  File "json/__init__.py", line ' in std_tb
    assert '  File "json/encoder.py", line ' in std_tb
    assert ops.ops_log == {
        "llm": {"count": 1, "tokens": 120, "cost": 0.002, "duration_s": 1.3},
        "tool": {"count": 1, "duration_s": 0.2},
    }
    assert [d["kind"] for d in of_type(ops_events, "op")] == ["llm", "tool"]

    # The machinery's own failure shows no frames at all.
    assert of_type(crash_events, "error")[0]["traceback"] == (
        "ChildCrashed: child exited with code 3\n"
    )
    assert crash.error == "ChildCrashed: child exited with code 3"

    for tb in (shown, op_tb, std_tb):
        assert ROOT not in tb
        assert "/usr/" not in tb
        assert "site-packages" not in tb


BIG_OP = """
async def run(input_dict, ctx):
    ctx.op("llm", "chat", tokens=7, cost=0.5, prompt="p" * 400_000)
    return 1
"""


async def test_an_oversized_op_keeps_what_the_ops_log_needs() -> None:
    async def verbose(input_dict: dict[str, Any], ctx: RunContext) -> Any:
        ctx.op("llm", "chat", tokens=7, duration_s=0.5, prompt="p" * 10_000)
        return None

    cfg = config(max_event_bytes=4096)
    async with running_runtime(cfg, catalog=catalog_with(verbose=verbose)) as rt:
        record, events = await run_to_end(rt, ALICE, "verbose")
    [op] = of_type(events, "op")
    assert op == {
        "kind": "llm",
        "name": "chat",
        "tokens": 7,
        "duration_s": 0.5,
        "truncated": True,
        "original_bytes": op["original_bytes"],
    }
    assert op["original_bytes"] > 10_000
    assert record.ops_log == {"llm": {"count": 1, "tokens": 7, "duration_s": 0.5}}

    async with code_runtime() as code_rt:
        big, big_events = await run_code(code_rt, BIG_OP)
    assert big.status == "success", big.error
    [child_op] = of_type(big_events, "op")
    assert child_op["truncated"] is True
    assert "prompt" not in child_op
    assert big.ops_log == {"llm": {"count": 1, "tokens": 7, "cost": 0.5}}
