"""What a live run's commits cost on CouchDB: commits/s and documents + bytes per 1,000 events.

A running run commits what it emitted in each 50 ms window (here: 5 events
of ~120 bytes each) through ``CouchStore.save_many``. The commits are sent
back to back, so the rate is what one run's commits cost, not the window.
The rate is reported early in the trace and late in it (a cost that grows
with the trace shows there), and every ``_bulk_docs`` is counted: documents
and their encoded bytes, per 1,000 events committed.

    .venv/bin/python -m bench.couch_commits [--commits 2000] [--url URL]

Without ``--url`` a private Apache CouchDB is started from ../shared/couchdb.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from runyard.actors.jsonsafe import dumps
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord
from runyard.persistence.couch_store import CouchStore

T0 = 1_700_000_000.0
PER_COMMIT = 5


def header(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        owner="alice",
        agent="echo",
        status="running",
        input={"prompt": "hi"},
        started_at=T0,
        finished_at=None,
        events=(),
        updated_at=T0,
    )


def event(seq: int) -> Event:
    return Event(seq=seq, ts=T0 + seq / 100, type="log", data={"line": f"line {seq} " + "x" * 80})


async def measure(url: str, commits: int) -> dict[str, Any]:
    store = CouchStore(url, db=f"bench_commits_{int(time.time())}")
    await store.open()
    database = store._database()
    sent = {"docs": 0, "bytes": 0}
    bulk = database._bulk_docs

    async def counted(docs: list[dict[str, Any]], **kw: Any) -> Any:
        sent["docs"] += len(docs)
        sent["bytes"] += len(dumps({"docs": docs}).encode("utf-8"))
        return await bulk(docs, **kw)

    database._bulk_docs = counted  # type: ignore[method-assign]
    head = header("live")
    await store.save_many([RunWrite(head, 0)])
    sent.update(docs=0, bytes=0)
    marks: list[float] = []
    window = max(1, commits // 10)
    t0 = time.perf_counter()
    for n in range(commits):
        first = n * PER_COMMIT + 1
        last = first + PER_COMMIT - 1
        write = RunWrite(
            dataclasses.replace(head, updated_at=T0 + n),
            last,
            tuple(event(s) for s in range(first, last + 1)),
        )
        await store.save_many([write])
        if (n + 1) % window == 0:
            marks.append(time.perf_counter())
    total = time.perf_counter() - t0
    events = commits * PER_COMMIT
    got = await store.get("live")
    if got is None or len(got.events) != events:
        raise RuntimeError(f"read back {got and len(got.events)} events, wrote {events}")
    await store._database().delete()
    await store.close()
    first_window = marks[0] - t0
    last_window = marks[-1] - marks[-2]
    return {
        "commits": commits,
        "events": events,
        "commits/s overall": commits / total,
        "commits/s first 10%": window / first_window,
        "commits/s last 10%": window / last_window,
        "docs per 1000 events": sent["docs"] * 1000 / events,
        "bytes per 1000 events": sent["bytes"] * 1000 / events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.url:
        result = asyncio.run(measure(args.url, args.commits))
    else:
        from tests.real_couchdb import RealCouchServer

        with (
            tempfile.TemporaryDirectory(prefix="bench-commits-") as tmp,
            RealCouchServer(Path(tmp) / "couch") as server,
        ):
            result = asyncio.run(measure(server.url, args.commits))
    for key, value in result.items():
        print(f"{key:>24}: {value:,.1f}" if isinstance(value, float) else f"{key:>24}: {value:,}")


if __name__ == "__main__":
    main()
