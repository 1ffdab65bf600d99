"""This process as a node: its stable id, and the lock that keeps SQLite single-node.

Several ``runyard serve`` processes may share one CouchDB database; each runs
its own runs and, after a crash, reconciles only its own (the id is written
on every run it starts).  The id is ``RUNYARD_NODE_ID``, or one made once and
kept in ``<data dir>/node_id``, so a restarted process is the same node and
finds its interrupted runs.

SQLite is one file on one machine: a second process on the same data dir
would reconcile the first one's live runs as interrupted.  The first process
holds an exclusive lock on ``<data dir>/runs.lock`` for its whole life
(``flock``: released by the kernel when the process dies, however it dies),
and a second one is refused at start with a message saying why.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from typing import IO

from runyard.web.config import ConfigError, Settings

__all__ = ["DataDirLock", "node_id"]

NODE_ID_FILE = "node_id"
LOCK_FILE = "runs.lock"


def node_id(settings: Settings) -> str:
    """``RUNYARD_NODE_ID``, else the id kept in the data dir (made on first use)."""
    if settings.node_id:
        return settings.node_id
    path = settings.data_dir / NODE_ID_FILE
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = f"node-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(made + "\n")
    return made


class DataDirLock:
    """An exclusive lock on the data dir's SQLite store, held until :meth:`release`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ConfigError` naming the data dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(
                f"another runyard process already serves the SQLite store in "
                f"RUNYARD_DATA_DIR={self.path.parent}: SQLite is single-node. Stop it, "
                "give this one its own RUNYARD_DATA_DIR, or share a CouchDB "
                "(RUNYARD_COUCHDB_URL) between nodes"
            ) from None
        os.chmod(self.path, 0o600)
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
