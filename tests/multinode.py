"""Three runyard nodes on one CouchDB database behind nginx (a ``pytest_plugins`` module).

The scale-out set-up as a deployment has it: several ``runyard serve``
processes (``RUNYARD_NODE_ID`` n1, n2, n3, each with its own data dir)
share one CouchDB database, and nginx balances requests over them round
robin with no stickiness (``deploy/nginx.conf``).  Tests talk to the
balancer like a client would, and to one node directly when they need to
say which node does something.

CouchDB variants (the ``multinode_couch`` fixture, session scope, so each
is started once and every test of a variant runs in a row):

- ``couchdb``: one real Apache CouchDB 3.5 node (``couch_url``), when
  ``../shared/couchdb`` is beside the checkout;
- ``couchdb-cluster``: a real 3-node CouchDB cluster, runyard node *i*
  talking to CouchDB node *i* (same condition);
- ``pouchdb``: pouchdb-server, when there is no real CouchDB.

Every :class:`Yard` gets a database of its own.  Fixtures:

- ``yard`` (module scope): one yard shared by the module's tests that leave
  it as they found it (runs of their own, no node killed or stopped);
- ``yard_factory`` (function scope): ``yard_factory(**env)`` makes a fresh
  yard for a test that kills, drains or restarts nodes; ``env`` adds or
  overrides ``RUNYARD_*`` settings of all three nodes.

A node's listening socket is bound by the test process (no free-port
guessing; see :mod:`tests.live_server`), with a second, never-listening
socket holding the port while the node is down: once the process ends
(``kill -9``, a crash, a drained exit) the test closes its copy of the
listener, so the port refuses connections as a dead process's would and
nginx moves on to the next node; a restart listens on the same port nginx
knows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.couch_cluster import RealCouchCluster
from tests.couchdb_fixtures import EXTERNAL_URL_ENV, server_kind
from tests.couchdb_server import CouchServerError
from tests.live_server import TOKENS_ENV, bearer
from tests.nginx_balancer import Balancer, NginxMissing, nginx_binary
from tests.waiting import wait_until

NODE_IDS = ("n1", "n2", "n3")
LEASE_S = 3
"""``RUNYARD_LEASE_S`` of the test nodes: a dead node's runs are taken over within about this."""

NODE_ENV: dict[str, str] = {
    "RUNYARD_LEASE_S": str(LEASE_S),
    "RUNYARD_STOP_GRACE_S": "0.5",
    "RUNYARD_SHUTDOWN_GRACE_S": "0.5",
    "RUNYARD_HEARTBEAT_S": "2",
}
"""Settings every test node gets (a test's ``env`` wins)."""


def couch_variants() -> list[str]:
    """The CouchDB set-ups to run the suite on, here."""
    if server_kind() == "real" and not os.environ.get(EXTERNAL_URL_ENV):
        return ["couchdb", "couchdb-cluster"]
    return ["couchdb" if server_kind() == "real" else "pouchdb"]


class Node:
    """One ``runyard serve --fd N`` child process; ``start``/``kill`` keep port and data dir."""

    def __init__(self, node_id: str, data_dir: Path, env: dict[str, str]) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.env = env
        # Holds the port while no process listens on it (see the module doc).
        self._hold = _reusable_socket()
        self._hold.bind(("127.0.0.1", 0))
        self.port: int = self._hold.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.address}"
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Node:
        """Start the process on the node's port; return once ``/healthz`` answers."""
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> None:
        """Start the process on the node's port (connections queue until it serves)."""
        assert not self.running, f"{self.node_id} is running"
        self._close_listener()
        listener = self._listener = _reusable_socket()
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        fd = listener.fileno()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runyard.web.cli", "serve", "--fd", str(fd)],
                env={**env, **self.env},
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes its children too
            )
        watcher = threading.Thread(
            target=self._close_when_exited, args=(self.proc, listener), daemon=True
        )
        watcher.start()

    def _close_when_exited(self, proc: subprocess.Popen[bytes], listener: socket.socket) -> None:
        """Once the process ends, however it ends, its port refuses connections.

        Were the test's copy of the socket left open, the kernel would still
        accept connections into the backlog, and nginx (or a client) would
        wait on a node that is gone instead of being refused.
        """
        proc.wait()
        self._close_listener(listener)

    def wait_ready(self) -> None:
        # /readyz, not /healthz: ready means its store answers too (a new database
        # on a CouchDB cluster takes a while to open), as a balancer would check.
        wait_until(self._ready, 60, f"node {self.node_id} to answer /readyz")

    def _ready(self) -> bool:
        if not self.running:
            raise AssertionError(f"node {self.node_id} exited at start:\n{self.log_tail()}")
        try:
            with self.client(timeout=2) as client:
                return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """``kill -9`` the node's process group; its port then refuses connections."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_listener()

    def terminate(self) -> None:
        """SIGTERM (a graceful drain): the node still answers until its runs are done."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """The exit status once the process ends; its port then refuses connections."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_listener()
        return code

    def close(self) -> None:
        self.kill()
        self._hold.close()

    def _close_listener(self, only: socket.socket | None = None) -> None:
        """Close the listening socket (``only``: if it is still that one)."""
        with self._lock:
            listener = self._listener
            if listener is None or (only is not None and listener is not only):
                return
            self._listener = None
        listener.close()

    def client(self, user: str = "alice", **kwargs: Any) -> httpx.Client:
        """A client on this node directly, signed in as ``user``."""
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.base_url, headers=bearer(user), **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Yard:
    """Three nodes on one database and nginx in front of them.

    ``nodes`` by id (``n1``...); ``client()`` goes through the balancer,
    ``node(id).client()`` to one node.  ``owner_of(response)`` names the
    node that answered a request made through the balancer.
    """

    def __init__(self, root: Path, couch_urls: list[str], db: str, **env: str) -> None:
        self.root = root
        self.db = db
        self.couch_urls = couch_urls
        self.env = env
        self.nodes: dict[str, Node] = {}
        for i, node_id in enumerate(NODE_IDS):
            self.nodes[node_id] = self._make_node(node_id, couch_urls[i % len(couch_urls)])
        self.extra: list[Node] = []
        self.balancer = Balancer(root / "nginx", [n.address for n in self.nodes.values()])
        self.base_url = self.balancer.base_url

    def _make_node(self, node_id: str, couch_url: str) -> Node:
        node_env = {
            **NODE_ENV,
            "RUNYARD_DATA_DIR": str(self.root / node_id),
            "RUNYARD_TOKENS": TOKENS_ENV,
            "RUNYARD_COUCHDB_URL": couch_url,
            "RUNYARD_COUCHDB_DB": self.db,
            "RUNYARD_NODE_ID": node_id,
            **self.env,
        }
        return Node(node_id, self.root / node_id, node_env)

    def add_node(self, node_id: str) -> Node:
        """Start one more node on the database, outside the balancer; closed with the yard."""
        node = self._make_node(node_id, self.couch_urls[-1])
        self.extra.append(node)
        return node.start()

    def start(self) -> Yard:
        """Create the database, start the nodes (in parallel), then nginx."""
        httpx.put(f"{self.couch_urls[0]}/{self.db}", timeout=30).raise_for_status()
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_ready()
        self.balancer.start()
        return self

    def close(self) -> None:
        with ExitStack() as stack:
            stack.callback(self._drop_database)
            stack.callback(self.balancer.listener.close)
            stack.callback(self.balancer.stop)
            for node in [*self.nodes.values(), *self.extra]:
                stack.callback(node.close)

    def _drop_database(self) -> None:
        # The server is shared and stops at the session's end anyway.
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{self.couch_urls[0]}/{self.db}", timeout=30)

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def others(self, node_id: str) -> list[Node]:
        """The nodes other than ``node_id``, in order."""
        return [n for n in self.nodes.values() if n.node_id != node_id]

    def client(self, user: str = "alice", **kwargs: Any) -> httpx.Client:
        """A client through the balancer, signed in as ``user``."""
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.base_url, headers=bearer(user), **kwargs)

    def owner_of(self, response: httpx.Response) -> str:
        """The id of the node that answered ``response`` (made through the balancer)."""
        address = self.balancer.served_by(response)
        for node in self.nodes.values():
            if node.address == address:
                return node.node_id
        raise AssertionError(f"{address} is none of the nodes {list(self.nodes)}")

    def start_on(self, node_id: str, agent: str, user: str = "alice", **input_dict: Any) -> str:
        """Start a run on ``node_id`` directly (so it owns the run); its ``run_id``."""
        with self.node(node_id).client(user) as client:
            answer = client.post("/runs", json={"agent": agent, "input_dict": input_dict})
        assert answer.status_code == 202, (node_id, answer.status_code, answer.text)
        run_id: str = answer.json()["run_id"]
        return run_id

    def logs(self) -> str:
        """Where the logs are, for a failure message."""
        return f"logs under {self.root} (n*/server.log, nginx/error.log, nginx/access.log)"


def _reusable_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def couch_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCouchCluster]:
    """A real 3-node CouchDB cluster, started once per session."""
    cluster = RealCouchCluster(tmp_path_factory.mktemp("couch-cluster"))
    try:
        cluster.start()
    except CouchServerError as exc:
        pytest.fail(f"{exc}\n(set RUNYARD_TEST_COUCHDB_SERVER=pouchdb to run without it)")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=couch_variants())
def multinode_couch(request: pytest.FixtureRequest) -> list[str]:
    """The CouchDB admin URLs the three runyard nodes use (node *i* takes entry *i*)."""
    try:
        nginx_binary()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    if request.param == "couchdb-cluster":
        cluster: RealCouchCluster = request.getfixturevalue("couch_cluster")
        return list(cluster.urls)
    url: str = request.getfixturevalue("couch_url")
    return [url]


YardFactory = Callable[..., Yard]


@pytest.fixture
def yard_factory(
    multinode_couch: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[YardFactory]:
    """``yard_factory(**env) -> Yard``, started; closed after the test."""
    with ExitStack() as yards:

        def make(**env: str) -> Yard:
            yard = Yard(
                tmp_path_factory.mktemp("yard"),
                multinode_couch,
                f"test_yard_{uuid.uuid4().hex[:12]}",
                **env,
            )
            yards.callback(yard.close)
            print(yard.logs())  # shown with a failed test's captured output
            return yard.start()

        yield make


@pytest.fixture(scope="module")
def yard(multinode_couch: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    """The module's shared yard: for tests that leave every node running."""
    yard = Yard(
        tmp_path_factory.mktemp("yard"), multinode_couch, f"test_yard_{uuid.uuid4().hex[:12]}"
    )
    try:
        print(yard.logs())
        yield yard.start()
    finally:
        yard.close()
