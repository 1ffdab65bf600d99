"""Slow and oversized clients against a real server (runyard.web.http_limits, runyard.web.server).

The in-thread servers use the same protocol options as ``runyard serve``
(:func:`runyard.web.server.http_options`), so the module's timeouts can be shortened
with ``monkeypatch`` for a test; the shutdown test runs ``runyard serve`` as
a child process with its defaults.  Raw sockets play the attackers: a head
that never ends, a head or a body that trickles, a client that stops
reading a stream.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard.web import http_limits
from tests.api_helpers import start, wait_finished
from tests.live_server import TOKENS, LiveServer, ServerProcessFactory, make_settings
from tests.waiting import wait_until

pytestmark = pytest.mark.server

AUTH = f"Authorization: Bearer {TOKENS['alice']}\r\n".encode()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path)) as server:
        yield server


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (an empty answer if it resets)."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


@pytest.mark.timeout(60)
def test_an_oversized_head_gets_431_and_never_stalls_other_clients(live: LiveServer) -> None:
    with connect(live.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024))
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    assert b"Request Header Fields Too Large" in reply

    # 100 MiB more, as fast as the socket takes it: refused early, /healthz never waits.
    worst = 0.0
    with connect(live.port) as sock, httpx.Client(base_url=live.base_url, timeout=5) as other:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        chunk = b"a" * (1 << 20)
        try:
            for _ in range(100):
                sock.sendall(chunk)
                sent += 1
                t0 = time.monotonic()
                assert other.get("/healthz").status_code == 200
                worst = max(worst, time.monotonic() - t0)
        except OSError:
            pass  # closed by the server: what should happen
    assert sent < 100, "the server kept reading a 100 MiB head"
    assert worst < 1.0, worst


@pytest.mark.timeout(30)
def test_a_trickled_head_gets_408_and_a_silent_connection_is_closed(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_limits, "HEAD_TIMEOUT_S", 1.0)
    with connect(live.port) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        reply = answer(sock)  # the server closes it; a trickler never finishes
        took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
    assert took < 5, took
    with connect(live.port) as sock:  # connects, never says a word
        assert answer(sock).startswith(b"HTTP/1.1 408 ")
    # A keep-alive connection is not hurried between its requests.
    with httpx.Client(base_url=live.base_url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200


@pytest.mark.timeout(30)
def test_a_stalled_body_is_cut(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "BODY_IDLE_S", 1.0)
    with connect(live.port) as sock:
        sock.sendall(
            b"POST /runs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"agent": '
        )
        t0 = time.monotonic()
        reply = answer(sock)
        took = time.monotonic() - t0
    assert b"202" not in reply
    assert took < 8, took


def server_side_queue(server_port: int, client: socket.socket) -> int | None:
    """Bytes the server's end of ``client``'s connection has queued to send; None once gone.

    Read from ``/proc/net/tcp`` (the server is in this network namespace): the
    entry whose local port is the server's and remote port is the client's.
    """
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) != server_port:
                continue
            if int(remote.split(":")[1], 16) != client_port or state != "01":  # ESTABLISHED
                continue
            return int(fields[4].split(":")[0], 16)
    return None


def stuck_reader(port: int, run_id: str) -> socket.socket:
    """A stream request on a socket with a 4 KB receive buffer that never reads."""
    sock = connect(port, rcvbuf=4096)
    sock.sendall(f"GET /runs/{run_id}/stream HTTP/1.1\r\nHost: x\r\n".encode() + AUTH + b"\r\n")
    return sock


@pytest.mark.timeout(60)
def test_a_reader_that_stopped_is_aborted_with_one_log_line(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http_limits, "SEND_STALL_S", 1.0)
    caplog.set_level(logging.WARNING)
    with live.client("alice") as alice:
        run_id = start(alice, "chatty", n=30_000, batch=500)
        wait_finished(alice, run_id, timeout=30)
        readers = [stuck_reader(live.port, run_id) for _ in range(3)]
        try:
            gateway = live.gateway
            wait_until(lambda: len(gateway.streams) == 3, 10, "the three streams to open")
            for sock in readers:
                wait_until(
                    lambda s=sock: (server_side_queue(live.port, s) or 0) > 100_000,
                    10,
                    "the server's send queue to fill",
                )
            wait_until(lambda: not gateway.streams, 20, "the stuck streams to be dropped")
            # Aborted, not left to drain: the server's end of each connection is gone.
            for sock in readers:
                wait_until(
                    lambda s=sock: server_side_queue(live.port, s) is None,
                    10,
                    "the server's end of the connection to close",
                )
        finally:
            for sock in readers:
                sock.close()
        assert alice.get("/healthz").status_code == 200
    aborted = [r for r in caplog.records if "has read nothing" in r.getMessage()]
    assert len(aborted) == 3, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


@pytest.mark.timeout(60)
def test_shutdown_keeps_its_bound_with_a_stuck_reader(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    """grace 2 + stop grace 2 + margin 5: out within 9 s (13 s before the fix)."""
    proc = server_process(tmp_path, RUNYARD_SHUTDOWN_GRACE_S="2", RUNYARD_STOP_GRACE_S="2")
    with proc.client("alice") as alice:
        chatty = start(alice, "chatty", n=30_000, batch=500)
        wait_finished(alice, chatty, timeout=30)
        start(alice, "stubborn")
        reader = stuck_reader(proc.port, chatty)
        try:
            wait_until(
                lambda: (server_side_queue(proc.port, reader) or 0) > 100_000,
                10,
                "the stuck stream to fill the server's send queue",
            )
            proc.signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = proc.wait(timeout=30)
            took = time.monotonic() - signalled
        finally:
            reader.close()
    assert code == 0, proc.output()
    assert took < 2 + 2 + 5 + 1, took  # (+1: a loaded machine's process exit)
