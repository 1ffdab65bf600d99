"""``StoreStats``: what the persistence actor measures about the store, as plain numbers.

Written only by the persistence thread, read by ``runyard.web.metrics`` when
Prometheus scrapes (see :mod:`runyard.actors.histogram` for why no lock is needed),
so the store's metrics cost the commit path a ``perf_counter`` pair and a
bisect, and ``persistence`` stays free of a metrics library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runyard.actors.histogram import Histogram

__all__ = ["StoreStats"]


@dataclass(slots=True)
class StoreStats:
    commit_seconds: Histogram = field(default_factory=Histogram)
    """Duration of each successful ``save_many`` (one group commit), in seconds."""
    write_errors: int = 0
    """``save_many`` calls that failed (each is retried; the records stay pending)."""
    read_errors: int = 0
    """Reads and maintenance calls that failed (answered ``503 store_unavailable``)."""
    backlog: int = 0
    """Gauge: runs whose newest write the store does not hold yet."""
