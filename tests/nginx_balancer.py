"""Debian's nginx as the test suite's load balancer, configured by ``deploy/nginx.conf``.

The deployment example ``deploy/nginx.conf`` (an ``http { }`` snippet with
two placeholders) is filled in and included by a small main config written
into a tmp dir, so the multi-node tests go through exactly what the docs
tell operators to use.  Everything nginx writes stays in that dir: pid,
error and access logs, temp paths.  It runs in the foreground
(``daemon off``), in its own process group, and never touches a system
nginx (``make nginx-deps`` installs the package without starting its
service).

The main config adds one response header, ``X-Runyard-Upstream``
(``$upstream_addr``, the node that answered), inherited by the snippet's
location as long as the snippet sets no ``add_header`` of its own: tests
read from it which node served a request through the balancer.
``$upstream_addr`` lists every node tried (``"A, B"`` when the first was
down); :meth:`Balancer.served_by` takes the last.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from tests.live_server import bind_loopback
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
SNIPPET = REPO_ROOT / "deploy" / "nginx.conf"
UPSTREAM_HEADER = "X-Runyard-Upstream"


class NginxMissing(RuntimeError):
    """nginx is not installed; ``make nginx-deps`` (part of ``make test``) installs it."""


def nginx_binary() -> str:
    """The nginx executable (root's PATH has /usr/sbin, a user's may not)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise NginxMissing("nginx is not installed: run `make nginx-deps` (or `make test`)")
    return found


def render_snippet(listen: str, upstreams: list[str]) -> str:
    """``deploy/nginx.conf`` with its placeholders filled; ``upstreams`` are ``host:port``.

    Comment lines are left as they are (they name the placeholders too).
    """
    values = {
        "{{listen}}": listen,
        "{{upstream_servers}}": "\n    ".join(f"server {address};" for address in upstreams),
    }
    lines = SNIPPET.read_text(encoding="utf-8").splitlines(keepends=True)
    filled = 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        for placeholder, value in values.items():
            if placeholder in line:
                lines[i] = line = line.replace(placeholder, value)
                filled += 1
        assert "{{" not in line, f"{SNIPPET} has a placeholder the tests do not fill: {line}"
    assert filled == len(values), f"{SNIPPET} must use each of {list(values)} once"
    return "".join(lines)


def main_config(prefix: Path) -> str:
    """The test-only main config around the snippet: paths in ``prefix``, one worker.

    One worker process keeps round robin strictly in turn (each worker has
    its own turn).  As root, workers would run as ``nobody``, who cannot
    enter a pytest tmp dir (mode 0700): they stay root here, test-only.
    """
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = prefix / "temp"
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    log_format upstreams '$remote_addr "$request" $status upstream=$upstream_addr '
                         'rt=$request_time';
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    add_header {UPSTREAM_HEADER} $upstream_addr always;

    include {prefix}/runyard.conf;
}}
"""


class Balancer:
    """One nginx on 127.0.0.1 in front of ``upstreams`` (``host:port`` each), round robin.

    No free-port guessing: the test process binds the listening socket and
    nginx inherits it, the way nginx hands its sockets to a new binary on
    an upgrade (the ``NGINX="fd;"`` environment variable; the ``listen``
    address must be the socket's).
    """

    def __init__(self, prefix: Path, upstreams: list[str]) -> None:
        self.prefix = prefix
        self.upstreams = list(upstreams)
        self.listener = bind_loopback()
        self.port: int = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def start(self) -> Balancer:
        """Write the config, start nginx, return once it answers (RuntimeError if it exits)."""
        binary = nginx_binary()
        (self.prefix / "temp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "nginx.conf").write_text(main_config(self.prefix), encoding="utf-8")
        snippet = render_snippet(f"127.0.0.1:{self.port}", self.upstreams)
        (self.prefix / "runyard.conf").write_text(snippet, encoding="utf-8")
        fd = self.listener.fileno()
        with (self.prefix / "nginx.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(self.prefix / "nginx.conf"),
                    "-e",
                    str(self.error_log),  # else start-up messages go to /var/log/nginx
                    "-g",
                    "daemon off;",
                ],
                env={**os.environ, "NGINX": f"{fd};"},
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() signals master and workers
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.log_tail()}")
            # Our socket queues connections before nginx accepts them: an
            # answer (from a node, through nginx) means nginx is serving.
            return _answers(f"{self.base_url}/healthz")

        wait_until(answers, 20, "nginx to answer")
        return self

    def stop(self) -> None:
        """Stop nginx (graceful, then SIGKILL after 10 s); the listener stays open."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGQUIT)  # graceful: workers finish, then exit
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def served_by(self, response: httpx.Response) -> str:
        """``host:port`` of the node that answered ``response`` (the last one tried)."""
        addresses: str = response.headers.get(UPSTREAM_HEADER, "")
        assert addresses, f"no {UPSTREAM_HEADER} header: {dict(response.headers)}"
        return addresses.split(",")[-1].strip()

    def log_tail(self, lines: int = 30) -> str:
        """The end of nginx's own output and error log, for a failure message."""
        texts = []
        for path in (self.prefix / "nginx.out", self.error_log):
            try:
                texts += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
        return "\n".join(texts) or "(no log)"


def _answers(url: str) -> bool:
    """Whether a GET of ``url`` gets any HTTP answer within a second."""
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True
