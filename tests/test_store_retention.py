"""The store keeps finished runs for ``store_retention_s``; a periodic job purges older ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.actors.clock import ManualClock
from runyard.actors.errors import RunNotFound
from runyard.actors.messages import Evict, GetRun, Introspect, StartRun, Subscribe
from runyard.actors.runtime import Runtime, RuntimeConfig
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from tests.runtime_helpers import ADMIN, ALICE, collect
from tests.waiting import wait_until_async

HOUR = 3600.0
DAY = 24 * HOUR


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_periodic_purge_removes_runs_past_the_store_retention_and_only_those(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    runtime = Runtime(
        RuntimeConfig(
            retention_s=HOUR,
            store_retention_s=7 * DAY,
            evict_interval_s=0,
            purge_interval_s=0.05,
            stop_grace_s=0.2,
        ),
        persistence=PersistenceActor.start(SQLiteStore(tmp_path / "runs.sqlite3")),
        clock=clock,
    )
    await runtime.start()
    try:

        async def finished_run() -> str:
            started = await runtime.ask(StartRun(ALICE, "ticker", {"n": 2, "interval": 0}))
            await collect(await runtime.ask(Subscribe(ALICE, started.run_id)))
            return str(started.run_id)

        async def memory_empty() -> bool:
            await runtime.ask(Evict())
            return int((await runtime.ask(Introspect(ADMIN))).cached_finished) == 0

        async def purged(run_id: str) -> bool:
            try:
                await runtime.ask(GetRun(ALICE, run_id))
            except RunNotFound:
                return True
            return False

        old = await finished_run()
        clock.advance(6 * DAY)
        young = await finished_run()
        clock.advance(HOUR + 1)
        # Both leave memory (once the store has acknowledged them) ...
        await wait_until_async(memory_empty, what="finished runs to leave memory")
        assert (await runtime.ask(GetRun(ALICE, old))).status == "success"
        # ... and two days on, `old` is 8 days old, `young` 2: the job purges one.
        clock.advance(2 * DAY)
        await wait_until_async(lambda: purged(old), what="the old run to be purged")
        assert (await runtime.ask(GetRun(ALICE, young))).status == "success"
    finally:
        await runtime.shutdown(grace_s=0.1)
