"""The plain numbers behind ``/metrics``: histograms, a run log's counters, the store's.

Real parts: a real :class:`~runyard.actors.run_log.RunLog` on a real loop with real
subscriptions, a real persistence actor on a real SQLite path that is first
unusable (a directory in its place), then usable.  The settings test checks
that ``RUNYARD_METRICS_TOKEN`` is validated without being echoed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from runyard.actors.errors import StoreUnavailable
from runyard.actors.histogram import Histogram
from runyard.actors.persistence_protocol import PurgeStored
from runyard.actors.records import Event
from runyard.actors.run_log import RunLog
from runyard.actors.stats import RuntimeStats
from runyard.actors.stream_items import Closing
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from runyard.persistence.store_stats import StoreStats
from runyard.web.config import ConfigError, load_settings
from tests.store_helpers import rec, saves
from tests.waiting import wait_until


@pytest.mark.timeout(10)
def test_a_histogram_counts_cumulatively_up_to_inf() -> None:
    histogram = Histogram((0.01, 0.1, 1.0))
    for seconds in (0.005, 0.01, 0.05, 0.5, 3.0):
        histogram.observe(seconds)
    snap = histogram.snapshot()
    assert snap.buckets == ((0.01, 2), (0.1, 3), (1.0, 4), (float("inf"), 5))
    assert snap.count == 5
    assert snap.sum_s == pytest.approx(3.565)
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram((0.1, 0.01))


def event(seq: int) -> Event:
    return Event(seq=seq, ts=0.0, type="tick", data={"i": seq})


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_a_run_log_counts_emits_deliveries_cut_offs_and_subscribers() -> None:
    stats = RuntimeStats()
    log = RunLog("r1", asyncio.get_running_loop(), durable=True, stats=stats)
    reader = log.subscribe(0, max_queue=100, status="running")
    slow = log.subscribe(0, max_queue=2, status="running")
    assert stats.subscribers == 2
    for seq in range(1, 4):
        log.append(event(seq))
    assert stats.events_emitted == 3
    assert stats.events_delivered == 0  # nothing is delivered before the store has it
    log.commit(3)  # the slow one is full now (3 >= 2), but a commit's burst is let in
    assert stats.events_delivered == 6
    log.append(event(4))
    log.commit(4)  # still 3 behind: cut off with `lagged`
    assert stats.lagged == 1
    assert stats.subscribers == 1
    assert stats.events_delivered == 7
    assert len(await reader.next_batch()) == 4
    log.unsubscribe(slow)  # already gone: not counted twice
    assert stats.subscribers == 1
    log.unsubscribe(reader)
    assert stats.subscribers == 0
    log.subscribe(4, max_queue=10, status="running")
    log.subscribe(4, max_queue=10, status="running")
    assert stats.subscribers == 2
    log.close_all(Closing(4, "the run was taken over by another node"))
    assert stats.subscribers == 0


@pytest.mark.timeout(30)
def test_the_persistence_actor_counts_store_errors_commits_and_the_backlog(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.sqlite3"
    path.mkdir()  # a directory where the database should be: nothing opens
    stats = StoreStats()
    ref = PersistenceActor.start(SQLiteStore(path), retry_initial_s=0.01, stats=stats)
    try:
        ref.tell(saves(rec("a" * 32)))
        wait_until(lambda: stats.write_errors >= 1, 10, "a failed write to be counted")
        assert stats.backlog == 1
        with pytest.raises(StoreUnavailable):
            ref.ask(PurgeStored(cutoff=time.time()), timeout=10)
        assert stats.read_errors >= 1
        assert stats.commit_seconds.snapshot().count == 0
        path.rmdir()  # fixed: the retry writes it
        wait_until(lambda: stats.backlog == 0, 10, "the backlog to drain")
        snap = stats.commit_seconds.snapshot()
        assert snap.count >= 1
        assert snap.sum_s > 0
    finally:
        ref.stop(timeout=10)


@pytest.mark.usefixtures("clean_runyard_env")
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("token", "reason"),
    [("short-secret", "at least 16"), ("has a space in it, 1234", "no spaces")],
)
def test_a_bad_metrics_token_is_refused_by_name_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch, token: str, reason: str
) -> None:
    monkeypatch.setenv("RUNYARD_METRICS_TOKEN", token)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "RUNYARD_METRICS_TOKEN" in text
    assert reason in text
    assert token not in text


@pytest.mark.usefixtures("clean_runyard_env")
@pytest.mark.timeout(10)
def test_a_good_metrics_token_is_kept_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("RUNYARD_METRICS_TOKEN", token)
    settings = load_settings()
    assert settings.metrics_token == token
    assert token not in repr(settings)
