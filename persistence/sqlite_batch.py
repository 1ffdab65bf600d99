"""Many rows in a few SQLite statements: multi-row ``VALUES`` rather than ``executemany``.

``executemany`` steps once per row, and the ``sqlite3`` module gives up the
GIL around every step.  On the store thread each row then has to win the
GIL back from the event loop, which under load is busy: measured on the
2-CPU machine, 176 event rows took 0.6 ms alone and 8.8 ms next to a busy
Python thread with ``executemany``, 0.5 and 1.5 ms as multi-row statements.
A start's 202 waits for that commit.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

__all__ = ["CHUNKS", "insert_rows"]

CHUNKS = (64, 32, 16, 8, 4, 2, 1)
"""Rows per statement, largest first: any count up to 127 rows in at most seven
statements (a run's 11 events in three), from a handful of distinct ones
that the module's statement cache keeps prepared; 64 rows of 13 columns stay
below the 999 bound parameters of SQLite's oldest default limit."""


@functools.cache
def _statement(template: str, width: int, rows: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return template.format(values=",".join([one] * rows))


def insert_rows(conn: sqlite3.Connection, template: str, width: int, values: list[Any]) -> None:
    """Run ``template`` (SQL with ``{values}`` where the ``VALUES`` list goes) for
    the rows in ``values``, ``width`` values each, one after the other (flat:
    no tuple per row), in order, in as few statements as :data:`CHUNKS`
    allow.  An ``ON CONFLICT DO UPDATE`` template must not get two rows with
    the same key: SQLite refuses to update a row twice in one statement."""
    rows = len(values) // width
    done = 0
    for size in CHUNKS:
        while rows - done >= size:
            chunk = values[done * width : (done + size) * width]
            conn.execute(_statement(template, width, size), chunk)
            done += size
