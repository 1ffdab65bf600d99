"""The benchmark harness at a tiny size, so it cannot rot.

Each benchmark runs once per side through the same code path as
``python -m bench`` (``run_benchmark`` with the ``TINY`` sizes) and its own
correctness claims are checked: every event delivered, in order, nothing
duplicated, exact resume.  The durable baseline is also checked for the
promise that makes it a fair bar: what it acknowledged or delivered is in
its SQLite file.  Speed is never asserted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import (
    concurrency,
    cross_node,
    event_cost,
    fanout,
    first_event,
    live_sse,
    persistence,
    replay,
    resume,
    stalled_readers,
    start_rate,
)
from bench.__main__ import goals, table
from bench.common import (
    KINDS,
    PAIR,
    TINY,
    Benchmark,
    Metric,
    Outcome,
    run_benchmark,
    serving,
    start_run,
)

pytestmark = pytest.mark.server


async def run(bench: Benchmark) -> Outcome:
    outcome = await run_benchmark(bench, TINY, reps=1)
    for kind in bench.kinds:
        assert outcome.values[kind], f"{kind} measured nothing"
    return outcome


def positive(outcome: Outcome, key: str, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        value = outcome.value(kind, key)
        assert value is not None, f"{kind}: no {key}"
        assert value > 0, f"{kind}: {key} = {value}"


def zero(outcome: Outcome, *keys: str) -> None:
    for kind in outcome.bench.kinds:
        for key in keys:
            assert outcome.value(kind, key) == 0, f"{kind}: {key} = {outcome.value(kind, key)}"


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_start_rate() -> None:
    outcome = await run(start_rate.BENCH)
    assert start_rate.BENCH.kinds == KINDS, "starts are compared with the durable baseline"
    positive(outcome, "seq_rate", KINDS)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_live_sse_delivers_every_event_once() -> None:
    outcome = await run(live_sse.BENCH)
    zero(outcome, "lost", "dup", "lagged")
    assert live_sse.BENCH.kinds == KINDS
    for kind in KINDS:
        assert outcome.value(kind, "delivered") == TINY.live_events


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_replay_is_complete() -> None:
    outcome = await run(replay.BENCH)  # raises BenchFailure on a gap, a repeat or no `done`
    positive(outcome, "events_per_s", PAIR)


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_resume_is_exact() -> None:
    outcome = await run(resume.BENCH)
    zero(outcome, "lost", "dup", "bad_data", "bad_cursor")
    expected = TINY.resume_chains * TINY.resume_cuts
    for kind in PAIR:
        assert outcome.value(kind, "reconnects") == expected
        # every chain read all N events and `done`
        assert outcome.value(kind, "delivered") == TINY.resume_chains * (TINY.resume_events + 1)


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_fanout_every_subscriber_gets_everything() -> None:
    outcome = await run(fanout.BENCH)
    zero(outcome, "lost", "dup", "lagged", "incomplete")


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_concurrency_all_runs_live() -> None:
    outcome = await run(concurrency.BENCH)
    zero(outcome, "unfinished", "not_running", "refused")
    for kind in PAIR:
        assert outcome.value(kind, "accepted") == TINY.conc_runs
        assert outcome.value(kind, "live") == TINY.conc_runs


@pytest.mark.anyio
@pytest.mark.timeout(40)
async def test_persistence_writes_every_record() -> None:
    outcome = await run(persistence.BENCH)  # raises if the store holds a different count
    positive(outcome, "sqlite", PAIR)


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_event_cost_delivers_in_order() -> None:
    outcome = await run(event_cost.BENCH)  # raises if a subscription misses or reorders
    text = table([outcome])
    assert "emit" in text
    assert goals([outcome])


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_first_event_after_start_on_all_three_servers() -> None:
    outcome = await run(first_event.BENCH)  # raises if a run's stream misses event 1 or done
    for kind in KINDS:
        p50, p99 = outcome.value(kind, "first_p50"), outcome.value(kind, "first_p99")
        assert p50 is not None
        assert p99 is not None
        assert 0 < p50 <= p99
    assert "vs durable" in table([outcome])
    ours, plain = outcome.value("runyard", "first_p50"), outcome.value("baseline", "first_p50")
    assert ours is not None
    assert plain is not None
    assert [met for _, _, met in goals([outcome])] == [ours <= plain + 10]


@pytest.mark.anyio
@pytest.mark.couchdb
@pytest.mark.timeout(180)
async def test_cross_node_streams_and_stops_complete_on_both_sides() -> None:
    # Raises if a stream misses, repeats or reorders an event, or a stop ends otherwise.
    outcome = await run(cross_node.BENCH)
    positive(outcome, "deliver_p50", PAIR)
    positive(outcome, "stop_p99", PAIR)
    positive(outcome, "follow_rate", PAIR)
    positive(outcome, "replay_rate", PAIR)
    events = TINY.cross_ticks + 1  # the ticks and `done`
    for kind in PAIR:
        per_thousand = outcome.value(kind, "paced_docs")
        assert per_thousand is not None
        writes = round(per_thousand * events / 1000)
        # The run doc at least at the start and the end, and one chunk; at most the run
        # doc and one chunk per commit, and every commit but the first brings an event.
        assert 3 <= writes <= 2 * events + 2, f"{kind}: {writes} documents written"
    assert any("baseline = same node" in note for note in outcome.notes)
    assert [name for name, _, _ in goals([outcome])] == ["cross", "cross"]


def stored(db: Path, run_id: str) -> tuple[str | None, int]:
    """(status, event rows) of one run in the durable baseline's SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()
    return (row[0] if row else None), int(count)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_durable_baseline_stores_what_it_acknowledged_and_delivered() -> None:
    async with serving("durable") as server, server.connection() as conn:
        db = server.tmp / "data" / "durable.sqlite3"
        run_id = await start_run(conn, "gated", {"delay": 0.3, "n": 50})
        # The 202 came after the commit: the row is there while the run still waits.
        assert stored(db, run_id) == ("running", 0)
        result = await server.follow(run_id, 20)
        assert result.done
        assert result.ids == list(range(1, 52)), "50 chat events and done, in order"
        # A client held `done` only once it was committed, with the final status.
        assert stored(db, run_id) == ("success", 51)
        resp = await conn.request("GET", f"/runs/{run_id}")
        assert resp.json()["status"] == "success"
        assert len(resp.json()["events"]) == 51


def test_goal_syntax_ratio_margin_and_reference() -> None:
    bench = Benchmark(
        name="x",
        title="x",
        metrics=[Metric("rate", "rate", "1/s"), Metric("lat", "lat", "ms", better="lower")],
        measure=start_rate.measure,
        goals=["rate>=0.9x@durable", "rate>=1.0x", "lat<=+10@baseline", "lat<10"],
        kinds=KINDS,
    )
    values = {
        "baseline": {"rate": [100.0], "lat": [1.0]},
        "durable": {"rate": [50.0], "lat": [6.0]},
        "runyard": {"rate": [60.0], "lat": [10.5]},
    }
    met = [m for _, _, m in goals([Outcome(bench, values)])]
    assert met == [True, False, True, False]
    header, _, rate, _ = table([Outcome(bench, values)]).splitlines()
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "metric",
        "baseline",
        "durable",
        "runyard",
        "vs baseline",
        "vs durable",
    ]
    assert [c.strip() for c in rate.split("|")[2:-1]] == ["100", "50", "60", "0.60x", "1.20x"]


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_stalled_readers_are_all_served_and_the_rss_read() -> None:
    outcome = await run(stalled_readers.BENCH)
    assert stalled_readers.BENCH.kinds == ("runyard",), "only runyard has a store to page from"
    zero(outcome, "unserved")
    positive(outcome, "rss_idle_mib", ("runyard",))
    positive(outcome, "rss_stalled_mib", ("runyard",))
