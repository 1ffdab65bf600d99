"""Everything server-sent events: response settings, resume cursor, frames, the two streams.

Two streams leave the server as SSE: a run's subscription (``GET
/runs/{run_id}/stream`` and ``POST /agents/run-code/stream``) and a user's
lifecycle feed (``GET /runs/feed``).  The routes only parse input, ask the
gateway and hand one of the generators below to ``EventSourceResponse`` with
:func:`response_kwargs`.  Frames on the wire look like::

    id: 42
    event: progress
    data: {"seq":42,"ts":"...","type":"progress","data":{"pct":50}}

Two encoders, on purpose:

* **Trace events** are the hot path (a replay can be 100,000 events): their
  frames are spliced from the pre-encoded ``Event.data_json`` by
  :func:`sse_event_frame` and sent as bytes, replay in ~64 KiB chunks and
  live up to :data:`LIVE_BATCH_ITEMS` items per send, because one ASGI send
  per event costs more than the encoding.  This trusts the invariants
  ``Event`` carries: its type matched ``runyard.actors.context.EVENT_TYPE`` when it
  was emitted (one line, no spaces) and its ``data_json`` is compact JSON,
  which never holds a raw CR or LF.
* **Control frames** (``run``, ``lagged``, ``closing``, a missing ``done``,
  ``ready``, ``run_*``, the ``retry:`` hint) are few; :func:`control_frame`
  builds them with sse-starlette's ``ServerSentEvent``, which strips line
  breaks from ``event``/``id`` and splits ``data`` per line, so no value can
  forge a frame boundary.

Facts about sse-starlette 3.7 the code relies on (read from its source):

* ``bytes`` items are sent untouched; ``sep="\\n"`` makes the library's own
  frames (the heartbeat ping) use the same line end as ours.
* ``Cache-Control`` would default to ``no-store``; we send ``no-cache``
  (either keeps proxies from caching).  ``X-Accel-Buffering: no`` stops
  nginx from buffering the stream.
* A client disconnect cancels the generator and whatever it awaits: it
  awaits only its own subscription, never the run.
* ``send_timeout`` ends a stream whose client stopped reading; bounded
  queues and ``lagged`` normally cut such a reader off first.
* There is no ``Last-Event-ID`` handling: :func:`parse_resume_cursor` does
  it.  Declare ``after`` as ``str | None`` so a bad value is our 400, not a 422.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from sse_starlette import ServerSentEvent

from runyard.actors.errors import InvalidRequest
from runyard.actors.feed import Feed
from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.messages import Unsubscribe, Unwatch
from runyard.actors.records import JSON, Event
from runyard.actors.stream_items import Closing, Finished, Lagged, RunChange
from runyard.actors.subscription import Subscription
from runyard.web.gateway import Gateway
from runyard.web.wire import event_json, summary_dict

SSE_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
"""Headers every SSE response sends so proxies neither cache nor buffer it."""

SEND_TIMEOUT_S: Final = 30.0
"""Seconds one send may block before the stream is dropped as dead."""

MAX_CURSOR: Final = 2**53 - 1
"""Largest accepted resume cursor: a JavaScript-safe integer, far beyond any real trace."""

REPLAY_CHUNK_BYTES: Final = 64 * 1024
"""Replay bytes per send: amortises the per-send cost, still small enough for send_timeout."""

LIVE_BATCH_ITEMS: Final = 256
"""Live items per send: the rest stay queued, where the subscription's bound applies."""

RECONNECT_MS: Final = 3000
"""``retry:`` hint sent with a ``closing`` frame: when a client should come back."""


# --------------------------------------------------------------------------
# The response and its input


class InvalidCursor(InvalidRequest):
    """``Last-Event-ID`` / ``?after=`` is not a usable sequence number (HTTP 400)."""

    code = "invalid_cursor"
    http_status = 400


def heartbeat_event() -> ServerSentEvent:
    """``ping_message_factory``: a ``: heartbeat`` comment that EventSource ignores."""
    return ServerSentEvent(comment="heartbeat", sep="\n")


def response_kwargs(heartbeat_s: float) -> dict[str, Any]:
    """``EventSourceResponse`` keyword arguments for every stream; ``heartbeat_s`` 0: no ping."""
    return {
        "headers": dict(SSE_HEADERS),
        "ping": heartbeat_s,
        "ping_message_factory": heartbeat_event,
        "sep": "\n",
        "send_timeout": SEND_TIMEOUT_S,
    }


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


# --------------------------------------------------------------------------
# Frames


def sse_event_frame(event: Event) -> str:
    """One trace event's frame, ``id`` = its seq (the hot path: no JSON encoding here)."""
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event_json(event)}\n\n"


def control_frame(
    event: str, data: JSON, *, id: int | None = None, retry: int | None = None
) -> bytes:
    """A frame of the server's own: ``data`` as compact JSON; ``retry`` in milliseconds.

    Values JSON cannot encode become visible ``{"__repr__": ...}`` markers
    (:mod:`runyard.actors.jsonsafe`) rather than breaking the frame a client waits for.
    """
    return ServerSentEvent(
        data=dumps_safe(data)[1],
        event=event,
        id=None if id is None else str(id),
        retry=retry,
        sep="\n",
    ).encode()


# --------------------------------------------------------------------------
# Streams


async def run_stream(
    gateway: Gateway, sub: Subscription, *, agent: str | None = None
) -> AsyncIterator[bytes]:
    """A subscription as SSE bytes: the ``run`` frame, the replay, then live until the end.

    Leaving (client gone, generator closed) only unsubscribes: a stream
    never stops its run.
    """
    gateway.streams.add(sub)
    try:
        first: dict[str, JSON] = {
            "run_id": sub.run_id,
            "status": sub.status_at_subscribe,
            "after": sub.after_seq,
            # The run's last stored seq now: a cursor past it is told so, not left guessing.
            "last_seq": sub.end_seq,
        }
        if agent is not None:
            first["agent"] = agent
        yield control_frame("run", first)

        saw_done = False
        parts: list[str] = []
        size = 0
        for event in sub.take_replay():
            frame = sse_event_frame(event)
            parts.append(frame)
            size += len(frame)
            saw_done = saw_done or event.type == "done"
            if size >= REPLAY_CHUNK_BYTES:
                yield "".join(parts).encode()
                parts, size = [], 0
        if parts:
            yield "".join(parts).encode()

        while True:
            items = await sub.next_batch(LIVE_BATCH_ITEMS)
            if not items:
                return
            out: list[str] = []
            for item in items:
                if isinstance(item, Event):
                    out.append(sse_event_frame(item))
                    saw_done = saw_done or item.type == "done"
                elif isinstance(item, Finished):
                    if not saw_done:
                        # A cursor at or past the end still gets the run's `done` (again).
                        out.append(_final_done(item))
                else:
                    out.append(_run_notice(item).decode())
            if out:
                yield "".join(out).encode()
    finally:
        gateway.streams.discard(sub)
        if not sub.closed:
            registry = gateway.runtime.registry
            if registry.is_alive():
                registry.tell(Unsubscribe(run_id=sub.run_id, subscription=sub))


def _final_done(item: Finished) -> str:
    """The run's own closing ``done`` event; a record from before ``done`` existed
    still ends with one (without an id)."""
    rec = item.record
    if rec.events and rec.events[-1].type == "done":
        return sse_event_frame(rec.events[-1])
    done = {"status": rec.status, "result": rec.result, "error": rec.error}
    return control_frame("done", done).decode()


def _run_notice(item: Lagged | Closing) -> bytes:
    """Why a run stream ends early, with the seq to resume from as its id."""
    if isinstance(item, Lagged):
        return control_frame(
            "lagged",
            {
                "last_seq": item.last_seq,
                "message": "this client fell too far behind and was cut off; "
                f"reconnect with Last-Event-ID: {item.last_seq}",
            },
            id=item.last_seq,
        )
    return control_frame(
        "closing",
        {
            "last_seq": item.last_seq,
            "reason": item.reason,
            "message": "the server is shutting down; reconnect later with "
            f"Last-Event-ID: {item.last_seq}",
        },
        id=item.last_seq,
        retry=RECONNECT_MS,
    )


async def feed_stream(gateway: Gateway, feed: Feed) -> AsyncIterator[bytes]:
    """A lifecycle feed as SSE bytes: ``ready``, then one ``run_<kind>`` frame per change.

    Changes carry no ids: a client that comes back lists its runs again.
    """
    gateway.streams.add(feed)
    try:
        yield control_frame("ready", {"user_id": feed.user_id})
        while True:
            items = await feed.next_batch(LIVE_BATCH_ITEMS)
            if not items:
                return
            out = []
            for item in items:
                if isinstance(item, RunChange):
                    out.append(control_frame(f"run_{item.kind}", summary_dict(item.summary)))
                elif isinstance(item, Lagged):
                    out.append(
                        control_frame("lagged", {"message": "too far behind; list your runs again"})
                    )
                else:
                    out.append(
                        control_frame("closing", {"reason": item.reason}, retry=RECONNECT_MS)
                    )
            yield b"".join(out)
    finally:
        gateway.streams.discard(feed)
        registry = gateway.runtime.registry
        if registry.is_alive():
            registry.tell(Unwatch(feed=feed))
