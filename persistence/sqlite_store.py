"""``SQLiteStore``: the embedded default store, one SQLite file in WAL mode.

The methods are coroutines only because :class:`~persistence.store.RunStore`
is async (CouchDB needs it).  Inside they do plain blocking ``sqlite3`` work:
they are awaited on the persistence actor's private event loop, in the
actor's own thread, so a slow disk or a big trace never stalls the server's
loop.  That thread owns the one connection; ``check_same_thread`` stays on so
that a call from any other thread fails loudly instead of racing.

Traces live in their own ``events`` table keyed by ``(run_id, seq)``: a
checkpoint of a long run appends only the events the store does not have yet,
instead of re-encoding and rewriting the whole trace every few seconds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from actors.jsonsafe import dumps_safe
from actors.records import ALL_STATUSES, JSON, Event, RunRecord, RunStatus, RunSummary
from persistence.store import PageKey

__all__ = ["SQLiteStore", "decode_json", "encode_json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    agent       TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    updated_at  REAL NOT NULL,
    error       TEXT,
    input       TEXT NOT NULL,
    result      TEXT NOT NULL,
    options     TEXT NOT NULL,
    event_count INTEGER NOT NULL
);
-- The list query: one owner, newest first, keyset pagination on the sort key.
CREATE INDEX IF NOT EXISTS runs_owner_started
    ON runs (owner, started_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_owner_status_started
    ON runs (owner, status, started_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_owner_agent_started
    ON runs (owner, agent, started_at DESC, run_id DESC);
-- Recovery after a crash: tiny, holds only the runs still running.
CREATE INDEX IF NOT EXISTS runs_running ON runs (run_id) WHERE status = 'running';
-- Retention purge.
CREATE INDEX IF NOT EXISTS runs_finished_at ON runs (finished_at);

CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

# Whether a write may replace the stored row is decided by the one merge rule,
# RunRecord.replaces, inside the write transaction (see _write).
_UPSERT = """
INSERT INTO runs (run_id, owner, agent, status, started_at, finished_at, updated_at,
                  error, input, result, options, event_count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    owner = excluded.owner,
    agent = excluded.agent,
    status = excluded.status,
    started_at = excluded.started_at,
    finished_at = excluded.finished_at,
    updated_at = excluded.updated_at,
    error = excluded.error,
    input = excluded.input,
    result = excluded.result,
    options = excluded.options,
    event_count = excluded.event_count
"""

_SUMMARY_COLUMNS = "run_id, owner, agent, status, started_at, finished_at, event_count, error"
_RECORD_COLUMNS = (
    "run_id, owner, agent, status, started_at, finished_at, updated_at, error, "
    "input, result, options"
)


def encode_json(value: JSON) -> str:
    """Never raises: a non-JSON value is stored as its marked repr (see actors.jsonsafe)."""
    return dumps_safe(value)[1]


def decode_json(text: str | None) -> JSON:
    return None if text is None else json.loads(text)


def _decode_object(text: str) -> dict[str, JSON]:
    """Decode a column that must hold an object; a replaced whole value is kept, boxed."""
    value = json.loads(text)
    if isinstance(value, dict):
        return value
    return {"value": value}


def _event(seq: int, ts: float, type_: str, text: str) -> Event:
    data = _decode_object(text)
    # Reuse the stored text as the canonical encoding instead of encoding again.
    return Event(seq=seq, ts=ts, type=type_, data=data, data_json=text if text[:1] == "{" else "")


def _status(text: str) -> RunStatus:
    if text not in ALL_STATUSES:
        raise ValueError(f"unknown run status in store: {text!r}")
    return cast(RunStatus, text)


class SQLiteStore:
    """The :class:`~persistence.store.RunStore` on one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ...
        # COMMIT), so a batch is exactly one transaction and nothing is left
        # implicitly open between calls.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a killed process (the WAL is in the
            # OS cache); only a power cut can lose the last transactions.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute("PRAGMA optimize")
            finally:
                conn.close()

    async def ping(self) -> None:
        self._db().execute("SELECT 1 FROM runs LIMIT 1").fetchall()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"SQLiteStore({self.path}) is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # COMMIT itself can fail (disk full, busy)
                conn.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- writes

    async def save(self, record: RunRecord) -> None:
        await self.save_many([record])

    async def save_many(self, records: list[RunRecord]) -> None:
        if not records:
            return
        with self._transaction() as conn:
            for record in records:
                self._write(conn, record)

    @staticmethod
    def _write(conn: sqlite3.Connection, record: RunRecord) -> None:
        stored = conn.execute(
            "SELECT status, event_count, updated_at FROM runs WHERE run_id = ?", (record.run_id,)
        ).fetchone()
        if stored is not None and not record.replaces(*stored):
            return  # e.g. a stale running checkpoint of a finished run: keep the stored one
        conn.execute(
            _UPSERT,
            (
                record.run_id,
                record.owner,
                record.agent,
                record.status,
                record.started_at,
                record.finished_at,
                record.updated_at,
                record.error,
                encode_json(record.input),
                encode_json(record.result),
                encode_json(record.options),
                len(record.events),
            ),
        )
        stored_max = conn.execute(
            "SELECT max(seq) FROM events WHERE run_id = ?", (record.run_id,)
        ).fetchone()[0]
        record_max = record.events[-1].seq if record.events else 0
        if stored_max is not None and stored_max > record_max:
            # The record is the truth: a trace never keeps events its record lacks.
            conn.execute(
                "DELETE FROM events WHERE run_id = ? AND seq > ?", (record.run_id, record_max)
            )
        new = (
            record.events
            if stored_max is None
            else [e for e in record.events if e.seq > stored_max]
        )
        if new:
            conn.executemany(
                "INSERT OR IGNORE INTO events (run_id, seq, ts, type, data) VALUES (?, ?, ?, ?, ?)",
                # data_json is the event's one canonical encoding, made at emit time.
                [(record.run_id, e.seq, e.ts, e.type, e.data_json) for e in new],
            )

    async def delete(self, run_id: str) -> bool:
        with self._transaction() as conn:
            conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    async def purge_older_than(self, cutoff: float, *, batch: int = 500) -> int:
        """Delete in batches, one short transaction each, so writers never wait long."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        total = 0
        while True:
            with self._transaction() as conn:
                ids = [
                    (row[0],)
                    for row in conn.execute(
                        "SELECT run_id FROM runs WHERE finished_at < ? AND status <> 'running' "
                        "LIMIT ?",
                        (cutoff, batch),
                    )
                ]
                conn.executemany("DELETE FROM events WHERE run_id = ?", ids)
                conn.executemany("DELETE FROM runs WHERE run_id = ?", ids)
            total += len(ids)
            if len(ids) < batch:
                return total

    # ----------------------------------------------------------------- reads

    async def get(self, run_id: str) -> RunRecord | None:
        conn = self._db()
        row = conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        events = conn.execute(
            "SELECT seq, ts, type, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return self._record(row, events)

    @staticmethod
    def _record(row: tuple[Any, ...], events: Iterable[tuple[Any, ...]]) -> RunRecord:
        (run_id, owner, agent, status, started_at, finished_at, updated_at, error) = row[:8]
        input_, result, options = row[8:]
        return RunRecord(
            run_id=run_id,
            owner=owner,
            agent=agent,
            status=_status(status),
            input=_decode_object(input_),
            started_at=started_at,
            finished_at=finished_at,
            events=tuple(_event(*e) for e in events),
            result=decode_json(result),
            error=error,
            updated_at=updated_at,
            options=_decode_object(options),
        )

    async def list_for_user(
        self,
        owner: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        if limit < 1:
            return []
        where = ["owner = ?"]
        params: list[Any] = [owner]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if before is not None:
            # A row value comparison is a range scan on the (.., started_at, run_id) index.
            where.append("(started_at, run_id) < (?, ?)")
            params.extend((float(before[0]), before[1]))
        params.append(limit)
        sql = (
            f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
            "ORDER BY started_at DESC, run_id DESC LIMIT ?"
        )
        return [
            RunSummary(
                run_id=run_id,
                owner=owner_,
                agent=agent_,
                status=_status(status_),
                started_at=started_at,
                finished_at=finished_at,
                event_count=event_count,
                error=error,
            )
            for (
                run_id,
                owner_,
                agent_,
                status_,
                started_at,
                finished_at,
                event_count,
                error,
            ) in self._db().execute(sql, params)
        ]

    async def find_unfinished(self) -> list[RunRecord]:
        ids = [
            row[0] for row in self._db().execute("SELECT run_id FROM runs WHERE status = 'running'")
        ]
        records = []
        for run_id in ids:
            record = await self.get(run_id)
            if record is not None:
                records.append(record)
        return records
