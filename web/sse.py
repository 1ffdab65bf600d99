"""Server-sent-event frames, pre-encoded to bytes, and the resume cursor.

Why encode ourselves instead of yielding ``ServerSentEvent`` objects: a
replay of thousands of events is much faster written as a few large chunks
of many frames than as one ASGI message per event (LESSONS.md), and
sse-starlette passes ``bytes`` through untouched.  Frames are::

    id: 42
    event: progress
    data: {"seq":42,"pct":50}

with compact JSON that keeps non-ASCII text as UTF-8.  JSON never contains a
raw CR or LF (``json.dumps`` escapes them inside strings), so ``data`` is
always one line and no payload can inject a frame boundary.

How the route should build the response (sse-starlette 3.7, read from its
source)::

    EventSourceResponse(
        body,                        # async iterator of bytes (our frames/batches)
        headers=SSE_HEADERS,         # Cache-Control: no-cache, X-Accel-Buffering: no
        ping=settings.heartbeat_s,   # seconds; 0 disables the ping task
        ping_message_factory=heartbeat_event,   # ": heartbeat" comment frame
        sep="\\n",                    # line ending of the library's own frames
        send_timeout=...,            # seconds per send; raises SendTimeoutError
        shutdown_event=anyio.Event(),           # set on SIGTERM: send a goodbye frame
        shutdown_grace_period=...,   # then force-cancel (< uvicorn's graceful timeout)
    )

Facts that matter for the route code:

* ``content`` items may be ``bytes`` (sent as-is), ``ServerSentEvent``,
  ``dict`` (keyword arguments of ``ServerSentEvent``) or anything ``str()``-able.
* ``Cache-Control`` defaults to ``no-store`` unless given; ``X-Accel-Buffering:
  no`` and ``Connection: keep-alive`` are always set.  We send ``no-cache``
  as issue 3 asks (either keeps proxies from caching).
* The default ``sep`` is ``"\\r\\n"``; it applies only to frames the library
  encodes (pings, dicts, strings).  Ours use ``"\\n"``; pass ``sep="\\n"`` so
  the stream is uniform.
* A client disconnect cancels the generator and whatever it awaits: read
  from the subscription queue, never await the run task.
* ``send_timeout`` raises ``sse_starlette.sse.SendTimeoutError`` from the
  send (data or ping) and the generator is closed; bounded subscriber queues
  and the ``Lagged`` message handle slow readers before that.
* There is no ``Last-Event-ID`` handling: the route reads the header and
  ``?after=`` itself through :func:`parse_resume_cursor`.  Declare ``after``
  as ``str | None`` (not ``int``) so a bad value is our 400, not a 422.
* On SIGTERM sse-starlette's patched ``uvicorn.Server.handle_exit`` sets the
  process-global ``AppStatus.should_exit``; a watcher polling every 0.5 s then
  sets ``shutdown_event`` (if given) and, after ``shutdown_grace_period``,
  cancels the stream.
* ``HEAD`` answers headers with an empty body and never starts the generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NamedTuple

from sse_starlette import ServerSentEvent

from actors.errors import InvalidRequest
from actors.jsonsafe import dumps_safe
from actors.records import JSON

CACHE_CONTROL: Final = "no-cache"
X_ACCEL_BUFFERING: Final = "no"
SSE_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": CACHE_CONTROL,
    "X-Accel-Buffering": X_ACCEL_BUFFERING,
}
"""Headers every SSE response sends so proxies neither cache nor buffer it."""

HEARTBEAT: Final = b": heartbeat\n\n"
"""A comment frame: keeps idle connections open through proxies; EventSource ignores it."""

MAX_CURSOR: Final = 2**53 - 1
"""Largest accepted resume cursor: a JavaScript-safe integer, far beyond any real trace."""

DEFAULT_CHUNK_BYTES: Final = 64 * 1024
"""Batch size for replays: big enough to amortise per-send cost, small enough for send_timeout."""


class InvalidCursor(InvalidRequest):
    """``Last-Event-ID`` / ``?after=`` is not a usable sequence number (HTTP 400)."""

    code = "invalid_cursor"
    http_status = 400


class Frame(NamedTuple):
    """One SSE event before encoding; ``id`` is the event's ``seq`` (or ``None``)."""

    event: str
    data: JSON
    id: int | None = None


def dumps_json(value: JSON) -> str:
    """Compact JSON, UTF-8 text kept as-is; never raises for odd values.

    A non-JSON result once broke the final frame (LESSONS.md): values
    ``json`` cannot encode become visible ``{"__repr__": ...}`` markers, the
    runtime's one canonical fallback (:mod:`actors.jsonsafe`).
    """
    return dumps_safe(value)[1]


def encode_frame(event: str, data: JSON, id: int | None = None) -> bytes:
    """``id: N\\nevent: T\\ndata: {json}\\n\\n`` as UTF-8 bytes.

    ``event`` must be one line (it is our own event type, never user text);
    ``id`` a non-negative integer: the run's dense ``seq``.
    """
    if "\n" in event or "\r" in event or not event:
        raise ValueError(f"SSE event type must be one non-empty line, got {event!r}")
    head = ""
    if id is not None:
        if isinstance(id, bool) or not isinstance(id, int) or id < 0:
            raise ValueError(f"SSE id must be a non-negative integer, got {id!r}")
        head = f"id: {id}\n"
    return f"{head}event: {event}\ndata: {dumps_json(data)}\n\n".encode()


def encode_frames(frames: Iterable[Frame]) -> bytes:
    """Many frames as one bytes chunk: one ASGI send instead of one per event."""
    return b"".join(encode_frame(f.event, f.data, f.id) for f in frames)


def encode_batches(
    frames: Iterable[Frame], max_chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Frames grouped into chunks of about ``max_chunk_bytes`` (never splitting a frame).

    For replays: a 20k-event trace goes out in a few hundred sends, each
    small enough that ``send_timeout`` still detects a stuck client.
    """
    if max_chunk_bytes < 1:
        raise ValueError("max_chunk_bytes must be positive")
    parts: list[bytes] = []
    size = 0
    for f in frames:
        encoded = encode_frame(f.event, f.data, f.id)
        parts.append(encoded)
        size += len(encoded)
        if size >= max_chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def heartbeat_frame() -> bytes:
    """The heartbeat comment as bytes (for generators that send their own)."""
    return HEARTBEAT


def heartbeat_event() -> ServerSentEvent:
    """``ping_message_factory`` for ``EventSourceResponse``: the same ``: heartbeat`` frame."""
    return ServerSentEvent(comment="heartbeat", sep="\n")


def parse_resume_cursor(last_event_id: str | None, after: str | None) -> int:
    """The seq to resume after: 0 for "from the start".

    ``Last-Event-ID`` wins over ``?after=``: a browser reconnecting to a URL
    that still carries its original ``?after=`` sends the newer position in
    the header.  An empty value counts as absent (the SSE spec sends an empty
    id when the last event had none).  Anything but plain ASCII digits up to
    :data:`MAX_CURSOR` is refused with :class:`InvalidCursor` (400): guessing
    a position would silently lose or repeat events.
    """
    for name, raw in (("Last-Event-ID", last_event_id), ("after", after)):
        if raw is None or not raw.strip():
            continue
        return _parse_cursor(name, raw.strip())
    return 0


def _parse_cursor(name: str, text: str) -> int:
    shown = text if len(text) <= 40 else text[:37] + "..."
    # isdigit() alone accepts "²" and Arabic-Indic digits; int() accepts "1_0", "+1".
    if not (text.isascii() and text.isdigit()):
        raise InvalidCursor(f"{name} must be a non-negative integer event seq, got {shown!r}")
    if len(text) > len(str(MAX_CURSOR)) or int(text) > MAX_CURSOR:
        raise InvalidCursor(f"{name} is too large ({shown}); the largest seq is {MAX_CURSOR}")
    return int(text)
