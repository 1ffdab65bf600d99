"""7. Persistence: finished runs written per second through the PersistenceActor.

In process.  N finished records (a ``ticker`` run's: 10 ticks and ``done``)
are told to the actor one ``SaveRuns`` per record, as the registry does,
each with ``ack_to``; the clock stops when every record is acknowledged.
The reference column is plain ``sqlite3``: one transaction, ``executemany``
of the same rows into the same schema.  CouchDB (pouchdb-server, the
CouchDB-compatible test server) runs when ``runyard.persistence.couch_store`` and
the server are installed; its reference is raw ``_bulk_docs`` posts of the
same documents.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from bench.common import ROOT, BenchFailure, Benchmark, Metric, Sizes
from runyard.actors.persistence_protocol import RunsPersisted, RunWrite, SaveRuns
from runyard.actors.records import Event, RunRecord
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_schema import SCHEMA as _SCHEMA
from runyard.persistence.sqlite_store import SQLiteStore


def make_records(n: int, start: float = 1_800_000_000.0) -> list[RunRecord]:
    records = []
    for k in range(n):
        t = start + k * 0.001
        events = tuple(Event(i, t + i * 1e-5, "tick", {"i": i}) for i in range(1, 11))
        result = {"ticks": 10}
        events += (
            Event(11, t + 2e-4, "done", {"status": "success", "result": result, "error": None}),
        )
        records.append(
            RunRecord(
                run_id=f"{k:08d}" + "b" * 24,
                owner="bench",
                agent="ticker",
                status="success",
                input={"n": 10, "interval": 0},
                started_at=t,
                finished_at=t + 3e-4,
                events=events,
                result=result,
                updated_at=t + 3e-4,
            )
        )
    return records


class _Acks(pykka.ThreadingActor):
    """Stands in for the registry: counts ``RunsPersisted`` acknowledgements."""

    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.expected = expected
        self.count = 0
        self.done = done

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunsPersisted):
            self.count += len(message.saved)
            if self.count >= self.expected:
                self.done.set()
        return None


def through_actor(store: Any, records: list[RunRecord], timeout: float = 300.0) -> float:
    """Runs/s written through a PersistenceActor (started fresh, stopped after)."""
    actor = PersistenceActor.start(store)
    done = threading.Event()
    acks_ref = _Acks.start(len(records), done)
    try:
        t0 = time.perf_counter()
        for record in records:
            actor.tell(SaveRuns((RunWrite.of(record),), ack_to=acks_ref))
        if not done.wait(timeout):
            raise BenchFailure("the persistence actor did not acknowledge every record")
        return len(records) / (time.perf_counter() - t0)
    finally:
        actor.stop()
        acks_ref.stop()


def _rows(records: list[RunRecord]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    runs = [
        (
            r.run_id,
            r.owner,
            r.agent,
            r.status,
            r.started_at,
            r.finished_at,
            r.updated_at,
            r.error,
            json.dumps(r.input),
            json.dumps(r.result),
            json.dumps(r.options),
            len(r.events),
            None,  # node
            None,  # schema_warnings
            None,  # ops_log
            None,  # workspace
        )
        for r in records
    ]
    events = [
        (r.run_id, e.seq, e.ts, e.type, json.dumps(e.data)) for r in records for e in r.events
    ]
    return runs, events


def plain_sqlite(path: Path, records: list[RunRecord]) -> float:
    """Runs/s with one executemany transaction: the reference, not a store."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SCHEMA)
    t0 = time.perf_counter()
    runs, events = _rows(records)
    conn.execute("BEGIN")
    marks = ",".join("?" * len(runs[0])) if runs else ""
    conn.executemany(f"INSERT INTO runs VALUES ({marks})", runs)
    conn.executemany("INSERT INTO events (run_id, seq, ts, type, data) VALUES (?,?,?,?,?)", events)
    conn.execute("COMMIT")
    rate = len(records) / (time.perf_counter() - t0)
    conn.close()
    return rate


def count_rows(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return runs, events
    finally:
        conn.close()


def couch_available() -> str | None:
    """Why CouchDB cannot be measured, or None if it can."""
    if importlib.util.find_spec("runyard.persistence.couch_store") is None:
        return "n/a (pending: persistence/couch_store.py not there yet)"
    if not (ROOT / "tests" / "couchdb" / "node_modules" / "pouchdb-server").exists():
        return "n/a (pouchdb-server not installed: make couchdb-deps)"
    if shutil.which("node") is None:
        return "n/a (node not installed)"
    return None


def couch_rate(kind: str, records: list[RunRecord]) -> float:
    """Runs/s against a fresh pouchdb-server: through the actor, or raw ``_bulk_docs``."""
    import httpx

    from tests.couchdb_server import CouchServer

    tmp = Path(tempfile.mkdtemp(prefix="bench-couch-"))
    try:
        with CouchServer(tmp / "couch") as server:
            if kind == "runyard":
                from runyard.persistence.couch_store import CouchStore

                return through_actor(CouchStore(server.url, db="bench_runs"), records)
            docs = [
                {
                    "_id": r.run_id,
                    "owner": r.owner,
                    "agent": r.agent,
                    "status": r.status,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "input": r.input,
                    "result": r.result,
                    "events": [
                        {"seq": e.seq, "ts": e.ts, "type": e.type, "data": e.data} for e in r.events
                    ],
                }
                for r in records
            ]
            with httpx.Client(base_url=server.base_url, auth=server.auth, timeout=60) as c:
                c.put("/bench_raw").raise_for_status()
                t0 = time.perf_counter()
                for i in range(0, len(docs), 500):
                    batch = {"docs": docs[i : i + 500]}
                    c.post("/bench_raw/_bulk_docs", json=batch).raise_for_status()
                return len(docs) / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(kind: str, sizes: Sizes) -> dict[str, Any]:
    records = make_records(sizes.persist_runs)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-persist-{kind}-"))
    out: dict[str, Any] = {}
    try:
        path = tmp / "runs.sqlite3"
        if kind == "baseline":
            out["sqlite"] = await asyncio.to_thread(plain_sqlite, path, records)
        else:
            out["sqlite"] = await asyncio.to_thread(through_actor, SQLiteStore(path), records)
        runs, events = count_rows(path)
        if runs != len(records) or events != 11 * len(records):
            raise BenchFailure(f"{kind}: stored {runs} runs / {events} events")
        why = couch_available()
        if why is not None:
            out["note:couch"] = why
        else:
            out["couch"] = await asyncio.to_thread(couch_rate, kind, records)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


BENCH = Benchmark(
    name="persistence",
    title="persistence: finished runs written per second",
    metrics=[
        Metric("sqlite", "persist: SQLite", "runs/s"),
        Metric("couch", "persist: CouchDB (pouchdb-server)", "runs/s"),
    ],
    measure=measure,
    goals=["sqlite>=5000", "couch>=1000"],
)
