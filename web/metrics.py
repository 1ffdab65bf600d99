"""The Prometheus view of a server: a registry of its own, read at scrape time.

The runtime keeps plain numbers (:class:`~runyard.actors.stats.RuntimeStats`,
:class:`~runyard.persistence.store_stats.StoreStats`, the run-code pool's counters,
the loop monitor's histogram); :class:`RunyardCollector` turns them into
metric families only when ``GET /metrics`` is asked, so serving runs never
calls into ``prometheus_client``.  The registry is the app's own, not the
library's global default: two apps in one process (the tests) never mix
their numbers, and nothing another library registers globally leaks out.

Every metric, its type and meaning, is listed in docs/operations.md
("Metrics"); what to alert on is there too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runyard.actors.code.pool import WorkerPool
from runyard.actors.histogram import HistogramSnapshot
from runyard.actors.stats import RuntimeStats
from runyard.persistence.store_stats import StoreStats
from runyard.web.loop_monitor import LoopMonitor

__all__ = ["MetricsSources", "OpenStreams", "RunyardCollector", "metrics_registry"]

T = TypeVar("T")

FINAL_STATUSES = ("success", "error", "stopped")


class OpenStreams:
    """Gauge of the SSE responses being served right now, by kind (run, feed, run-code)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    async def track(self, kind: str, frames: AsyncIterator[T]) -> AsyncIterator[T]:
        """``frames``, counted as one open stream of ``kind`` while it is being sent.

        The count drops however the stream ends (done, lagged, the client gone:
        a disconnect cancels the iteration and ``finally`` runs).
        """
        self.by_kind[kind] += 1
        try:
            async for frame in frames:
                yield frame
        finally:
            self.by_kind[kind] -= 1


@dataclass(frozen=True, slots=True)
class MetricsSources:
    """Where the collector reads from; every field is read at scrape time."""

    version: str
    node_id: str
    runtime: RuntimeStats
    store: StoreStats | None
    loop: LoopMonitor
    streams: OpenStreams
    pool: WorkerPool | None


class RunyardCollector(Collector):
    """The runtime's numbers as metric families (``runyard_*``)."""

    def __init__(self, sources: MetricsSources) -> None:
        self._src = sources

    def collect(self) -> Iterable[Metric]:
        src = self._src
        info = InfoMetricFamily("runyard", "The server's version and node id.")
        info.add_metric([], {"version": src.version, "node_id": src.node_id})
        yield info
        yield from self._runs(src.runtime)
        yield from self._streams(src.runtime, src.streams)
        if src.store is not None:
            yield from self._store(src.store)
        yield _histogram(
            "runyard_event_loop_lag_seconds",
            "How late the event loop's probe timer fired (sampled every "
            f"{src.loop.interval_s:g} s): time something blocked every run and stream.",
            src.loop.lag_histogram.snapshot(),
        )
        if src.pool is not None:
            yield from self._pool(src.pool)

    @staticmethod
    def _runs(stats: RuntimeStats) -> Iterable[Metric]:
        live = GaugeMetricFamily(
            "runyard_live_runs", "Runs running on this node, by agent.", labels=["agent"]
        )
        for agent, n in sorted(stats.live_by_agent.items()):
            live.add_metric([agent], n)
        yield live
        yield CounterMetricFamily(
            "runyard_runs_started", "Runs started on this node.", value=stats.starts
        )
        finished = CounterMetricFamily(
            "runyard_runs_finished", "Runs that ended on this node, by status.", labels=["status"]
        )
        for status in sorted({*FINAL_STATUSES, *stats.finished}):
            finished.add_metric([status], stats.finished.get(status, 0))
        yield finished
        yield CounterMetricFamily(
            "runyard_runs_stopped",
            "Runs asked to stop (by a user, shutdown, or a start the store did not confirm).",
            value=stats.stops,
        )
        yield CounterMetricFamily(
            "runyard_events_emitted", "Events appended to runs' traces.", value=stats.events_emitted
        )
        yield CounterMetricFamily(
            "runyard_events_delivered",
            "Live events handed to subscribers (one per subscriber; replays not counted).",
            value=stats.events_delivered,
        )

    @staticmethod
    def _streams(stats: RuntimeStats, streams: OpenStreams) -> Iterable[Metric]:
        open_ = GaugeMetricFamily(
            "runyard_open_streams", "SSE responses being sent, by kind.", labels=["kind"]
        )
        for kind in sorted({"run", "feed", *streams.by_kind}):
            open_.add_metric([kind], streams.by_kind.get(kind, 0))
        yield open_
        yield GaugeMetricFamily(
            "runyard_subscribers",
            "Subscriptions following this node's live runs.",
            value=stats.subscribers,
        )
        yield CounterMetricFamily(
            "runyard_subscribers_lagged",
            "Subscribers cut off for falling too far behind (event: lagged).",
            value=stats.lagged,
        )

    @staticmethod
    def _store(store: StoreStats) -> Iterable[Metric]:
        yield _histogram(
            "runyard_store_commit_seconds",
            "Duration of each group commit to the store (save_many).",
            store.commit_seconds.snapshot(),
        )
        errors = CounterMetricFamily(
            "runyard_store_errors",
            "Failed store calls: write (retried, records kept) or read (answered 503).",
            labels=["op"],
        )
        errors.add_metric(["read"], store.read_errors)
        errors.add_metric(["write"], store.write_errors)
        yield errors
        yield GaugeMetricFamily(
            "runyard_store_backlog",
            "Runs whose newest write the store does not hold yet.",
            value=store.backlog,
        )

    @staticmethod
    def _pool(pool: WorkerPool) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "runyard_code_pool_idle_workers",
            "Pre-started run-code children waiting for a run.",
            value=len(pool.idle_pids),
        )
        yield GaugeMetricFamily(
            "runyard_code_pool_size",
            "How many idle run-code children the pool keeps.",
            value=pool.size,
        )
        yield CounterMetricFamily(
            "runyard_code_pool_spawns", "Run-code children pre-started.", value=pool.spawned
        )
        yield CounterMetricFamily(
            "runyard_code_pool_spawn_seconds",
            "Total time spent starting pre-started run-code children.",
            value=pool.spawn_seconds,
        )


def _histogram(name: str, doc: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [("+Inf" if math.isinf(b) else repr(b), float(n)) for b, n in snap.buckets]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snap.sum_s)


def metrics_registry(sources: MetricsSources) -> CollectorRegistry:
    """A registry of the app's own with :class:`RunyardCollector` and the process's
    CPU, memory and file descriptors (``process_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunyardCollector(sources))
    ProcessCollector(registry=registry)
    return registry


def code_pool_of(code_agent: Any) -> WorkerPool | None:
    """The run-code pool behind the app's code agent factory, if it keeps one."""
    pool = getattr(code_agent, "pool", None)
    return pool if isinstance(pool, WorkerPool) else None
