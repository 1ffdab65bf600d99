"""Quotas and backpressure: no run can hold unbounded memory, whatever its agent does.

Real runtimes, real run-code children, a real SQLite store where one matters.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runyard.actors import Caller, GetRun, Introspect, Runtime, StartRun, Subscribe
from runyard.actors.agents import builtin_catalog
from runyard.actors.asyncio_actor import ask
from runyard.actors.context import RunContext
from runyard.actors.persistence_protocol import LoadRun
from runyard.actors.quotas import PREVIEW_CHARS
from runyard.persistence.actor import PersistenceActor
from tests.run_code_helpers import code_runtime, run_code
from tests.runtime_helpers import ALICE, collect, config, run_to_end
from tests.store_helpers import CountingStore
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def big_then_small(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    ctx.emit("big", blob="x" * int(input_dict["size"]))
    ctx.emit("small", n=1)
    return "ok"


async def endless(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    i = 0
    while True:
        i += 1
        ctx.emit("tick", i=i, pad="p" * int(input_dict.get("pad", 0)))
        if i % 50 == 0:
            await ctx.ready()


def catalog() -> Any:
    c = builtin_catalog()
    c.register("big_then_small", big_then_small)
    c.register("endless", endless)
    return c


async def test_an_oversized_event_from_an_in_process_agent_becomes_a_marker() -> None:
    runtime = Runtime(config(max_event_bytes=4096), catalog=catalog())
    await runtime.start()
    try:
        record, _ = await run_to_end(runtime, ALICE, "big_then_small", {"size": 10_000})
    finally:
        await runtime.shutdown(grace_s=0.1)
    assert record.status == "success"
    big, small = record.events[0].data, record.events[1].data
    assert big["truncated"] is True
    assert big["original_bytes"] > 10_000
    assert big["preview"].startswith('{"blob":"xxx')
    assert len(big["preview"]) <= PREVIEW_CHARS
    assert small == {"n": 1}


@pytest.mark.parametrize(
    ("limits", "pad", "named"),
    [({"max_run_events": 120}, 0, "120 events"), ({"max_run_bytes": 50_000}, 1000, "50000 bytes")],
)
async def test_past_a_run_quota_the_run_ends_error_and_keeps_what_came_before(
    limits: dict[str, int], pad: int, named: str
) -> None:
    runtime = Runtime(config(**limits), catalog=catalog())
    await runtime.start()
    try:
        record, events = await run_to_end(runtime, ALICE, "endless", {"pad": pad})
    finally:
        await runtime.shutdown(grace_s=0.1)
    assert record.status == "error"
    assert record.error is not None
    assert named in record.error
    assert "quota" in record.error
    types = [e.type for e in record.events]
    assert types[-2:] == ["error", "done"]
    ticks = [e.data["i"] for e in record.events if e.type == "tick"]
    assert ticks == list(range(1, len(ticks) + 1))  # everything before is kept, in order
    assert len(ticks) >= 40
    if "max_run_events" in limits:
        assert len(ticks) == limits["max_run_events"]
    assert events == list(record.events)


async def test_a_raw_frame_from_a_run_code_child_is_capped_in_the_server() -> None:
    # The code writes a protocol frame straight to its socket, behind its ctx's back.
    code = """
import json, os, struct, sys
async def run(input_dict, ctx):
    body = json.dumps({"t": "event", "type": "raw", "data": {"blob": "z" * 400000}}).encode()
    os.write(int(sys.argv[-1]), struct.pack("!I", len(body)) + body)
    ctx.emit("after", n=1)
    return "ok"
"""
    async with code_runtime() as runtime:
        record, events = await run_code(runtime, code)
    assert record.status == "success", record.error
    raw = next(e for e in events if e.type == "raw").data
    assert raw["truncated"] is True
    assert raw["original_bytes"] > 400_000
    assert len(raw["preview"]) <= PREVIEW_CHARS


async def test_the_finished_run_cache_is_bounded_in_bytes_and_evicted_runs_are_still_read(
    tmp_path: Path,
) -> None:
    persistence = PersistenceActor.start(CountingStore(tmp_path / "runs.sqlite3"))
    runtime = Runtime(config(cache_bytes=60_000), catalog=catalog(), persistence=persistence)
    await runtime.start()
    try:
        ids = []
        for _ in range(6):
            record, _ = await run_to_end(runtime, ALICE, "big_then_small", {"size": 20_000})
            ids.append(record.run_id)
        snapshot = await runtime.ask(_introspect())
        assert snapshot.cached_finished <= 3  # 6 x ~20 kB never fit in 60 kB
        for run_id in ids:  # the oldest come from the store, the same as ever
            got = await runtime.ask(GetRun(ALICE, run_id), timeout=5)
            assert got.status == "success"
            assert got.events[0].data["blob"] == "x" * 20_000
    finally:
        await runtime.shutdown(grace_s=0.1)


async def test_a_store_that_cannot_keep_up_slows_the_agent_instead_of_growing_memory(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "runs.sqlite3", hold_first=True)
    persistence = PersistenceActor.start(store)
    bound = 64 * 1024
    runtime = Runtime(
        config(max_unstored_bytes=bound, store_timeout_s=30),
        catalog=catalog(),
        persistence=persistence,
    )
    await runtime.start()
    try:
        start = asyncio.ensure_future(
            runtime.ask(StartRun(Caller("alice"), "chatty", {"n": 5000, "batch": 10, "size": 200}))
        )
        # The store holds its first write: the run's header is not stored yet, nor anything.
        await asyncio.to_thread(store.entered.wait, 10)

        async def parked() -> int:
            live = (await runtime.ask(_introspect())).live
            return live[0].unstored_bytes if live else 0

        # The agent runs into the bound and waits there: memory stops growing.
        await wait_until_async(
            lambda: _at_least(parked(), bound), what="the run to reach its bound"
        )
        # Unheld, the agent would have emitted all 5,000 events (~1.1 MB) by now: it
        # yields to the loop every 10 events, and nothing is ever stored meanwhile.
        held = await parked()
        assert bound <= held <= bound + 10 * 300  # one batch of 10 events may pass the bound
        store.gate.set()
        started = await asyncio.wait_for(start, 10)
        sub = await runtime.ask(Subscribe(ALICE, started.run_id), timeout=5)
        events, terminal = await collect(sub)
        assert terminal.record.status == "success"
        assert [e.seq for e in events] == list(range(1, 5002))
        stored = await ask(persistence, LoadRun(started.run_id), timeout=5)
        assert len(stored.events) == 5001
    finally:
        store.gate.set()
        await runtime.shutdown(grace_s=0.1)


def _introspect() -> Introspect:
    return Introspect(Caller("ops", admin=True))


async def _at_least(value: Any, floor: int) -> bool:
    return bool(await value >= floor)
