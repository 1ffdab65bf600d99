"""Start and stop a real Apache CouchDB 3.5.0 for the tests.

The house rule: the code must be correct on real CouchDB, and where
pouchdb-server (the fallback of a fresh clone) disagrees, the real one is
right. ``../shared/couchdb/couchdb.sh`` beside the checkout (present on the
developers' machines and in CI) starts a prebuilt CouchDB on loopback;
``RealCouchServer`` drives it with the same interface as
:class:`tests.couchdb_server.CouchServer`, so fixtures and tests take either.

The launcher keeps config, data, logs and PID file in the directory it is
given, so ``restart()`` (stop, then start on the same port and directory)
brings back the same server with its databases, like the pouchdb one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.couchdb_server import ADMIN_PASSWORD, ADMIN_USER, CouchServerError, CouchTestServer

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = REPO_ROOT.parent / "shared" / "couchdb" / "couchdb.sh"
VERSION = "3.5.0"


def launcher_present() -> bool:
    """True where ``../shared/couchdb`` is beside the checkout (dev machines, CI)."""
    return LAUNCHER.is_file()


class RealCouchServer(CouchTestServer):
    """One single-node Apache CouchDB; ``start``/``stop``/``restart`` keep port and data.

    A start takes about 2 s.
    """

    startup_timeout = 60.0
    stop_timeout = 20.0
    _watchdog: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """CouchDB's own log; boot errors of the VM are in ``couchdb.out`` beside it."""
        return self.data_dir / "couchdb.log"

    @property
    def running(self) -> bool:
        """Whether the BEAM named in the launcher's PID file is alive (not a zombie)."""
        try:
            pid = int((self.data_dir / "couchdb.pid").read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return False
        # The state is the field after the parenthesised command name.
        return stat.rpartition(")")[2].split()[0] not in ("Z", "X")

    def _prepare(self) -> None:
        if not launcher_present():
            raise CouchServerError(f"the CouchDB launcher {LAUNCHER} is missing")
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _launch(self) -> None:
        error = self._run_start()
        if error is not None:
            raise CouchServerError(error)
        self._start_watchdog()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``stop_timeout``); data stays."""
        self._end_watchdog()  # first: its own stop must not hit a later start
        if not (self.data_dir / "couchdb.pid").exists():
            return
        command = [str(LAUNCHER), "stop", "--dir", str(self.data_dir)]
        answer = subprocess.run(
            [*command, "--timeout", str(int(self.stop_timeout))],
            capture_output=True,
            text=True,
            timeout=self.stop_timeout + 30,
            check=False,
        )
        if answer.returncode != 0 and self.running:
            raise CouchServerError(f"couchdb.sh stop failed:\n{answer.stderr}")

    def _start_watchdog(self) -> None:
        """Stop the server should this process die without stopping it.

        CouchDB runs in a session of its own, so a pytest killed by a signal
        (a CI job cancelled, a SIGKILL) would leave its BEAM behind. The
        watchdog blocks reading a pipe only this process writes to: the pipe
        ends when this process does, however it ends, and the watchdog then
        runs ``couchdb.sh stop``. A normal ``stop()`` kills the watchdog first.
        """
        self._end_watchdog()
        self._watchdog = subprocess.Popen(
            ["sh", "-c", 'read -r _; exec "$0" stop --dir "$1"', str(LAUNCHER), str(self.data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of pytest is handled by stop()
        )

    def _end_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        watchdog.kill()
        watchdog.wait(timeout=10)
        if watchdog.stdin is not None:
            watchdog.stdin.close()

    def _run_start(self) -> str | None:
        """Run ``couchdb.sh start``; None on success, else why it failed."""
        command = [
            str(LAUNCHER),
            "start",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--admin",
            f"{ADMIN_USER}:{ADMIN_PASSWORD}",
            "--timeout",
            str(int(self.startup_timeout)),
        ]
        try:
            answer = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout + 60,  # the unpack and checks come on top
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.stop()
            return f"couchdb.sh start did not finish within {self.startup_timeout + 60} s"
        if answer.returncode != 0:
            return f"couchdb.sh start failed (exit {answer.returncode}):\n{answer.stderr}"
        return None
