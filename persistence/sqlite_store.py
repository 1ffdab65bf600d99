"""``SQLiteStore``: the embedded default store, one SQLite file in WAL mode.

The methods are coroutines only because :class:`~runyard.persistence.store.RunStore`
is async (CouchDB needs it).  Inside they do plain blocking ``sqlite3`` work:
they are awaited on the persistence actor's private event loop, in the
actor's own thread, so a slow disk or a big trace never stalls the server's
loop.  That thread owns the one connection; ``check_same_thread`` stays on so
that a call from any other thread fails loudly instead of racing.

Traces live in their own ``events`` table: a commit of a live run appends
only its new events (:class:`~runyard.actors.persistence_protocol.RunWrite`), never
rewrites the trace.  The table is an ordinary rowid table with a separate
``(run_id, seq)`` index, so a large event's payload sits in overflow pages
that index lookups and inserts never read (in a ``WITHOUT ROWID`` table keyed
by ``(run_id, seq)`` every b-tree rebalance moved the payloads themselves:
after 30 events of 3 MB, writing a 20,000-event run took 19-28 s).
A run's header holds its ``event_count``: reads never return events past it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import (
    ALL_STATUSES,
    JSON,
    Event,
    RunRecord,
    RunStatus,
    RunSummary,
    Version,
    replaces,
)
from runyard.persistence.sqlite_batch import insert_rows
from runyard.persistence.sqlite_schema import create_or_migrate
from runyard.persistence.store import PageKey

__all__ = ["SQLiteStore", "decode_json", "encode_json"]

# Whether a write may replace the stored row is decided by the one merge rule,
# RunRecord.replaces, inside the write transaction (see _write).
_UPSERT = """
INSERT INTO runs (run_id, owner, agent, status, started_at, finished_at, updated_at,
                  error, input, result, options, event_count, node, schema_warnings, ops_log,
                  workspace)
VALUES {values}
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
    event_count = excluded.event_count,
    node = excluded.node,
    schema_warnings = excluded.schema_warnings,
    ops_log = excluded.ops_log,
    workspace = excluded.workspace
"""

_INSERT_EVENTS = "INSERT OR IGNORE INTO events (run_id, seq, ts, type, data) VALUES {values}"
_RUN_VALUES = 16  # per row of _UPSERT
_EVENT_VALUES = 5  # per row of _INSERT_EVENTS

_BATCH_KEYS = 500
"""Run ids per ``IN (...)`` query: far below SQLite's limit on bound parameters."""

_SUMMARY_COLUMNS = (
    "run_id, owner, agent, status, started_at, finished_at, event_count, error, workspace"
)
_RECORD_COLUMNS = (
    "run_id, owner, agent, status, started_at, finished_at, updated_at, error, "
    "input, result, options, node, schema_warnings, ops_log, workspace, event_count"
)


def encode_json(value: JSON) -> str:
    """Never raises: a non-JSON value is stored as its marked repr (see runyard.actors.jsonsafe)."""
    return dumps_safe(value)[1]


def decode_json(text: str | None) -> JSON:
    return None if text is None else json.loads(text)


def _decode_object(text: str) -> dict[str, JSON]:
    """Decode a column that must hold an object; a replaced whole value is kept, boxed."""
    value = json.loads(text)
    if isinstance(value, dict):
        return value
    return {"value": value}


def _decode_list(text: str | None) -> list[Any] | None:
    """A nullable column that holds a list (a replaced whole value is kept, boxed)."""
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


def _header_row(write: RunWrite) -> tuple[Any, ...]:
    """The ``runs`` row of a write, in :data:`_UPSERT`'s order."""
    header = write.header
    return (
        header.run_id,
        header.owner,
        header.agent,
        header.status,
        header.started_at,
        header.finished_at,
        header.updated_at,
        header.error,
        encode_json(header.input),
        encode_json(header.result),
        encode_json(header.options),
        write.event_count,
        header.node,
        None if header.schema_warnings is None else encode_json(header.schema_warnings),
        encode_json(header.ops_log) if header.ops_log else None,
        header.workspace,
    )


def _event(seq: int, ts: float, type_: str, text: str) -> Event:
    data = _decode_object(text)
    # Reuse the stored text as the canonical encoding instead of encoding again.
    return Event(seq=seq, ts=ts, type=type_, data=data, data_json=text if text[:1] == "{" else "")


def _status(text: str) -> RunStatus:
    if text not in ALL_STATUSES:
        raise ValueError(f"unknown run status in store: {text!r}")
    return cast(RunStatus, text)


class SQLiteStore:
    """The :class:`~runyard.persistence.store.RunStore` on one SQLite file."""

    commit_window_s = 0.005
    """A local fsync-free WAL commit is short: one still unacknowledged after
    5 ms stops holding the next batch back."""
    commit_gap_s = 0.005
    """At most 200 commits/s: with none, the worst agent inputs made a commit per
    loop turn and left the one store thread no time for a list query within
    the store timeout (tests/test_loop_fairness.py); an idle run still commits
    at once."""
    awaits_nothing = True
    """Plain blocking ``sqlite3`` calls inside: run without the actor's loop."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Private from the first byte, whatever the umask or the data dir's
        # mode: SQLite gives the -wal and -shm files the database file's mode.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
            create_or_migrate(conn)
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
        await self.save_many([RunWrite.of(record)])

    async def save_many(self, writes: list[RunWrite]) -> set[str]:
        """One transaction of a few statements for the whole batch.

        Each statement (and each row of an ``executemany``) gives up the GIL
        and must win it back from the busy event loop: 3 statements per run
        and one step per event made the commit that the 202s wait for take
        ms.  The stored versions are read with one query, the merge rule is
        applied here, and the headers and events go in as multi-row inserts
        (:mod:`runyard.persistence.sqlite_batch`).  Nothing is ever fenced here (one
        process per file): returns an empty set.
        """
        if not writes:
            return set()
        with self._transaction() as conn:
            stored = self._stored_versions(conn, {w.run_id for w in writes})
            # By run: one statement may not upsert a row twice; the last kept write wins.
            headers: dict[str, tuple[Any, ...]] = {}
            events: list[Any] = []  # flat: run_id, seq, ts, type, data, run_id, ...
            for write in writes:
                version = write.version
                old = stored.get(write.run_id)
                if old is not None and not replaces(version, old):
                    continue  # e.g. a stale running write of a finished run: keep the stored one
                stored[write.run_id] = version  # a later write of it in this batch meets this one
                headers[write.run_id] = _header_row(write)
                run_id = write.run_id
                for e in write.events:
                    # data_json is the event's one canonical encoding, made at emit time.
                    events += (run_id, e.seq, e.ts, e.type, e.data_json)
            insert_rows(conn, _UPSERT, _RUN_VALUES, [v for row in headers.values() for v in row])
            insert_rows(conn, _INSERT_EVENTS, _EVENT_VALUES, events)
        return set()

    @staticmethod
    def _stored_versions(conn: sqlite3.Connection, run_ids: set[str]) -> dict[str, Version]:
        """``run_id -> (0, status, event_count, updated_at)`` of those already stored
        (one process per file: no takeover, so the epoch stays 0)."""
        ids = list(run_ids)
        found: dict[str, Version] = {}
        for start in range(0, len(ids), _BATCH_KEYS):
            chunk = ids[start : start + _BATCH_KEYS]
            marks = ",".join("?" * len(chunk))
            for run_id, status, count, updated in conn.execute(
                "SELECT run_id, status, event_count, updated_at FROM runs "
                f"WHERE run_id IN ({marks})",
                chunk,
            ):
                found[run_id] = (0, status, count, updated)
        return found

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
            "SELECT seq, ts, type, data FROM events WHERE run_id = ? AND seq <= ? ORDER BY seq",
            (run_id, row[-1]),
        ).fetchall()
        return self._record(row, events)

    async def get_header(self, run_id: str) -> RunWrite | None:
        row = (
            self._db()
            .execute(f"SELECT {_RECORD_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return None if row is None else RunWrite(self._record(row, ()), row[-1])

    async def get_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        conn = self._db()
        row = conn.execute("SELECT event_count FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return []
        return [
            _event(*e)
            for e in conn.execute(
                "SELECT seq, ts, type, data FROM events WHERE run_id = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (run_id, after_seq, row[0], limit),
            )
        ]

    @staticmethod
    def _record(row: tuple[Any, ...], events: Iterable[tuple[Any, ...]]) -> RunRecord:
        (run_id, owner, agent, status, started_at, finished_at, updated_at, error) = row[:8]
        input_, result, options, node, warnings, ops_log, workspace = row[8:15]
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
            node=node,
            schema_warnings=_decode_list(warnings),
            ops_log={} if ops_log is None else _decode_object(ops_log),
            workspace=workspace,
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
        return self._list("owner", owner, status, agent, limit, before)

    async def list_for_workspace(
        self,
        workspace: str,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: PageKey | None = None,
    ) -> list[RunSummary]:
        return self._list("workspace", workspace, status, agent, limit, before)

    def _list(
        self,
        column: Literal["owner", "workspace"],
        value: str,
        status: RunStatus | None,
        agent: str | None,
        limit: int,
        before: PageKey | None,
    ) -> list[RunSummary]:
        """The page of runs whose ``column`` (``owner`` or ``workspace``, both
        indexed with the sort key) is ``value``."""
        if limit < 1:
            return []
        where = [f"{column} = ?"]
        params: list[Any] = [value]
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
                workspace=workspace,
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
                workspace,
            ) in self._db().execute(sql, params)
        ]

    async def find_unfinished(self, node: str | None = None) -> list[RunWrite]:
        where, params = "status = 'running'", []
        if node is not None:
            where, params = "status = 'running' AND (node = ? OR node IS NULL)", [node]
        rows = (
            self._db()
            .execute(f"SELECT {_RECORD_COLUMNS} FROM runs WHERE {where}", params)
            .fetchall()
        )
        return [RunWrite(self._record(row, ()), row[-1]) for row in rows]

    async def fence_unfinished(self, node: str) -> list[RunWrite]:
        """:meth:`find_unfinished`: one process per file (the data dir's lock),
        so no other process can still be writing these runs: nothing to fence."""
        return await self.find_unfinished(node)
