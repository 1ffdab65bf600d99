"""Real runyard servers on 127.0.0.1 for the API tests (a ``pytest_plugins`` module).

``LiveServer`` runs uvicorn in a thread of the test process: real sockets,
real HTTP, real SSE, and the test can still hand the app a
:class:`~runyard.actors.clock.ManualClock` or a catalog of its own.  Tests that need
signals or ``kill -9`` start ``runyard serve`` as a child process instead
(``ServerProcess``).

No free-port guessing.  Asking the kernel for a free port, closing it and
letting the server bind it later leaves a window in which another process
(other suites run in parallel on the same machine) can take it.  So the
test process binds the listening socket itself, on port 0, and reads the
real port back before anything starts:

- ``LiveServer`` hands the socket to ``uvicorn.Server.run(sockets=[...])``.
- ``ServerProcess`` passes it down to ``runyard serve --fd N`` (inherited
  with ``pass_fds``), which serves on it instead of binding.  The test
  process keeps its copy open, so a child may be killed and a new one
  started on the same port (a restart after a crash) with no window either.
  Retrying on EADDRINUSE would only narrow the race and slow every failure;
  an inherited socket removes it, and it is how supervisors such as systemd
  hand sockets to servers.

Fixtures:

- ``live_server`` (module scope): a factory, ``live_server(**settings)``
  starts a :class:`LiveServer` on a fresh data dir; every server it started
  stops when the module's tests are done.  ``app_kwargs=`` goes to
  ``create_app`` (``clock``, ``catalog``, ``code_agent``).
- ``live`` (module scope): the module's shared server, from ``live_server()``;
  a module that needs other settings defines its own ``live`` fixture.
  ``alice`` is alice's client on it.
- ``server`` (function scope): one default :class:`LiveServer` per test.
- ``server_process`` (function scope): a factory of :class:`ServerProcess`,
  all killed (and their sockets closed) after the test.

Suites that start servers are marked ``server`` so ``make test-fast`` can
leave them out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from runyard.web.app import create_app
from runyard.web.config import Settings
from runyard.web.server import http_options
from tests.waiting import wait_until

TOKENS = {"alice": "alice-token", "bob": "bob-token", "root": "root-token"}
TOKENS_ENV = "alice:alice-token,bob:bob-token,root:root-token:admin"


def bind_loopback() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 at a port the kernel chose (``getsockname()[1]``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        # Listening now: a client that comes before the server is ready waits
        # in the backlog instead of being refused.
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings: the three test users, a short stop grace; ``overrides`` win."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "tokens": TOKENS_ENV,
        "stop_grace_s": 0.5,
        "heartbeat_s": 10,
    }
    values.update(overrides)
    return Settings(**values)


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


class LiveServer:
    """``create_app(settings, **app_kwargs)`` served by uvicorn in a thread, on its own socket."""

    def __init__(self, settings: Settings, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_kwargs)
        self.sock = bind_loopback()
        self.port: int = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", timeout_graceful_shutdown=5, **http_options()
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="live-server"
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        try:
            wait_until(
                lambda: self.server.started or not self.thread.is_alive(), 20, "server start"
            )
            if not self.server.started:
                raise RuntimeError("the server failed to start")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"

    def client(self, user: str | None = "alice", **kwargs: Any) -> httpx.Client:
        """An httpx client on this server, signed in as ``user`` (``None``: anonymous)."""
        headers = bearer(user) if user else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway


LiveServerFactory = Callable[..., LiveServer]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServerFactory]:
    """``live_server(app_kwargs=None, data_dir=None, **settings) -> LiveServer``, started.

    ``settings`` override :func:`make_settings` (``shutdown_grace_s`` defaults
    to 0.2 s so the module's teardown is quick); ``data_dir`` defaults to a
    fresh directory.  The servers stop when the module is done.
    """
    with ExitStack() as servers:

        def start(
            app_kwargs: dict[str, Any] | None = None,
            data_dir: Path | None = None,
            **overrides: Any,
        ) -> LiveServer:
            overrides.setdefault("shutdown_grace_s", 0.2)
            settings = make_settings(data_dir or tmp_path_factory.mktemp("live"), **overrides)
            return servers.enter_context(LiveServer(settings, **(app_kwargs or {})))

        yield start


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    """The module's shared server, default settings; a module that needs others overrides it."""
    return live_server()


@pytest.fixture
def alice(live: LiveServer) -> Iterator[httpx.Client]:
    """alice's client on the module's ``live`` server."""
    with live.client("alice") as client:
        yield client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of the test's own (function scope), default settings."""
    with LiveServer(make_settings(tmp_path)) as live:
        yield live


class ServerProcess:
    """``runyard serve --fd N`` as a child process, for signal and crash tests.

    ``listener`` is the socket to serve on: pass the one of a server that was
    killed to restart on its port; by default a new one is bound.
    """

    def __init__(self, data_dir: Path, listener: socket.socket | None = None, **env: str) -> None:
        self.listener = listener or bind_loopback()
        self.port: int = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")},
            "RUNYARD_DATA_DIR": str(data_dir),
            "RUNYARD_TOKENS": TOKENS_ENV,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        fd = self.listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.web.cli", "serve", "--fd", str(fd)],
            env=self.env,
            pass_fds=(fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: a crash test kills the server and its children at once.
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"server exited early ({self.proc.returncode}):\n{out}")
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "runyard serve to answer")
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self, user: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=bearer(user), timeout=30)

    def drain_output(self) -> list[bytes]:
        """Read the server's output in a thread from now on, into the returned list.

        For tests that send many requests: every one is an access-log line, and
        once the pipe (64 KiB) is full the server blocks writing its log.
        """
        assert self.proc is not None
        assert self.proc.stdout is not None
        lines: list[bytes] = []
        threading.Thread(target=lines.extend, args=(self.proc.stdout,), daemon=True).start()
        return lines


ServerProcessFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_process() -> Iterator[ServerProcessFactory]:
    """``server_process(data_dir, listener=None, **env) -> ServerProcess``, started.

    After the test every child is killed (if still running) and every
    listening socket closed.
    """
    started: list[ServerProcess] = []

    def start(data_dir: Path, listener: socket.socket | None = None, **env: str) -> ServerProcess:
        process = ServerProcess(data_dir, listener, **env)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            if process.proc is not None and process.proc.stdout is not None:
                process.proc.stdout.close()
        for process in started:
            process.listener.close()
