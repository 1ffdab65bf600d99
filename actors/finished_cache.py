"""``FinishedCache``: finished runs kept in memory after their run actor stopped.

A run that just ended is read, replayed and listed far more often than an
old one, so the registry keeps its final record for ``retention_s``.  A
record leaves memory only once the store has acknowledged it (or when the
runtime has no store at all): the cache is also what keeps an unsaved run
readable while the store is slow or down.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from actors.persistence_protocol import Saved
from actors.records import RunRecord

__all__ = ["FinishedCache"]


@dataclass(slots=True)
class _Entry:
    record: RunRecord
    stored: bool


class FinishedCache:
    def __init__(self, *, durable: bool) -> None:
        """``durable``: no store behind the runtime, so every record counts as stored."""
        self._entries: dict[str, _Entry] = {}
        self._durable = durable

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RunRecord]:
        return (e.record for e in self._entries.values())

    def get(self, run_id: str) -> RunRecord | None:
        entry = self._entries.get(run_id)
        return None if entry is None else entry.record

    def add(self, record: RunRecord) -> None:
        self._entries[record.run_id] = _Entry(record, stored=self._durable)

    def remove(self, run_id: str) -> RunRecord | None:
        entry = self._entries.pop(run_id, None)
        return None if entry is None else entry.record

    def stored(self, saved: tuple[Saved, ...]) -> None:
        """The store acknowledged these versions: their records may leave memory."""
        for version in saved:
            entry = self._entries.get(version.run_id)
            if entry is not None and entry.record.status == version.status:
                entry.stored = True

    def evict(self, run_id: str) -> int:
        """Drop one record now if the store has it; 1 if dropped, else 0."""
        entry = self._entries.get(run_id)
        if entry is not None and entry.stored:
            del self._entries[run_id]
            return 1
        return 0

    def evict_finished_before(self, cutoff: float) -> int:
        """Drop stored records that finished at or before ``cutoff``; how many."""
        expired = [
            run_id
            for run_id, e in self._entries.items()
            if e.stored and e.record.finished_at is not None and e.record.finished_at <= cutoff
        ]
        for run_id in expired:
            del self._entries[run_id]
        return len(expired)
