"""``Histogram``: bucket counts of a duration, kept with plain ints.

The runtime measures a few durations (a store commit, the event loop's lag)
that operators want as distributions, but ``actors`` and ``persistence`` must
not depend on a metrics library (imports point web -> persistence -> actors;
docs/design.md).  So they observe into this, and the web layer turns a
:meth:`Histogram.snapshot` into a Prometheus histogram at scrape time.

One writer thread per histogram (the persistence thread, or the loop); the
scrape reads from the loop thread without a lock: a snapshot taken while an
observation lands may be one observation behind in a bucket, never corrupt
(ints and floats are replaced whole under the GIL).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["LATENCY_BUCKETS_S", "Histogram", "HistogramSnapshot"]

LATENCY_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds in seconds, from a fast SQLite commit (~1 ms) to a store timeout."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """``buckets``: (upper bound in seconds, observations <= it), cumulative and
    ending with ``inf``; ``sum_s``: the total of every observation in seconds."""

    buckets: tuple[tuple[float, int], ...]
    sum_s: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


class Histogram:
    """Counts of observations per bucket (not cumulative) plus their sum."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        """``bounds``: increasing upper bounds in seconds; ``inf`` is added."""
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration (seconds); a bisect and two adds, no allocation."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        counts = list(self._counts)  # one copy: consistent buckets even mid-observe
        total = 0
        buckets: list[tuple[float, int]] = []
        for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
            total += n
            buckets.append((bound, total))
        return HistogramSnapshot(tuple(buckets), self._sum)
