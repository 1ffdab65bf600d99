"""9. Scale-out: what serving a run from another node costs, against serving it from its owner.

Three runyard nodes share one CouchDB database (:mod:`bench.scaleout_yard`:
the multi-node test harness, started once for the benchmark).  Every run
is started on n1, its owner.  Two sides, each with runs of its own, in
alternating order, on the same nodes:

- ``baseline`` column = **same node**: clients read from n1, stops are sent to n1;
- ``runyard`` column = **cross node**: clients read from n2 (through its
  changes follower and its mirror of the run), stops are sent to n3 (a stop
  request stored in CouchDB, seen by n1's follower).

Measured:

1. **Delivery latency**: a ``ticker`` emits ``cross_ticks`` events
   ``cross_tick_s`` apart; one SSE client takes each event's receive time
   minus its ``ts`` (the emit time, ms precision; every node is on this
   machine's clock).  Only events emitted after the client's stream opened
   count (the earlier ones are a replay).  p50 and p99.  Cross node, a
   second client reads the same run from n1 meanwhile: how much later each
   event reached n2's client than n1's is the cross-node part alone (the
   follower, the mirror's reads), without the commit both wait for.
2. **Stop latency**: ``cross_stops`` ``sleeper`` runs (they stop at once
   when asked: no grace) are each followed on n1; from sending
   ``POST /runs/{id}/stop`` to that stream's ``done`` (status ``stopped``,
   delivered once stored).  p50 and p99, and the 202's own p50.
3. **Stream throughput**: ``cross_clients`` clients connect right after a
   ``chatty`` run of ``cross_burst`` events (yielding every ``cross_batch``)
   starts and read it to its ``done``, each resuming with ``?after=`` when
   cut off as too slow (``lagged``), as an EventSource would: events/s per
   client (median; from connecting to ``done``), all clients together, the
   first event's wait, how many joined while the run was live.  Then one
   client reads the finished run again: on the owner from memory, on
   another node from the store.
4. **CouchDB write load** of the runs of 1 and 3, per 1,000 events:
   documents written (the revisions of the run's documents), their bytes
   (each document's size times its revisions), and the growth of the
   database file (``sizes.file``: CouchDB appends every update with its
   b-tree nodes; compaction reclaims it later).  The same on both sides
   (the owner writes them); shown to see that.

Every stream must hold every event once, in order, and its ``done``: else
:class:`~bench.common.BenchFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.common import BenchFailure, Benchmark, Metric, Sizes, percentile
from bench.rawhttp import Connection, Frame, SSEStream, StreamResult, open_stream
from bench.scaleout_yard import DbInfo, ScaleoutYard, SetupMissing, scaleout_yard

HOST = "127.0.0.1"
OWNER = "n1"
READER = {"baseline": "n1", "runyard": "n2"}
"""Where the clients read, per side."""
STOPPER = {"baseline": "n1", "runyard": "n3"}
"""Where stops are sent, per side."""
SIDES_NOTE = (
    "columns: baseline = same node (clients and stops on the run's owner n1), "
    "runyard = cross node (clients on n2, stops sent to n3)"
)


def emit_time(data: bytes) -> float:
    """The ``ts`` of an event frame's data (ISO 8601 UTC, ms) as POSIX seconds."""
    ts: str = json.loads(data)["ts"]
    return datetime.fromisoformat(ts).timestamp()


def status_of(frame: Frame | None) -> str | None:
    """The ``status`` of a ``run`` or ``done`` frame."""
    if frame is None or not frame[2]:
        return None
    body = json.loads(frame[2])
    if frame[1] == "done":
        body = body.get("data") or {}  # a trace event: {seq, ts, type, data: {status, ...}}
    status = body.get("status")
    return str(status) if status is not None else None


def check_stream(result: StreamResult, events: int, what: str) -> None:
    """Every event ``1..events`` once and in order, then ``done`` (seq ``events + 1``)."""
    if result.status != 200 or not result.done:
        raise BenchFailure(f"{what}: status {result.status}, done {result.done} ({result.error})")
    if result.ids != list(range(1, events + 2)):
        raise BenchFailure(f"{what}: got {len(result.ids)} ids, not 1..{events + 1} in order")


class CrossNode:
    """The benchmark's state: the yard its repetitions share (see :data:`BENCH`)."""

    def __init__(self) -> None:
        self.yard: ScaleoutYard | None = None
        self.missing: str | None = None

    @contextlib.asynccontextmanager
    async def around(self, sizes: Sizes) -> AsyncIterator[None]:
        """The yard for every repetition; without nginx or a CouchDB, a note instead."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                self.yard = await stack.enter_async_context(scaleout_yard())
            except SetupMissing as exc:
                self.missing = str(exc)
            try:
                yield
            finally:
                self.yard = None

    async def measure(self, kind: str, sizes: Sizes) -> dict[str, Any]:
        yard = self.yard
        if yard is None:
            return {"note:setup": f"n/a ({self.missing})"}
        out: dict[str, Any] = {"note:sides": SIDES_NOTE, "note:couch": f"CouchDB: {yard.kind}"}
        out.update(await delivery(yard, kind, sizes))
        out.update(await stops(yard, kind, sizes))
        out.update(await throughput(yard, kind, sizes))
        return out


async def start_run(yard: ScaleoutYard, agent: str, input_dict: dict[str, Any]) -> str:
    """Start a run on the owner; its id once the 202 came."""
    async with Connection(HOST, yard.node(OWNER).port, yard.auth) as conn:
        answer = await conn.request(
            "POST", "/runs", json_body={"agent": agent, "input_dict": input_dict}
        )
    if answer.status != 202:
        raise BenchFailure(f"POST /runs on {OWNER} answered {answer.status}: {answer.body[:300]!r}")
    run_id: str = answer.json()["run_id"]
    return run_id


async def stream(yard: ScaleoutYard, node: str, run_id: str, **kwargs: Any) -> SSEStream:
    return await open_stream(
        HOST, yard.node(node).port, f"/runs/{run_id}/stream", headers=yard.auth, **kwargs
    )


def per_thousand(count: float, events: int) -> float:
    return count * 1000 / events


async def write_load(
    yard: ScaleoutYard, run_id: str, before: DbInfo, events: int, prefix: str
) -> dict[str, Any]:
    """Documents and bytes the run cost CouchDB, per 1,000 events.

    The file's growth is left out when it shrank: CouchDB's automatic
    compaction ran meanwhile."""
    after = await yard.db_info()
    docs = await yard.run_docs(run_id)
    out: dict[str, Any] = {
        f"{prefix}_docs": per_thousand(docs.writes, events),
        f"{prefix}_sent": per_thousand(docs.written_bytes, events) / 1024,
    }
    if before.file_bytes is not None and after.file_bytes is not None:
        if after.file_bytes >= before.file_bytes:
            out[f"{prefix}_kb"] = per_thousand(after.file_bytes - before.file_bytes, events) / 1024
        else:
            out["note:compaction"] = "CouchDB compacted during a run: its file growth left out"
    return out


class Ticks:
    """One client's view of a paced run: when each live event arrived (POSIX s)."""

    def __init__(self) -> None:
        self.opened = float("inf")
        """When its stream opened (the node answered): events emitted before are a replay."""
        self.latency_ms: dict[int, float] = {}
        self.arrived: dict[int, float] = {}

    def on_frame(self, frame: Frame) -> bool:
        if frame[1] == "tick":
            received = time.time()
            emitted = emit_time(frame[2])
            if emitted > self.opened and frame[0] is not None:
                self.latency_ms[frame[0]] = (received - emitted) * 1000
                self.arrived[frame[0]] = received
        return False


async def delivery(yard: ScaleoutYard, kind: str, sizes: Sizes) -> dict[str, Any]:
    """A paced run's events, emit to client; cross node, also each event's time on
    top of a client of the owner reading the same run (the commit path left out)."""
    n, interval = sizes.cross_ticks, sizes.cross_tick_s
    before = await yard.db_info()
    run_id = await start_run(yard, "ticker", {"n": n, "interval": interval})
    readers = [READER[kind]] if READER[kind] == OWNER else [READER[kind], OWNER]
    views = [Ticks() for _ in readers]
    streams = [
        await stream(yard, node, run_id, mode="frames", on_frame=view.on_frame)
        for node, view in zip(readers, views, strict=True)
    ]
    for sse, view in zip(streams, views, strict=True):
        await sse.wait_headers()
        view.opened = time.time()  # subscribed: a node answers once it has the subscription
    for sse, node in zip(streams, readers, strict=True):
        result = await asyncio.wait_for(sse.finished, n * interval + 60)
        check_stream(result, n, f"{kind}: ticker {run_id} on {node}")
    latencies = list(views[0].latency_ms.values())
    if len(latencies) < n // 2:
        raise BenchFailure(f"{kind}: only {len(latencies)} of {n} events were live")
    out = {
        "deliver_p50": percentile(latencies, 50),
        "deliver_p99": percentile(latencies, 99),
        **await write_load(yard, run_id, before, n + 1, "paced"),
    }
    if len(views) == 2:
        ours, owners = views[0].arrived, views[1].arrived
        extra = [(ours[seq] - owners[seq]) * 1000 for seq in ours.keys() & owners.keys()]
        out["extra_p50"] = percentile(extra, 50)
        out["extra_p99"] = percentile(extra, 99)
    return out


async def stops(yard: ScaleoutYard, kind: str, sizes: Sizes) -> dict[str, float]:
    """Stop ``cross_stops`` sleeping runs, one after another, through the side's node."""
    run_ids = [await start_run(yard, "sleeper", {"seconds": 600}) for _ in range(sizes.cross_stops)]
    sleeping: list[asyncio.Future[None]] = []
    streams: list[SSEStream] = []
    loop = asyncio.get_running_loop()
    for run_id in run_ids:
        seen: asyncio.Future[None] = loop.create_future()

        def on_frame(frame: Frame, seen: asyncio.Future[None] = seen) -> bool:
            if frame[1] == "sleeping" and not seen.done():
                seen.set_result(None)
            return False

        sleeping.append(seen)
        streams.append(await stream(yard, OWNER, run_id, mode="frames", on_frame=on_frame))
    await asyncio.wait_for(asyncio.gather(*sleeping), 30)
    acked: list[float] = []
    stopped: list[float] = []
    async with Connection(HOST, yard.node(STOPPER[kind]).port, yard.auth) as conn:
        for run_id, sse in zip(run_ids, streams, strict=True):
            t0 = time.perf_counter()
            answer = await conn.request("POST", f"/runs/{run_id}/stop")
            acked.append((time.perf_counter() - t0) * 1000)
            if answer.status != 202:
                raise BenchFailure(f"stop of {run_id} answered {answer.status}: {answer.body!r}")
            result = await asyncio.wait_for(sse.finished, 30)
            done = result.frames[-1] if result.frames else None
            if not result.done or status_of(done) != "stopped":
                raise BenchFailure(f"{kind}: run {run_id} ended {status_of(done)} ({result.error})")
            assert result.t_done is not None
            stopped.append((result.t_done - t0) * 1000)
    return {
        "stop_p50": percentile(stopped, 50),
        "stop_p99": percentile(stopped, 99),
        "stop_ack_p50": percentile(acked, 50),
    }


@dataclass
class Followed:
    """What one client read of a run, over as many connections as it took."""

    ids: list[int] = field(default_factory=list)
    t_open: float = 0.0
    t_first: float | None = None
    t_done: float = 0.0
    lags: int = 0
    """Times it was cut off (``lagged``: too far behind) and resumed."""
    joined: str | None = None
    """The run's status when it joined (its first ``run`` frame)."""


async def follow(yard: ScaleoutYard, node: str, run_id: str, timeout: float) -> Followed:
    """Read ``run_id``'s stream on ``node`` to its ``done``, resuming after a ``lagged``
    cut-off with ``?after=`` as an EventSource would."""
    seen = Followed(t_open=time.perf_counter())
    deadline = seen.t_open + timeout
    while True:
        after = seen.ids[-1] if seen.ids else 0
        path = f"/runs/{run_id}/stream" + (f"?after={after}" if after else "")
        sse = await open_stream(HOST, yard.node(node).port, path, headers=yard.auth)
        result = await asyncio.wait_for(sse.finished, max(0.1, deadline - time.perf_counter()))
        if seen.joined is None:
            seen.joined = status_of(result.first_frame)
        if seen.t_first is None:
            seen.t_first = result.t_first_event
        ids = result.ids[:-1] if result.lagged else result.ids  # a lagged frame's id: the last seq
        seen.ids += ids
        if result.done:
            assert result.t_done is not None
            seen.t_done = result.t_done
            return seen
        if not result.lagged:
            raise BenchFailure(f"{run_id} on {node}: status {result.status} ({result.error})")
        seen.lags += 1


def check_followed(seen: Followed, events: int, what: str) -> None:
    if seen.ids != list(range(1, events + 2)):
        raise BenchFailure(f"{what}: got {len(seen.ids)} ids, not 1..{events + 1} in order")


async def throughput(yard: ScaleoutYard, kind: str, sizes: Sizes) -> dict[str, Any]:
    """``cross_clients`` clients follow a fast run; then one reads it again, finished."""
    n, clients, node = sizes.cross_burst, sizes.cross_clients, READER[kind]
    before = await yard.db_info()
    run_id = await start_run(yard, "chatty", {"n": n, "batch": sizes.cross_batch})
    timeout = 60 + n / 500
    results = await asyncio.gather(*(follow(yard, node, run_id, timeout) for _ in range(clients)))
    for r in results:
        check_followed(r, n, f"{kind}: chatty {run_id} on {node}")
    rates = [len(r.ids) / (r.t_done - r.t_open) for r in results]
    span = max(r.t_done for r in results) - min(r.t_open for r in results)
    firsts = [((r.t_first or r.t_done) - r.t_open) * 1000 for r in results]
    load = await write_load(yard, run_id, before, n + 1, "burst")
    again = await follow(yard, node, run_id, timeout)
    check_followed(again, n, f"{kind}: finished chatty {run_id} on {node}")
    return {
        "follow_rate": percentile(rates, 50),
        "follow_total": sum(len(r.ids) for r in results) / span,
        "follow_first": percentile(firsts, 50),
        "follow_live": float(sum(r.joined == "running" for r in results)),
        "follow_lags": float(sum(r.lags for r in results)),
        "replay_rate": len(again.ids) / (again.t_done - again.t_open),
        **load,
    }


_STATE = CrossNode()

BENCH = Benchmark(
    name="cross",
    title="scale-out: baseline = same node, runyard = cross node (3 nodes, one CouchDB)",
    metrics=[
        Metric("deliver_p50", "scale-out: emit -> SSE client p50", "ms", "lower", fmt="{:.1f}"),
        Metric("deliver_p99", "scale-out: emit -> SSE client p99", "ms", "lower", fmt="{:.1f}"),
        Metric(
            "extra_p50", "scale-out: of it after an owner's client p50", "ms", "info", fmt="{:.1f}"
        ),
        Metric(
            "extra_p99", "scale-out: of it after an owner's client p99", "ms", "info", fmt="{:.1f}"
        ),
        Metric("stop_p50", "scale-out: stop -> done p50", "ms", "lower", fmt="{:.1f}"),
        Metric("stop_p99", "scale-out: stop -> done p99", "ms", "lower", fmt="{:.1f}"),
        Metric("stop_ack_p50", "scale-out: stop's 202 p50", "ms", "lower", fmt="{:.1f}"),
        Metric("follow_rate", "scale-out: fast run, per client", "events/s"),
        Metric("follow_total", "scale-out: fast run, all clients", "events/s"),
        Metric("follow_first", "scale-out: fast run, first event", "ms", "lower", fmt="{:.0f}"),
        Metric("follow_live", "scale-out: fast run, clients that joined it live", "", "info"),
        Metric("follow_lags", "scale-out: fast run, cut off (lagged) and resumed", "", "info"),
        Metric("replay_rate", "scale-out: fast run read once finished, 1 client", "events/s"),
        Metric("paced_docs", "CouchDB docs written / 1k events, paced", "docs", "info"),
        Metric("paced_sent", "CouchDB doc bytes written / 1k events, paced", "KiB", "info"),
        Metric("paced_kb", "CouchDB file growth / 1k events, paced", "KiB", "info"),
        Metric(
            "burst_docs", "CouchDB docs written / 1k events, fast run", "docs", "info", fmt="{:.1f}"
        ),
        Metric("burst_sent", "CouchDB doc bytes written / 1k events, fast run", "KiB", "info"),
        Metric("burst_kb", "CouchDB file growth / 1k events, fast run", "KiB", "info"),
    ],
    measure=_STATE.measure,
    goals=["deliver_p99<=100", "stop_p99<=1000"],
    around=_STATE.around,
)
