"""``runyard`` console script: ``runyard serve [--host H] [--port P] [--fd N]``.

Configuration is the ``RUNYARD_*`` environment (:mod:`runyard.web.config`); the
flags only override where it listens.  ``--fd`` serves on a listening socket
the parent already bound and passed down (a supervisor, or the test suite),
so the port is never free between choosing it and serving on it.  ``--help``
prints every setting with its default and description, so an operator never
has to read the source.

With no users configured, ``serve`` creates a local admin with a random
token and prints a URL that signs in with it (as Jupyter does).  The socket
is bound before that URL is printed, so ``--port 0`` shows the real port.
The token rides in the URL's fragment (``/#token=...``), which a browser
never sends, so it reaches no access log; and every log line goes through
:mod:`runyard.web.log_redaction` in case a client puts a token in a query anyway.

Start-up: the store is opened once before serving (:func:`runyard.web.app.probe_store`).
CouchDB refusing the credentials exits 2 with a message naming the setting;
any other store problem is printed and the server serves anyway (``/readyz``
says why it is not ready, and it recovers once the store does).

Shutdown: :class:`runyard.web.server.RunyardServer` drains on the first SIGINT/SIGTERM
while still answering (new starts 503, live runs get their grace, streams end
with a final frame), then lets uvicorn stop.  ``timeout_graceful_shutdown``
bounds what uvicorn waits for open connections afterwards.  The exit status
is 1 if data the server had acknowledged could not be stored (the store was
down to the end), 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import socket
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import quote

from runyard.web.config import ConfigError, Settings, describe_settings, load_settings
from runyard.web.log_redaction import redact_credentials_in_logs
from runyard.web.node import DataDirLock
from runyard.web.users import LOCAL_ADMIN_ID, load_users, with_local_admin

SHUTDOWN_MARGIN_S = 5.0
"""Beyond shutdown + stop grace: time to write final records and frames."""


def settings_help() -> str:
    """The ``--help`` epilog: one entry per ``RUNYARD_*`` setting."""
    lines = ["settings (environment variables):"]
    for info in describe_settings():
        lines.append(f"  {info.env_var}  (default: {info.default})")
        lines += textwrap.wrap(
            info.description, width=78, initial_indent="      ", subsequent_indent="      "
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runyard",
        description="Durable, reconnectable agent runs over REST and SSE.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve the HTTP API and dashboard with uvicorn.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="interface to listen on (overrides RUNYARD_HOST)")
    serve.add_argument("--port", type=int, help="TCP port (overrides RUNYARD_PORT; 0 = any)")
    serve.add_argument(
        "--fd",
        type=int,
        help="serve on this inherited, already bound socket (a file descriptor) "
        "instead of binding host and port",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        build_parser().print_help(sys.stderr)
        return 2
    try:
        settings = load_settings(host=args.host, port=args.port)
        settings, token = with_local_admin(settings)
        load_users(settings)  # refuse malformed users before anything starts
        listener = None if args.fd is None else inherited_socket(args.fd)
    except ConfigError as exc:
        print(f"runyard: {exc}", file=sys.stderr)
        return 2
    return serve(settings, token, listener)


def inherited_socket(fd: int) -> socket.socket:
    """The socket behind ``fd`` (family and type read from it); ConfigError if there is none."""
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"--fd {fd} is not an open socket ({exc.strerror})") from None


def graceful_timeout_s(settings: Settings) -> int:
    return math.ceil(settings.shutdown_grace_s + settings.stop_grace_s + SHUTDOWN_MARGIN_S)


def serve(
    settings: Settings,
    local_admin_token: str | None = None,
    listener: socket.socket | None = None,
) -> int:
    """Build the app, bind (unless given ``listener``), print the sign-in URL if needed, serve."""
    import uvicorn

    from runyard.web.server import RunyardServer

    # Imported here, by name: the CLI (and ``--help``) must work without
    # building the app, and runyard.web.app imports the whole runtime.
    web_app = importlib.import_module("runyard.web.app")
    try:
        lock = None
        if not settings.couchdb_url:
            lock = DataDirLock(settings.data_dir)
            lock.acquire()  # SQLite is single-node: refuse a second process at once
        app = web_app.create_app(settings, data_dir_lock=lock)
        problem = web_app.probe_store(settings)
    except ConfigError as exc:
        print(f"runyard: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(
            f"runyard: the store is not available yet ({problem}); serving anyway, "
            "/readyz reports it until it is",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout_s(settings),
    )
    server = RunyardServer(config, app, grace_s=settings.shutdown_grace_s)
    # After uvicorn.Config, which configures uvicorn's loggers.
    redact_credentials_in_logs([show_runyard_logs()])
    # bind_socket exits with uvicorn's message if the port is taken.
    sock = config.bind_socket() if listener is None else listener
    if local_admin_token is not None:
        host = settings.host
        if listener is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            host = sock.getsockname()[0]
        print_sign_in(host, sock.getsockname()[1], local_admin_token, sys.stdout)
    server.run(sockets=[sock])
    return exit_status(app.state)


LOGGED_PACKAGES = ("runyard", "actors", "persistence", "web")
"""Where runyard's own loggers live (``runyard.*`` and module-named ones)."""


def show_runyard_logs(level: int = logging.INFO) -> logging.Handler:
    """Print runyard's own log lines (recovery, sandbox, drain) next to uvicorn's.

    uvicorn configures only its own loggers; without this, the INFO lines
    operators are told to watch for would go nowhere.  Returns the handler
    (the caller puts the credential filter on it).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    for name in LOGGED_PACKAGES:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False
    return handler


def exit_status(state: object) -> int:
    """1 if the store lost acknowledged data at shutdown (said on stderr), else 0."""
    report = getattr(state, "stop_report", None)
    if report is None or not report.lost:
        return 0
    shown = ", ".join(report.unsaved[:20]) + (" ..." if len(report.unsaved) > 20 else "")
    print(
        f"runyard: exiting 1: {len(report.unsaved)} run(s) whose writes were acknowledged "
        f"could not be stored ({report.error}): {shown}",
        file=sys.stderr,
        flush=True,
    )
    return 1


def sign_in_url(host: str, port: int, token: str) -> str:
    """``http://HOST:PORT/#token=...``, with a wildcard host shown as loopback.

    The token is in the fragment, never the query: a browser does not send
    the fragment, so the token appears in no server or proxy log (the
    dashboard reads it from ``location.hash``).
    """
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/#token={quote(token, safe='')}"


def print_sign_in(host: str, port: int, token: str, out: TextIO) -> None:
    url = sign_in_url(host, port, token)
    base = url.split("#", 1)[0]
    print(
        f"\nrunyard: no users configured (RUNYARD_TOKENS, RUNYARD_TOKENS_FILE);\n"
        f"created the local admin {LOCAL_ADMIN_ID!r} with a new token for this run.\n"
        f"Open in a browser:\n    {url}\n"
        f"or call the API:\n    curl -H 'Authorization: Bearer {token}' {base}runs\n",
        file=out,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
