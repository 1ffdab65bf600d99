"""No credential in a log line, whatever URL a client sends.

The dashboard's sign-in link carries its token in the URL fragment, which
browsers never send; but old ``/?token=...`` links still work, and any
client may put a token in a query string.  uvicorn's access log writes every
request's path and query as received, so without this filter such a token
would sit in the log (and in every log shipper behind it).

:func:`redact` replaces the value of every query-style ``name=value`` pair
whose name contains ``token``, ``secret`` or ``password`` (any case), and
whatever follows ``Bearer``, with ``[redacted]``.  Names are compared after
percent-decoding (repeatedly), so ``?to%6Ben=...`` or a fragment that
reached the server as ``/%23token%3D...`` is caught too.  A redacted piece
is written decoded, with control characters escaped so a decoded ``%0A``
cannot forge a log line.  ``Authorization`` headers are never logged by
uvicorn or runyard; the ``Bearer`` rule covers a message that quotes one.

:func:`redact_credentials_in_logs` installs :class:`CredentialRedactor` on
uvicorn's loggers (the access log included) and on given handlers;
``runyard serve`` calls it once uvicorn has configured logging.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote

REDACTED: Final = "[redacted]"

UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
"""Where uvicorn logs: records are filtered where they are created."""

_SENSITIVE_NAME: Final = re.compile(r"token|secret|password", re.IGNORECASE)
_PIECE: Final = re.compile(r"[^?&;#\s\"']+")
"""A stretch between raw delimiters: a path, or one ``name=value`` pair."""
_PAIR: Final = re.compile(r"(^|[?&;#])([^=?&;#]*)=([^?&;#]*)")
_BEARER: Final = re.compile(r"\b(bearer)\s+[^\s\"',;]+", re.IGNORECASE)
_MAX_UNQUOTES: Final = 5


def redact(text: str) -> str:
    """``text`` with credential values in query-style pairs and after ``Bearer`` replaced."""
    if "=" in text or "%" in text:
        text = _PIECE.sub(_redact_piece, text)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def _redact_piece(match: re.Match[str]) -> str:
    raw = match.group(0)
    decoded = _unquote_fully(raw)
    if "=" not in decoded:
        return raw
    hits = 0

    def pair(m: re.Match[str]) -> str:
        nonlocal hits
        lead, name, _value = m.groups()
        if not _SENSITIVE_NAME.search(name):
            return m.group(0)
        hits += 1
        return f"{lead}{name}={REDACTED}"

    redacted = _PAIR.sub(pair, decoded)
    return _printable(redacted) if hits else raw


def _unquote_fully(text: str) -> str:
    for _ in range(_MAX_UNQUOTES):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class CredentialRedactor(logging.Filter):
    """Rewrites a record's message, arguments and traceback text through :func:`redact`.

    Arguments are redacted one by one, keeping their number and order:
    uvicorn's access formatter unpacks them (client, method, path, version,
    status).  A format string that itself names a credential
    (``"token=%s"``) is formatted first, so its value is redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = {key: _redact_value(v) for key, v in record.args.items()}
            else:
                record.args = tuple(_redact_value(v) for v in record.args)
            if isinstance(record.msg, str) and redact(record.msg) != record.msg:
                record.msg = redact(record.getMessage())
                record.args = ()
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.exc_info and not record.exc_text:
            # The formatter uses exc_text as it finds it: a URL in an exception is covered.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redact_credentials_in_logs(handlers: Iterable[logging.Handler] = ()) -> None:
    """Put one :class:`CredentialRedactor` on uvicorn's loggers and on ``handlers``; idempotent.

    Call it after uvicorn has configured logging (``uvicorn.Config(...)``
    does that): configuration replaces handlers, not logger filters, so the
    loggers keep theirs either way.
    """
    targets: list[logging.Logger | logging.Handler] = [
        logging.getLogger(name) for name in UVICORN_LOGGERS
    ]
    targets += handlers
    for target in targets:
        if not any(isinstance(f, CredentialRedactor) for f in target.filters):
            target.addFilter(CredentialRedactor())
