"""The SQLite store's layout (``runs`` and ``events``) and how an older file is brought to it.

Kept apart from :mod:`runyard.persistence.sqlite_store` (what is read and written)
because it changes on a different clock: only when the layout does.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA", "SCHEMA_VERSION", "create_or_migrate"]

SCHEMA = """
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
    event_count INTEGER NOT NULL,
    node        TEXT,
    -- JSON, NULL when there is none: schema_warnings (a list), ops_log (an object)
    schema_warnings TEXT,
    ops_log     TEXT,
    workspace   TEXT
);
-- The list query: one owner, newest first, keyset pagination on the sort key.
CREATE INDEX IF NOT EXISTS runs_owner_started
    ON runs (owner, started_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_owner_status_started
    ON runs (owner, status, started_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_owner_agent_started
    ON runs (owner, agent, started_at DESC, run_id DESC);
-- The list query of a workspace's members; personal runs (NULL) stay out of it.
CREATE INDEX IF NOT EXISTS runs_workspace_started
    ON runs (workspace, started_at DESC, run_id DESC) WHERE workspace IS NOT NULL;
-- Recovery after a crash: tiny, holds only the runs still running.
CREATE INDEX IF NOT EXISTS runs_running ON runs (run_id) WHERE status = 'running';
-- Retention purge.
CREATE INDEX IF NOT EXISTS runs_finished_at ON runs (finished_at);

CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    data   TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_run_seq ON events (run_id, seq);
"""

SCHEMA_VERSION = 5
"""``PRAGMA user_version`` of this layout: 5 added ``runs.workspace`` (and its
index); 4 ``runs.schema_warnings`` and ``runs.ops_log``; 3 ``runs.node``; 2 the
rowid events table; 0 or 1 is the first layout (events ``WITHOUT ROWID``)."""

_ADDED_RUN_COLUMNS = (
    ("node", "TEXT"),
    ("schema_warnings", "TEXT"),
    ("ops_log", "TEXT"),
    ("workspace", "TEXT"),
)
"""Columns later layouts added to ``runs``, all nullable: an older row reads as "none"."""

_MIGRATE_EVENTS = """
ALTER TABLE events RENAME TO events_v1;
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    data   TEXT NOT NULL
);
INSERT INTO events (run_id, seq, ts, type, data)
    SELECT run_id, seq, ts, type, data FROM events_v1 ORDER BY run_id, seq;
DROP TABLE events_v1;
"""


def create_or_migrate(conn: sqlite3.Connection) -> None:
    """Bring the open file to this layout: migrate an older one, create what is missing."""
    _migrate(conn)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an older runyard to this layout, in one transaction."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    statements = []
    runs = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    if runs:
        statements += [
            f"ALTER TABLE runs ADD COLUMN {name} {kind}"
            for name, kind in _ADDED_RUN_COLUMNS
            if name not in runs
        ]
    events = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
    if events and "id" not in events:
        statements += [st for st in _MIGRATE_EVENTS.split(";") if st.strip()]
    if not statements:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
