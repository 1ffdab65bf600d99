"""A real 3-node Apache CouchDB cluster for the multi-node tests (``couchdb.sh cluster``).

The launcher in ``../shared/couchdb`` starts three CouchDB 3.5 nodes on
loopback and joins them (a new database then has n=3 copies over q=2
shards).  Runyard nodes of a test may each talk to a different CouchDB
node: a write through one is read through another, as in a deployment
where every runyard node has a CouchDB node beside it.

The launcher wants its ports named: they are picked free just before, and
a start that loses one to another process is retried on new ports in a
new directory.  A watchdog stops the cluster should the test process die
without stopping it (as :class:`tests.real_couchdb.RealCouchServer` does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.couchdb_server import ADMIN_PASSWORD, ADMIN_USER, CouchServerError, free_port
from tests.real_couchdb import LAUNCHER, launcher_present

START_TIMEOUT_S = 120.0
"""The launcher's own wait for the nodes (60 s) plus the join; measured 6-10 s."""


class RealCouchCluster:
    """Three joined CouchDB nodes; ``urls`` are the admin URLs, node 1 first."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.dir = base_dir
        self.urls: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> RealCouchCluster:
        """Start and join the nodes; raise :class:`CouchServerError` with the launcher's reason."""
        if not launcher_present():
            raise CouchServerError(f"the CouchDB launcher {LAUNCHER} is missing")
        error = "not tried"
        for attempt in range(3):
            self.dir = self.base_dir / f"attempt{attempt}"
            self.dir.mkdir(parents=True)
            ports = ",".join(str(free_port()) for _ in range(3))
            error = self._run_cluster(ports)
            if not error:
                self._start_watchdog()
                return self
            self.stop()
            if "port" not in error.lower():  # only a port clash is worth another try
                break
        raise CouchServerError(error)

    def _run_cluster(self, ports: str) -> str:
        command = [
            str(LAUNCHER),
            "cluster",
            "--ports",
            ports,
            "--dir",
            str(self.dir),
            "--admin",
            f"{ADMIN_USER}:{ADMIN_PASSWORD}",
        ]
        try:
            answer = subprocess.run(
                command, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return f"couchdb.sh cluster did not finish within {START_TIMEOUT_S} s"
        if answer.returncode != 0:
            return f"couchdb.sh cluster failed (exit {answer.returncode}):\n{answer.stderr}"
        self.urls = answer.stdout.split()
        if len(self.urls) != 3:
            return f"couchdb.sh cluster printed {answer.stdout!r}, not 3 URLs"
        return ""

    def stop(self) -> None:
        """Stop every node of the current directory (data stays in it)."""
        self._end_watchdog()
        subprocess.run(
            [str(LAUNCHER), "stop", "--dir", str(self.dir)],
            capture_output=True,
            timeout=90,
            check=False,
        )

    def _start_watchdog(self) -> None:
        """``couchdb.sh stop`` once this process ends, however it ends (a pipe only it holds)."""
        self._watchdog = subprocess.Popen(
            ["sh", "-c", 'read -r _; exec "$0" stop --dir "$1"', str(LAUNCHER), str(self.dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _end_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        watchdog.kill()
        watchdog.wait(timeout=10)
        if watchdog.stdin is not None:
            watchdog.stdin.close()
