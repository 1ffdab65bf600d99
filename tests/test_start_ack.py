"""A start is answered by its run actor, once its header is stored, and never before.

The registry hands the new run actor the asker's reply (``StartAck``); the
run actor answers in the step the store's acknowledgement reaches it.  A
start the store does not confirm within ``store_timeout_s`` is refused
(``StoreUnavailable``) and its run is stopped: it must not go on unseen.
Real persistence actor, real SQLite file; the store is "down" by refusing
writes (:class:`~tests.store_helpers.FlakyStore`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runyard.actors.errors import StoreUnavailable
from runyard.actors.messages import GetRun, Introspect, RegistrySnapshot, StartRun
from runyard.actors.records import RunRecord
from runyard.actors.runtime import Runtime
from runyard.persistence.actor import PersistenceActor
from tests.runtime_helpers import ADMIN, ALICE, config
from tests.store_helpers import FlakyStore, read_back
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

STORE_TIMEOUT_S = 0.3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FlakyStore]]:
    store = FlakyStore(tmp_path / "runs.sqlite3")
    persistence = PersistenceActor.start(store, retry_initial_s=0.02, retry_max_s=0.1)
    runtime = Runtime(config(store_timeout_s=STORE_TIMEOUT_S), persistence=persistence)
    await runtime.start()
    try:
        yield runtime, store
    finally:
        store.up.set()
        await runtime.shutdown(grace_s=0.1)


async def test_a_start_is_answered_once_stored_with_its_header_on_record(
    flaky: tuple[Runtime, FlakyStore], tmp_path: Path
) -> None:
    runtime, store = flaky
    store.up.set()
    started = await runtime.ask(StartRun(ALICE, "sleeper", {"seconds": 60}))
    stored = await asyncio.to_thread(read_back, tmp_path / "runs.sqlite3", started.run_id)
    assert stored is not None, "the 202 came before the run was on record"
    assert stored.status == "running"


async def test_a_start_the_store_does_not_confirm_is_refused_and_its_run_stopped(
    flaky: tuple[Runtime, FlakyStore], tmp_path: Path
) -> None:
    runtime, store = flaky
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await runtime.ask(StartRun(ALICE, "sleeper", {"seconds": 60}))
    assert time.monotonic() - t0 < STORE_TIMEOUT_S + 2, "refused within the store timeout"

    snapshot: RegistrySnapshot = await runtime.ask(Introspect(ADMIN))
    [live] = snapshot.live
    assert live.stopping, "a refused start must not run on unseen"

    store.up.set()  # the store comes back: the run's stop goes on record, and its end

    async def ended() -> RunRecord | None:
        record: RunRecord = await runtime.ask(GetRun(ALICE, live.run_id))
        return record if record.status != "running" else None

    record = await wait_until_async(ended, 10, "the refused run to end")
    assert record.status == "stopped"
    assert record.error == "the store is unavailable"
    assert [e.type for e in record.events][-2:] == ["stop_requested", "done"]
    stored = await asyncio.to_thread(read_back, tmp_path / "runs.sqlite3", live.run_id)
    assert stored is not None
    assert stored.status == "stopped"
