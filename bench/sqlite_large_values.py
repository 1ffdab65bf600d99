"""``python -m bench.sqlite_large_values``: SQLite writes after large values.

Writes 30 runs of one 3 MB event each, then a 20,000-event run three times,
and reads it back (times in ms).  The events table used to be ``WITHOUT
ROWID`` with large values inline in its b-tree; the goal for the rowid layout
is a 20,000-event write under 100 ms after the large values.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from runyard.actors.records import Event, RunRecord
from runyard.persistence.sqlite_store import SQLiteStore


def record(run_id: str, events: list[Event]) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        owner="u",
        agent="a",
        status="success",
        input={},
        started_at=1.0,
        finished_at=2.0,
        events=tuple(events),
        updated_at=2.0,
    )


async def measure(directory: Path) -> tuple[list[float], float]:
    store = SQLiteStore(directory / "runs.sqlite3")
    await store.open()
    try:
        big = "x" * (3 * 1024 * 1024)
        for i in range(30):
            await store.save(record(f"big-{i:02d}", [Event(1, 1.0, "blob", {"b": big})]))
        events = [Event(s, 1.0, "log", {"i": s, "line": "some text"}) for s in range(1, 20_001)]
        writes = []
        for k in range(3):
            t0 = time.perf_counter()
            await store.save(record(f"long-{k}", events))
            writes.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        got = await store.get("long-0")
        assert got is not None
        assert len(got.events) == 20_000
        return writes, (time.perf_counter() - t0) * 1000
    finally:
        await store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        writes, read = asyncio.run(measure(Path(tmp)))
    shown = ", ".join(f"{ms:.0f}" for ms in writes)
    print(f"20,000-event run after 30 x 3 MB events: write {shown} ms; read back {read:.0f} ms")
    print(f"goal < 100 ms per write: {'MET' if max(writes) < 100 else 'MISS'}")


if __name__ == "__main__":
    main()
