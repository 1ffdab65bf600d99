"""Runtime shutdown (live runs stopped, nothing left behind); the runtime from a plain thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest

from runyard.actors.background import BackgroundRuntime
from runyard.actors.errors import NotOwner, ShuttingDown
from runyard.actors.messages import (
    Caller,
    GetRun,
    Introspect,
    Shutdown,
    StartRun,
    StopAccepted,
    StopRun,
    Subscribe,
)
from runyard.actors.records import Event, RunRecord
from runyard.actors.registry import RegistryActor
from runyard.actors.runtime import Runtime
from runyard.actors.stream_items import Finished
from tests.runtime_helpers import (
    ADMIN,
    ALICE,
    BOB,
    actor_refs,
    collect,
    config,
    run_to_end,
    running_runtime,
)
from tests.waiting import wait_until

# --------------------------------------------------------------------------
# shutdown


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_shutdown_stops_live_runs_and_refuses_new_ones() -> None:
    threads_before = set(threading.enumerate())
    actors_before = actor_refs()
    test_tasks = asyncio.all_tasks()  # this test's and the test runner's
    rt = Runtime(config(stop_grace_s=0.2))
    await rt.start()
    sleeper = await rt.ask(StartRun(ALICE, "sleeper"))
    stubborn = await rt.ask(StartRun(BOB, "stubborn"))
    echo, _ = await run_to_end(rt, ALICE, "echo")
    subs = [
        await rt.ask(Subscribe(ALICE, sleeper.run_id)),
        await rt.ask(Subscribe(BOB, stubborn.run_id)),
    ]

    draining = rt.registry.ask(Shutdown(grace_s=0.1), block=False)
    with pytest.raises(ShuttingDown):
        await rt.ask(StartRun(ALICE, "echo"))
    assert await asyncio.wait_for(draining, 5) is None

    for sub in subs:
        events, terminal = await collect(sub)
        assert isinstance(terminal, Finished)
        assert terminal.record.status == "stopped"
        assert terminal.record.error == "server shutdown"
        assert events[-1].data["error"] == "server shutdown"
    snap = await rt.ask(Introspect(ADMIN))
    assert snap.accepting is False
    assert snap.live == ()
    assert (await rt.ask(GetRun(ALICE, echo.run_id))).status == "success"

    await rt.shutdown(grace_s=1)
    assert not rt.registry.is_alive()
    assert asyncio.all_tasks() <= test_tasks
    assert actor_refs() <= actors_before
    assert set(threading.enumerate()) <= threads_before


@pytest.mark.timeout(10)
def test_runtime_shutdown_with_a_live_run_leaves_no_thread_task_or_actor() -> None:
    async def main() -> RunRecord:
        actors_before = actor_refs()
        rt = Runtime(config(stop_grace_s=0.2))
        await rt.start()
        live = await rt.ask(StartRun(ALICE, "ticker", {"n": 1000, "interval": 0.05}))
        stubborn = await rt.ask(StartRun(ALICE, "stubborn"))
        sub = await rt.ask(Subscribe(ALICE, live.run_id))
        stub_sub = await rt.ask(Subscribe(ALICE, stubborn.run_id))
        await rt.shutdown(grace_s=0.05)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert actor_refs() <= actors_before
        _, terminal = await collect(stub_sub)
        assert terminal.record.status == "stopped"
        assert terminal.record.error == "server shutdown"
        with pytest.raises(pykka.ActorDeadError):
            await rt.ask(StartRun(ALICE, "echo"))
        events, terminal = await collect(sub)
        assert events[-1].type == "done"
        return terminal.record

    # Its own loop, not the anyio plugin's: what it checks is left once the loop is gone.
    threads_before = set(threading.enumerate())
    record = asyncio.run(main())
    assert record.status == "stopped"
    assert record.error == "server shutdown"
    assert set(threading.enumerate()) <= threads_before


# --------------------------------------------------------------------------
# from another thread


@pytest.mark.timeout(20)
def test_background_runtime_from_a_plain_thread() -> None:
    threads_before = set(threading.enumerate())
    actors_before = actor_refs()
    bg = BackgroundRuntime(Runtime(config(stop_grace_s=0.2)))
    try:
        assert asyncio._get_running_loop() is None  # this test's thread has no loop
        started = bg.ask(StartRun(ALICE, "ticker", {"n": 5, "interval": 0.01}), timeout=5)
        sub = bg.ask(Subscribe(ALICE, started.run_id), timeout=5)
        events: list[Event] = list(sub.take_replay())
        terminal: Any = None
        while batch := sub.get_batch(timeout=5):
            for item in batch:
                if isinstance(item, Event):
                    events.append(item)
                else:
                    terminal = item
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert isinstance(terminal, Finished)
        assert terminal.record.status == "success"
        assert bg.ask(GetRun(ALICE, started.run_id)).result == {"ticks": 5}

        # pykka's own blocking ask on the registry ref works from this thread too.
        sleeper = bg.registry.ask(StartRun(ALICE, "sleeper"), timeout=5)
        assert bg.registry.ask(StopRun(ALICE, sleeper.run_id), timeout=5) == StopAccepted(
            sleeper.run_id
        )
        with pytest.raises(NotOwner):
            bg.ask(GetRun(BOB, sleeper.run_id))
        wait_until(
            lambda: bg.ask(GetRun(ALICE, sleeper.run_id)).status == "stopped",
            what="the sleeper to stop",
        )

        # Iterating a subscription with `async for` runs on the runtime's loop.
        async def follow(run_id: str) -> list[int]:
            sub = await bg.runtime.ask(Subscribe(ALICE, run_id))
            return [item.seq async for item in sub if isinstance(item, Event)]

        assert bg.call(follow(started.run_id)) == [1, 2, 3, 4, 5, 6]
        live = bg.ask(StartRun(ALICE, "sleeper"), timeout=5)
        snapshot = bg.ask(Introspect(ADMIN))
        assert [r.run_id for r in snapshot.live] == [live.run_id]
        registry_ref = bg.registry
        registries = pykka.ActorRegistry.get_by_class(RegistryActor)
        assert registry_ref.actor_urn in {r.actor_urn for r in registries}
    finally:
        bg.close(grace_s=0.1)  # the live sleeper is stopped with "server shutdown"
    assert not registry_ref.is_alive()
    assert actor_refs() <= actors_before
    assert set(threading.enumerate()) <= threads_before


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_caller_identity_is_by_user_id() -> None:
    async with running_runtime() as rt:
        record, _ = await run_to_end(rt, ALICE, "echo")
        # The same user marked admin is still the owner; a different id is not.
        same = await rt.ask(GetRun(Caller("alice", admin=True), record.run_id))
        assert same.run_id == record.run_id
        with pytest.raises(NotOwner):
            await rt.ask(GetRun(Caller("Alice"), record.run_id))
