"""RegistryActor and Runtime: ownership, caps, listing, eviction.

Shutdown is in test_runtime_shutdown.py.
"""

from __future__ import annotations

import asyncio

import pykka
import pytest

from runyard.actors.clock import ManualClock
from runyard.actors.errors import (
    InvalidRequest,
    NotAdmin,
    NotOwner,
    RunNotFound,
    StillRunning,
    TooManyLiveRuns,
    UnknownAgent,
)
from runyard.actors.messages import (
    DeleteRun,
    Evict,
    GetRun,
    Introspect,
    ListRuns,
    RegistrySnapshot,
    RunPage,
    StartRun,
    StopRun,
    Subscribe,
)
from runyard.actors.run import RunActor
from runyard.actors.stream_items import Finished
from tests.runtime_helpers import (
    ADMIN,
    ALICE,
    BOB,
    Gate,
    actor_refs,
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
# ownership


async def test_only_the_owner_reads_stops_or_deletes_a_run() -> None:
    async with running_runtime() as rt:
        live = await rt.ask(StartRun(ALICE, "sleeper", {"seconds": 3600}))
        finished, _ = await run_to_end(rt, ALICE, "echo", {"x": 1})
        for run_id in (live.run_id, finished.run_id):
            for message in (
                GetRun(BOB, run_id),
                Subscribe(BOB, run_id),
                StopRun(BOB, run_id),
                DeleteRun(BOB, run_id),
            ):
                with pytest.raises(NotOwner, match="another user"):
                    await rt.ask(message)
        # Nothing happened to alice's runs.
        assert (await rt.ask(GetRun(ALICE, live.run_id))).status == "running"
        assert (await rt.ask(GetRun(ALICE, finished.run_id))).status == "success"
        assert "stop_requested" not in [
            e.type for e in (await rt.ask(GetRun(ALICE, live.run_id))).events
        ]
        await rt.ask(StopRun(ALICE, live.run_id))


async def test_unknown_run_ids_answer_run_not_found() -> None:
    async with running_runtime() as rt:
        for message in (
            GetRun(ALICE, "nope"),
            Subscribe(ALICE, "nope"),
            StopRun(ALICE, "nope"),
            DeleteRun(ALICE, "nope"),
        ):
            with pytest.raises(RunNotFound, match="nope"):
                await rt.ask(message)
        with pytest.raises(UnknownAgent, match=r"known agents: .*ticker"):
            await rt.ask(StartRun(ALICE, "no-such-agent"))


async def test_admin_introspects_but_cannot_read_others_traces() -> None:
    gate = Gate()
    clock = ManualClock()
    async with running_runtime(catalog=catalog_with(gate=gate.agent), clock=clock) as rt:
        started = await rt.ask(StartRun(ALICE, "gate", {"k": "v"}))
        await gate.emit(3)
        clock.advance(42.5)  # the age is the registry clock's, since the start
        sub1 = await rt.ask(Subscribe(ALICE, started.run_id))
        await rt.ask(Subscribe(ALICE, started.run_id, after_seq=2))
        finished, _ = await run_to_end(rt, BOB, "failer")

        with pytest.raises(NotAdmin):
            await rt.ask(Introspect(ALICE))
        snap = await rt.ask(Introspect(ADMIN))
        assert isinstance(snap, RegistrySnapshot)
        assert snap.accepting is True
        assert snap.runs_by_status == {"running": 1, "error": 1}
        assert snap.cached_finished == 1
        assert snap.persistence_backlog == 0
        (info,) = snap.live
        assert info.run_id == started.run_id
        assert info.owner == "alice"
        assert info.agent == "gate"
        assert info.trace_length == 3
        assert info.subscribers == 2
        assert info.stopping is False
        assert info.age_s == 42.5

        with pytest.raises(NotOwner):
            await rt.ask(GetRun(ADMIN, started.run_id))
        with pytest.raises(NotOwner):
            await rt.ask(GetRun(ADMIN, finished.run_id))
        with pytest.raises(NotOwner):
            await rt.ask(Subscribe(ADMIN, started.run_id))

        await rt.ask(StopRun(ALICE, started.run_id))
        _, terminal = await collect(sub1)
        assert isinstance(terminal, Finished)
        snap = await rt.ask(Introspect(ADMIN))
        assert snap.live == ()
        assert snap.runs_by_status == {"running": 0, "error": 1, "stopped": 1}


# --------------------------------------------------------------------------
# caps


async def test_per_user_cap_refuses_the_next_start_only_for_that_user() -> None:
    async with running_runtime(config(max_live_runs_per_user=2)) as rt:
        a1 = await rt.ask(StartRun(ALICE, "sleeper"))
        await rt.ask(StartRun(ALICE, "sleeper"))
        with pytest.raises(TooManyLiveRuns, match="'alice' already has 2 live runs"):
            await rt.ask(StartRun(ALICE, "sleeper"))
        # Other users are unaffected.
        await rt.ask(StartRun(BOB, "sleeper"))
        await rt.ask(StartRun(BOB, "sleeper"))
        # A finished run frees its slot.
        sub = await rt.ask(Subscribe(ALICE, a1.run_id))
        await rt.ask(StopRun(ALICE, a1.run_id))
        await collect(sub)
        again = await rt.ask(StartRun(ALICE, "sleeper"))
        assert again.status == "running"
        with pytest.raises(TooManyLiveRuns):
            await rt.ask(StartRun(ALICE, "sleeper"))


# --------------------------------------------------------------------------
# listing


@pytest.mark.timeout(20)
async def test_list_runs_newest_first_with_filters_and_exact_pagination() -> None:
    clock = ManualClock()
    async with running_runtime(clock=clock) as rt:
        ids: list[str] = []
        for i in range(9):
            clock.advance(1)
            if i % 3 == 2:
                record, _ = await run_to_end(rt, ALICE, "failer")
            elif i % 3 == 1:
                record, _ = await run_to_end(rt, ALICE, "echo", {"i": i})
            else:
                started = await rt.ask(StartRun(ALICE, "sleeper"))
                record = await rt.ask(GetRun(ALICE, started.run_id))
            ids.append(record.run_id)
        clock.advance(1)
        await run_to_end(rt, BOB, "echo")  # never in alice's lists
        # Two runs with the same start time: the run_id breaks the tie, stably.
        twins = [(await rt.ask(StartRun(ALICE, "echo"))).run_id for _ in range(2)]

        everything: RunPage = await rt.ask(ListRuns(ALICE, limit=1000))
        newest_first = [*sorted(twins, reverse=True), *reversed(ids)]
        assert [s.run_id for s in everything.runs] == newest_first
        assert everything.next_cursor is None
        assert {s.owner for s in everything.runs} == {"alice"}
        started_at = [s.started_at for s in everything.runs]
        assert started_at == sorted(started_at, reverse=True)

        errors = await rt.ask(ListRuns(ALICE, status="error"))
        assert [s.run_id for s in errors.runs] == [ids[8], ids[5], ids[2]]
        assert all(s.error == "RuntimeError: boom" for s in errors.runs)
        sleepers = await rt.ask(ListRuns(ALICE, agent="sleeper", status="running"))
        assert [s.run_id for s in sleepers.runs] == [ids[6], ids[3], ids[0]]
        assert await rt.ask(ListRuns(ALICE, agent="nobody")) == RunPage((), None)

        for limit in (1, 2, 3, 4, 11, 12):
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                page = await rt.ask(ListRuns(ALICE, limit=limit, cursor=cursor))
                assert len(page.runs) <= limit
                seen.extend(s.run_id for s in page.runs)
                pages += 1
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == newest_first, f"limit={limit}"
            assert pages == -(-len(newest_first) // limit)

        # Pages keep their place while new runs start.
        first = await rt.ask(ListRuns(ALICE, limit=4))
        clock.advance(1)
        await rt.ask(StartRun(ALICE, "echo"))
        second = await rt.ask(ListRuns(ALICE, limit=4, cursor=first.next_cursor))
        assert [s.run_id for s in second.runs] == newest_first[4:8]

        for bad in ("garbage!", "x" * 500, "bm90IGpzb24", "WzEsMl0"):
            with pytest.raises(InvalidRequest, match="cursor"):
                await rt.ask(ListRuns(ALICE, cursor=bad))
        for limit in (0, -1, 1001):
            with pytest.raises(InvalidRequest, match="limit"):
                await rt.ask(ListRuns(ALICE, limit=limit))
        with pytest.raises(InvalidRequest, match="status"):
            await rt.ask(ListRuns(ALICE, status="bogus"))  # type: ignore[arg-type]

        for run_id in (ids[0], ids[3], ids[6]):
            await rt.ask(StopRun(ALICE, run_id))


# --------------------------------------------------------------------------
# delete, eviction, cleanup


async def test_delete_refuses_a_running_run_and_forgets_a_finished_one() -> None:
    async with running_runtime() as rt:
        live = await rt.ask(StartRun(ALICE, "sleeper"))
        with pytest.raises(StillRunning, match="stop it first"):
            await rt.ask(DeleteRun(ALICE, live.run_id))
        assert (await rt.ask(GetRun(ALICE, live.run_id))).status == "running"

        finished, _ = await run_to_end(rt, ALICE, "echo")
        assert await rt.ask(DeleteRun(ALICE, finished.run_id)) is None
        with pytest.raises(RunNotFound):
            await rt.ask(GetRun(ALICE, finished.run_id))
        with pytest.raises(RunNotFound):
            await rt.ask(DeleteRun(ALICE, finished.run_id))
        page = await rt.ask(ListRuns(ALICE))
        assert [s.run_id for s in page.runs] == [live.run_id]
        await rt.ask(StopRun(ALICE, live.run_id))


async def test_finished_run_is_evicted_after_retention_with_a_manual_clock() -> None:
    clock = ManualClock()
    async with running_runtime(config(retention_s=3600), clock=clock) as rt:
        old, _ = await run_to_end(rt, ALICE, "echo", {"which": "old"})
        live = await rt.ask(StartRun(ALICE, "sleeper"))
        clock.advance(1800)
        young, _ = await run_to_end(rt, ALICE, "echo", {"which": "young"})

        clock.advance(1799)  # old: 3599 s after it finished
        assert await rt.ask(Evict()) == 0
        assert (await rt.ask(GetRun(ALICE, old.run_id))).result == {"which": "old"}

        clock.advance(2)  # old: 3601 s; young: 1801 s
        assert await rt.ask(Evict()) == 1
        with pytest.raises(RunNotFound):
            await rt.ask(GetRun(ALICE, old.run_id))
        with pytest.raises(RunNotFound):
            await rt.ask(Subscribe(ALICE, old.run_id))
        assert (await rt.ask(GetRun(ALICE, young.run_id))).result == {"which": "young"}
        # A live run is never evicted, however old.
        assert (await rt.ask(GetRun(ALICE, live.run_id))).status == "running"
        snap = await rt.ask(Introspect(ADMIN))
        assert snap.cached_finished == 1

        clock.advance(1800)
        assert await rt.ask(Evict()) == 1
        with pytest.raises(RunNotFound):
            await rt.ask(GetRun(ALICE, young.run_id))
        assert (await rt.ask(GetRun(ALICE, live.run_id))).status == "running"
        assert [s.run_id for s in (await rt.ask(ListRuns(ALICE))).runs] == [live.run_id]
        await rt.ask(StopRun(ALICE, live.run_id))


async def test_subscribing_to_a_finished_run_replays_it_from_memory() -> None:
    async with running_runtime() as rt:
        record, _ = await run_to_end(rt, ALICE, "ticker", {"n": 4, "interval": 0})
        sub = await rt.ask(Subscribe(ALICE, record.run_id, after_seq=2))
        assert sub.status_at_subscribe == "success"
        events, terminal = await collect(sub)
        assert [e.seq for e in events] == [3, 4, 5]
        assert isinstance(terminal, Finished)
        assert terminal.record == record


async def test_no_actor_and_no_task_remains_for_a_finished_run() -> None:
    before = actor_refs()
    test_tasks = asyncio.all_tasks()  # this test's and the test runner's
    async with running_runtime() as rt:
        registry_urn = rt.registry.actor_urn
        for agent, input in (
            ("echo", {}),
            ("failer", {}),
            ("ticker", {"n": 3, "interval": 0}),
        ):
            await run_to_end(rt, ALICE, agent, input)
        stopped = await rt.ask(StartRun(ALICE, "stubborn"))
        sub = await rt.ask(Subscribe(ALICE, stopped.run_id))
        await rt.ask(StopRun(ALICE, stopped.run_id))
        await collect(sub)

        await wait_until_async(
            lambda: actor_refs() - before == {registry_urn},
            what="run actors to leave the pykka registry",
        )
        assert {r.actor_urn for r in pykka.ActorRegistry.get_by_class(RunActor)} <= before
        await wait_until_async(lambda: not run_actor_tasks(), what="run tasks to end")
        others = asyncio.all_tasks() - test_tasks
        assert [t.get_name() for t in others] == [str(rt.registry._actor_weakref())]
