"""The durable baseline: the plain baseline plus group-committed SQLite, keeping its word.

The plain baseline (:mod:`bench.baseline_app`) answers before anything is
written: a ``kill -9`` takes back runs it acknowledged and events it
streamed.  This one promises what runyard promises and nothing more, in the
most direct way:

* ``POST /runs`` answers 202 only once the run's row is committed;
* an event reaches a subscriber (or a ``GET``) only once it is committed;
* a run's ``done`` and final status likewise.

Writes are group-committed like runyard's SQLite store: the first write
after a quiet spell opens a window of :data:`WINDOW_S`; when it closes,
everything written in it goes to SQLite in one transaction, on one writer
thread (the loop keeps serving), and only then are the 202s sent and the
events delivered.  Same schema shape as runyard's (a runs row per run, an
events row per event), WAL with ``synchronous=NORMAL``, one ``json.dumps``
per event.  It is the practical limit for a registry that keeps its word.

``uvicorn --factory bench.durable_app:create_app``; the database is
``$RUNYARD_DATA_DIR/durable.sqlite3``.
"""

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bench.baseline_app import Run, build_app, dumps
from runyard.actors.agents import AgentCatalog

WINDOW_S = 0.005
"""Longest a write waits for company before its transaction (runyard's SQLite window)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, agent TEXT NOT NULL,
    status TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
    input TEXT NOT NULL, result TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_run_seq ON events (run_id, seq);
"""


class Journal:
    """Group commit: rows gathered on the loop, one transaction per window on one thread.

    After the window's transaction committed, on the loop: each run written
    to delivers its new events (``DurableRun.commit_to``, once per run and
    window), then the ``on_commit`` callbacks run in the order given.
    """

    def __init__(self, path: Path) -> None:
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._writer.submit(self._open, path).result()
        self._new: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._finished: list[tuple[Any, ...]] = []
        self._touched: dict[DurableRun, int] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._window: asyncio.TimerHandle | None = None

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA)
        self._conn = conn

    def started(self, run: Run, on_commit: Callable[[], None]) -> None:
        self._new.append(
            (run.run_id, run.owner, run.agent, "running", run.started_at, dumps(run.input))
        )
        self._later(on_commit)

    def event(self, run: "DurableRun", event: dict[str, Any]) -> None:
        self._events.append(
            (run.run_id, event["seq"], event["ts"], event["type"], dumps(event["data"]))
        )
        self._touched[run] = event["seq"]
        self._later(None)

    def finished(self, run: Run, on_commit: Callable[[], None]) -> None:
        self._finished.append(
            (run.status, run.finished_at, dumps(run.result), run.error, run.run_id)
        )
        self._later(on_commit)

    def _later(self, on_commit: Callable[[], None] | None) -> None:
        if on_commit is not None:
            self._callbacks.append(on_commit)
        if self._window is None:
            self._window = asyncio.get_running_loop().call_later(WINDOW_S, self._close_window)

    def _close_window(self) -> None:
        self._window = None
        batch = (self._new, self._events, self._finished)
        touched, callbacks = self._touched, self._callbacks
        self._new, self._events, self._finished = [], [], []
        self._touched, self._callbacks = {}, []
        # One writer thread: windows commit in order, later ones queue behind.
        done = asyncio.wrap_future(self._writer.submit(self._commit, *batch))

        def committed(future: "asyncio.Future[None]") -> None:
            if future.exception() is not None:
                return  # nothing is acknowledged: its waiters never hear back
            for run, seq in touched.items():
                run.commit_to(seq)
            for callback in callbacks:
                callback()

        done.add_done_callback(committed)

    def _commit(
        self, new: list[tuple[Any, ...]], events: list[tuple[Any, ...]], fin: list[tuple[Any, ...]]
    ) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT INTO runs (run_id, owner, agent, status, started_at, input) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                new,
            )
            conn.executemany(
                "INSERT INTO events (run_id, seq, ts, type, data) VALUES (?, ?, ?, ?, ?)", events
            )
            conn.executemany(
                "UPDATE runs SET status = ?, finished_at = ?, result = ?, error = ? "
                "WHERE run_id = ?",
                fin,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class DurableRun(Run):
    """A run whose readers see only what is committed (``committed`` events, ``closed``)."""

    def __init__(self, journal: Journal, *args: Any) -> None:
        super().__init__(*args)
        self.journal = journal
        self.committed = 0
        self.closed = False
        """The final status and ``done`` are committed: readers may see the end."""

    def publish(self, event: dict[str, Any]) -> None:
        self.journal.event(self, event)

    @property
    def visible(self) -> int:
        return self.committed

    @property
    def live(self) -> bool:
        return not self.closed

    async def stored(self) -> None:
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            if not stored.done():  # the request may be gone (cancelled) by then
                stored.set_result(None)

        self.journal.started(self, acknowledge)
        await stored

    def ended(self) -> None:
        self.journal.finished(self, self.close)  # after the done's own commit callback: same window

    def delivers(self, event: dict[str, Any], after: int) -> bool:
        return bool(event["seq"] > after)

    def commit_to(self, seq: int) -> None:
        """Events up to ``seq`` are on disk: hand the new ones to every subscriber."""
        if seq <= self.committed:
            return
        fresh = self.events[self.committed : seq]
        self.committed = seq
        for queue in self.subscribers:
            for event in fresh:
                queue.put_nowait(event)

    def close(self) -> None:
        self.closed = True
        super().close()

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        out["events"] = self.events[: self.committed]
        out["event_count"] = self.committed
        if not self.closed:
            out.update(status="running", result=None, error=None, finished_at=None)
        return out


def create_app(
    catalog: AgentCatalog | None = None, tokens: dict[str, str] | None = None
) -> FastAPI:
    journal = Journal(Path(os.environ.get("RUNYARD_DATA_DIR", ".")) / "durable.sqlite3")
    return build_app("durable baseline", partial(DurableRun, journal), catalog, tokens)
