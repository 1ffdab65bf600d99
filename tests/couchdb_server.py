"""Start and stop the CouchDB-compatible test server.

Apache CouchDB is not packaged for this OS, so the CouchDB store is tested
against ``pouchdb-server`` 4.2.0 from npm (installed into ``tests/couchdb`` by
``make test``), with ``tests/couchdb/preload.js`` making it answer like CouchDB 3.

``CouchServer`` runs one such server on 127.0.0.1 with its own data directory
and an admin user. It can be stopped and started again on the same port with
the same data (fault-injection tests do that while runs finish).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self
from urllib.parse import quote

import httpx

COUCH_DIR = Path(__file__).resolve().parent / "couchdb"
NODE_MODULES = COUCH_DIR / "node_modules"
SERVER_BIN = NODE_MODULES / "pouchdb-server" / "bin" / "pouchdb-server"
PRELOAD = COUCH_DIR / "preload.js"

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret"


class CouchServerError(RuntimeError):
    """The test server could not be started (missing install, crash, no answer)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CouchTestServer(ABC):
    """What tests use of a CouchDB server: this pouchdb-server or a real CouchDB.

    ``tests.real_couchdb.RealCouchServer`` is the other implementation. Both
    keep port and data over ``stop``/``start``, so fixtures and tests take
    either; they differ in how a server is launched, stopped and seen alive.
    """

    startup_timeout: float = 30.0
    """Seconds a start may take before it counts as failed."""
    stop_timeout: float = 5.0
    """Seconds a stop waits for the server to end before killing it."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        """``port=None``: a free one is chosen at the first start."""
        self.data_dir = Path(data_dir).resolve()
        self._port = port

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise CouchServerError("the server has no port before its first start()")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` without credentials."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://admin:secret@127.0.0.1:PORT``: the server admin's URL."""
        user, password = quote(ADMIN_USER, safe=""), quote(ADMIN_PASSWORD, safe="")
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        return (ADMIN_USER, ADMIN_PASSWORD)

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """The server's log, for the tail a failed start shows."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """Whether the server process is alive."""

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        """Start (or restart on the same dir); raise :class:`CouchServerError` on failure.

        A port chosen here may be taken before the server binds it, so a
        first start tries up to three ports; a restart keeps its port.
        """
        if self.running:
            return
        self._prepare()
        attempts = 3 if self._port is None else 1
        for attempt in range(attempts):
            if self._port is None or attempt > 0:
                self._port = free_port()
            try:
                self._launch()
                return
            except CouchServerError:
                if attempt == attempts - 1:
                    raise

    @abstractmethod
    def stop(self) -> None:
        """Stop the server; its data stays."""

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    @abstractmethod
    def _prepare(self) -> None:
        """Check that what the server needs is installed; create its directory."""

    @abstractmethod
    def _launch(self) -> None:
        """Launch on ``self.port`` and wait until it answers, or raise CouchServerError."""


class CouchServer(CouchTestServer):
    """One pouchdb-server process; ``start``/``stop``/``restart`` keep port and data."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *, preload: Path | None = PRELOAD
    ) -> None:
        """``preload=None`` runs the stock pouchdb-server (to see the gaps it fixes)."""
        super().__init__(data_dir, port)
        self.preload = preload
        self._node = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _prepare(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise CouchServerError("node is not installed; run `make test` on a machine with it")
        if not SERVER_BIN.exists():
            raise CouchServerError(
                f"pouchdb-server is not installed in {NODE_MODULES}: run `make test` "
                "(it installs it with npm ci)"
            )
        self._node = node
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()

    def _launch(self) -> None:
        self._spawn(self._node)
        try:
            self._wait_until_ready()
        except CouchServerError:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout)

    def _write_config(self) -> None:
        config = self.data_dir / "config.json"
        if config.exists():  # a restart: pouchdb-server has hashed the password in it
            return
        settings = {
            "admins": {ADMIN_USER: ADMIN_PASSWORD},
            "log": {"file": str(self.data_dir / "pouchdb.log")},
        }
        config.write_text(json.dumps(settings) + "\n", encoding="utf-8")

    def _spawn(self, node: str) -> None:
        db_dir = self.data_dir / "db"
        db_dir.mkdir(exist_ok=True)
        env = dict(os.environ, RUNYARD_COUCH_PARENT_PID=str(os.getpid()), NO_COLOR="1")
        with self.log_path.open("ab") as log:
            preload = ["-r", str(self.preload)] if self.preload is not None else []
            self._proc = subprocess.Popen(
                [
                    node,
                    *preload,
                    str(SERVER_BIN),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--dir",
                    f"{db_dir}{os.sep}",
                    "--config",
                    str(self.data_dir / "config.json"),
                    "--no-stdout-logs",
                ],
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest is handled by stop()
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.02
        with httpx.Client(timeout=2.0) as client:
            while True:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    raise CouchServerError(f"pouchdb-server exited at start:\n{self._log_tail()}")
                try:
                    answer = client.get(f"{self.base_url}/_session", auth=self.auth)
                    if answer.status_code == 200 and answer.json()["userCtx"]["name"] == ADMIN_USER:
                        return
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    pass
                if time.monotonic() > deadline:
                    raise CouchServerError(
                        f"pouchdb-server did not answer within {self.startup_timeout} s:\n"
                        f"{self._log_tail()}"
                    )
                time.sleep(delay)  # polling with a deadline, not waiting for a guess
                delay = min(delay * 2, 0.2)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
