"""``FinishedCache``: finished runs kept in memory after their run actor stopped.

A run that just ended is read, replayed and listed far more often than an
old one, so the registry keeps its final record for ``retention_s``, within
``cache_bytes`` of event data: past that bound the least recently used
record leaves first.  Every record here is already in the store (a run actor
ends only once its terminal record is stored), so any of them may leave
memory at any time; a read then goes to the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from runyard.actors.records import RunRecord

__all__ = ["FinishedCache"]


def _size(record: RunRecord) -> int:
    return sum(len(e.data_json) for e in record.events) + 512  # + the header, roughly


class FinishedCache:
    def __init__(self, max_bytes: int) -> None:
        self._records: OrderedDict[str, RunRecord] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._max_bytes = max_bytes
        self.bytes = 0
        """Event data held, the quantity ``max_bytes`` bounds."""

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records.values())

    def get(self, run_id: str) -> RunRecord | None:
        record = self._records.get(run_id)
        if record is not None:
            self._records.move_to_end(run_id)
        return record

    def add(self, record: RunRecord, trace_bytes: int | None = None) -> None:
        """Keep ``record``; ``trace_bytes``: its event data's size if known (else counted)."""
        self.remove(record.run_id)
        size = _size(record) if trace_bytes is None else trace_bytes + 512
        self._records[record.run_id] = record
        self._sizes[record.run_id] = size
        self.bytes += size
        while self.bytes > self._max_bytes and self._records:
            self.remove(next(iter(self._records)))

    def remove(self, run_id: str) -> RunRecord | None:
        record = self._records.pop(run_id, None)
        if record is not None:
            self.bytes -= self._sizes.pop(run_id)
        return record

    def evict_finished_before(self, cutoff: float) -> int:
        """Drop records that finished at or before ``cutoff``; how many."""
        expired = [
            run_id
            for run_id, r in self._records.items()
            if r.finished_at is not None and r.finished_at <= cutoff
        ]
        for run_id in expired:
            self.remove(run_id)
        return len(expired)
