"""No credential in a log line (runyard.web.log_redaction): the rule, the filter, and a real server's log.

The sign-in link now carries its token in the fragment, which browsers never
send; but old ``/?token=`` links, scripts and stray clients may still put a
credential in a URL.  The last test starts ``runyard serve`` as operators do,
sends such requests as raw bytes (no client library to tidy the URL), and
reads everything the process wrote.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys
from pathlib import Path

import pytest

from runyard.web.log_redaction import REDACTED, CredentialRedactor, redact
from tests.live_server import TOKENS, ServerProcessFactory


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/?token=abc", "/?token=[redacted]"),
        ("/runs?after=3&TOKEN=abc&limit=5", "/runs?after=3&TOKEN=[redacted]&limit=5"),
        ("/?to%6Ben=abc", "/?token=[redacted]"),  # the name percent-encoded
        ("/?%2574oken=abc", "/?token=[redacted]"),  # and twice
        ("/%23token%3Dabc", "/#token=[redacted]"),  # a fragment, as uvicorn quotes it
        ("/ui?access_token=abc;x=1", "/ui?access_token=[redacted];x=1"),
        ("/?session_secret=abc&password=def", "/?session_secret=[redacted]&password=[redacted]"),
        ("/?token=a%0Ab", "/?token=[redacted]"),
        ("/?token=", "/?token=[redacted]"),
        ('GET /?token=abc HTTP/1.1" 200', 'GET /?token=[redacted] HTTP/1.1" 200'),
        ("Authorization: Bearer abc.def-1", "Authorization: Bearer [redacted]"),
        ("/runs?after=3&limit=5", "/runs?after=3&limit=5"),  # nothing secret: untouched
        ("/runs/0b4e?cursor=a%3Db", "/runs/0b4e?cursor=a%3Db"),
        ("100% done", "100% done"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.timeout(10)
def test_a_redacted_piece_cannot_forge_a_log_line() -> None:
    shown = redact("/?token=x&note=%0Afake%20line&password=y")
    assert "\n" not in shown
    assert "password=[redacted]" in shown


def _record(msg: str, args: tuple[object, ...] | None = None) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)


@pytest.mark.timeout(10)
def test_filter_keeps_uvicorns_access_arguments_in_shape() -> None:
    record = _record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", "/?token=abc", "1.1", 200))
    assert CredentialRedactor().filter(record)
    assert record.args == ("127.0.0.1:5", "GET", f"/?token={REDACTED}", "1.1", 200)
    assert record.getMessage() == f'127.0.0.1:5 - "GET /?token={REDACTED} HTTP/1.1" 200'


@pytest.mark.timeout(10)
def test_filter_redacts_a_format_string_that_names_a_credential() -> None:
    record = _record("signing in with token=%s", ("abc",))
    CredentialRedactor().filter(record)
    assert record.getMessage() == f"signing in with token={REDACTED}"


@pytest.mark.timeout(10)
def test_filter_redacts_traceback_text() -> None:
    try:
        raise RuntimeError("GET http://node/runs?token=abc failed")
    except RuntimeError:
        record = logging.LogRecord("runyard", logging.ERROR, __file__, 1, "boom", None, None)
        record.exc_info = sys.exc_info()
    CredentialRedactor().filter(record)
    assert record.exc_text is not None
    assert "token=abc" not in record.exc_text
    assert f"token={REDACTED}" in record.exc_text


def _raw_request(port: int, target: str, *headers: str) -> bytes:
    """One HTTP/1.1 request sent byte for byte as given; the whole answer."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers, "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.server
@pytest.mark.timeout(90)
def test_runyard_serve_logs_no_token_whatever_url_a_client_sends(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    secret = [f"S{i}{secrets.token_hex(8)}" for i in range(7)]
    server = server_process(tmp_path / "data")
    sent = [
        (f"/?token={secret[0]}",),  # an old sign-in link
        (f"/ui/runs/x?TOKEN={secret[1]}&after=1",),
        (f"/runs?to%6Ben={secret[2]}",),
        (f"/?a=1&access_token={secret[3]}",),
        (f"/#token={secret[4]}",),  # a client that sends the fragment after all
        ("/runs", f"Authorization: Bearer {secret[5]}"),  # a wrong token: 401
        ("/runs", f"Authorization: Bearer {TOKENS['alice']}"),
        (f"/auth/session?password={secret[6]}", f"Authorization: Bearer {TOKENS['bob']}"),
    ]
    for target, *headers in sent:
        answer = _raw_request(server.port, target, *headers)
        assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    server.signal()
    assert server.wait(30) == 0
    log = server.output()

    # The requests were logged (so this looks at the access log at all)...
    assert '"GET /ui/runs/x?TOKEN=[redacted]&after=1 HTTP/1.1" 200' in log, log
    assert '"GET /runs HTTP/1.1" 401' in log, log
    assert log.count(REDACTED) >= 5, log
    # ...and no credential is in them.
    for value in (*secret, TOKENS["alice"], TOKENS["bob"]):
        assert value not in log, (value, log)
