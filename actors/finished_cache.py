"""``FinishedCache``: finished runs kept in memory after their run actor stopped.

A run that just ended is read, replayed and listed far more often than an
old one, so the registry keeps its final record for ``retention_s``.  Every
record here is already in the store (a run actor ends only once its terminal
record is stored), so any of them may leave memory at any time.
"""

from __future__ import annotations

from collections.abc import Iterator

from actors.records import RunRecord

__all__ = ["FinishedCache"]


class FinishedCache:
    def __init__(self) -> None:
        self._records: dict[str, RunRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records.values())

    def get(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    def add(self, record: RunRecord) -> None:
        self._records[record.run_id] = record

    def remove(self, run_id: str) -> RunRecord | None:
        return self._records.pop(run_id, None)

    def evict_finished_before(self, cutoff: float) -> int:
        """Drop records that finished at or before ``cutoff``; how many."""
        expired = [
            run_id
            for run_id, r in self._records.items()
            if r.finished_at is not None and r.finished_at <= cutoff
        ]
        for run_id in expired:
            del self._records[run_id]
        return len(expired)
