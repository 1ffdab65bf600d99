"""A SQLite file written by an older runyard is brought to today's layout on open.

The older layouts are written here by hand, as those versions wrote them
(frozen copies: the store's own ``SCHEMA`` moves on), with a run in them; the
store must open the file, keep that run readable and then store what today's
records carry.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from runyard.actors.records import Event, RunRecord
from runyard.persistence.sqlite_schema import SCHEMA_VERSION
from runyard.persistence.sqlite_store import SQLiteStore

T0 = 1_700_000_000.0

V3_RUNS = """
CREATE TABLE runs (
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
    event_count INTEGER NOT NULL{node}{v4}
);
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    type   TEXT NOT NULL,
    data   TEXT NOT NULL
);
CREATE UNIQUE INDEX events_run_seq ON events (run_id, seq);
"""


def write_old_file(path: Path, version: int) -> None:
    """A file of layout ``version`` (4: with ``runs.schema_warnings`` and ``runs.ops_log``;
    3: with ``runs.node``; 2: without) holding run ``old``."""
    conn = sqlite3.connect(path)
    try:
        v4 = ",\n    schema_warnings TEXT,\n    ops_log TEXT" if version >= 4 else ""
        conn.executescript(V3_RUNS.format(node=",\n    node TEXT" if version >= 3 else "", v4=v4))
        columns = "run_id, owner, agent, status, started_at, finished_at, updated_at, error, "
        columns += "input, result, options, event_count"
        values: tuple[object, ...] = (
            "old", "alice", "echo", "success", T0, T0 + 1, T0 + 1, None,
            '{"a":1}', '{"ok":true}', '{"max_duration_s":5}', 2,
        )  # fmt: skip
        if version >= 3:
            columns += ", node"
            values += ("n1",)
        marks = ",".join("?" * len(values))
        conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)
        conn.executemany(
            "INSERT INTO events (run_id, seq, ts, type, data) VALUES (?, ?, ?, ?, ?)",
            [("old", 1, T0, "log", '{"n":1}'), ("old", 2, T0 + 1, "done", '{"status":"success"}')],
        )
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", [2, 3, 4])
def test_an_older_file_opens_keeps_its_runs_and_stores_todays_fields(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "runs.sqlite3"
    write_old_file(path, version)

    async def scenario() -> tuple[RunRecord | None, RunRecord, RunRecord | None]:
        store = SQLiteStore(path)
        await store.open()
        try:
            old = await store.get("old")
            new = RunRecord(
                run_id="new",
                owner="alice",
                agent="spender",
                status="success",
                input={},
                started_at=T0 + 5,
                finished_at=T0 + 6,
                updated_at=T0 + 6,
                events=(Event(1, T0 + 6, "done", {"status": "success"}),),
                options={"output_schema": {"type": "object"}},
                schema_warnings=[{"path": "", "message": "1 is not of type 'object'"}],
                ops_log={"llm": {"count": 1, "tokens": 3}},
                workspace="ml",
            )
            await store.save(new)
            return old, new, await store.get("new")
        finally:
            await store.close()

    old, new, got = asyncio.run(scenario())
    assert old is not None
    assert old.result == {"ok": True}
    assert old.options == {"max_duration_s": 5}
    assert [e.type for e in old.events] == ["log", "done"]
    assert old.node == ("n1" if version >= 3 else None)
    assert old.schema_warnings is None
    assert old.ops_log == {}
    assert old.workspace is None  # a run from before workspaces is personal
    assert got == new

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        assert {"node", "schema_warnings", "ops_log", "workspace"} <= columns
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(runs)")}
        assert "runs_workspace_started" in indexes
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_opening_a_current_file_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"

    async def open_twice() -> RunRecord | None:
        record = RunRecord(
            "r", "alice", "echo", "success", {}, T0, T0 + 1, ops_log={"x": {"count": 1}}
        )
        for _ in range(2):
            store = SQLiteStore(path)
            await store.open()
            try:
                if await store.get("r") is None:
                    await store.save(record)
            finally:
                await store.close()
        store = SQLiteStore(path)
        await store.open()
        try:
            return await store.get("r")
        finally:
            await store.close()

    got = asyncio.run(open_twice())
    assert got is not None
    assert got.ops_log == {"x": {"count": 1}}


@pytest.mark.timeout(30)
def test_a_migrated_file_lists_a_workspace_through_its_index(tmp_path: Path) -> None:
    """After the migration to layout 5, the workspace list query reads the new
    partial index (not a scan of every run) and finds only the workspace's runs."""
    path = tmp_path / "runs.sqlite3"
    write_old_file(path, 4)

    async def scenario() -> list[str]:
        store = SQLiteStore(path)
        await store.open()
        try:
            for run_id, workspace in (("w1", "ml"), ("w2", "ops"), ("p", None)):
                await store.save(
                    RunRecord(run_id, "bob", "echo", "running", {}, T0 + 9, workspace=workspace)
                )
            return [s.run_id for s in await store.list_for_workspace("ml")]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == ["w1"]
    conn = sqlite3.connect(path)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT run_id FROM runs WHERE workspace = ? "
            "ORDER BY started_at DESC, run_id DESC LIMIT 5",
            ("ml",),
        ).fetchall()
    finally:
        conn.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "runs_workspace_started" in details, details
    assert "TEMP B-TREE" not in details, details  # the index gives the order: no sort
