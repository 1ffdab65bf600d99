"""A subscription as an SSE byte stream: the first ``run`` frame, the replay, then live.

Replay goes out in large chunks of many frames (one send per ~64 KiB instead
of one per event); live items go out one chunk per batch the subscription
hands over.  The generator only ever awaits its own subscription, so a
client disconnect (which cancels the generator) can never touch the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from actors.messages import Unsubscribe
from actors.records import Event
from actors.stream_items import Closing, Finished, Lagged
from actors.subscription import Subscription
from web.gateway import Gateway
from web.sse import SSE_HEADERS, encode_frame, heartbeat_event
from web.wire import sse_event_frame

REPLAY_CHUNK_BYTES = 64 * 1024
LIVE_BATCH_ITEMS = 256
"""Live events per send: the rest stay queued, where the subscription's bound applies."""
RECONNECT_MS = 3000
"""``retry:`` hint sent with a ``closing`` frame: when an EventSource should come back."""


def sse_response_kwargs(heartbeat_s: float) -> dict[str, Any]:
    return {
        "headers": dict(SSE_HEADERS),
        "ping": heartbeat_s,
        "ping_message_factory": heartbeat_event,
        "sep": "\n",
        "send_timeout": 30.0,
    }


async def stream_subscription(
    gateway: Gateway, sub: Subscription, *, agent: str | None = None
) -> AsyncIterator[bytes]:
    gateway.streams.add(sub)
    saw_done = False
    try:
        first: dict[str, Any] = {
            "run_id": sub.run_id,
            "status": sub.status_at_subscribe,
            "after": sub.after_seq,
        }
        if agent is not None:
            first["agent"] = agent
        yield encode_frame("run", first)

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
                    if not saw_done and not any(e.type == "done" for e in item.record.events):
                        # A record from before `done` existed (or recovered after a
                        # crash): still close with the frame clients wait for.
                        rec = item.record
                        out.append(
                            encode_frame(
                                "done",
                                {"status": rec.status, "result": rec.result, "error": rec.error},
                            ).decode()
                        )
                elif isinstance(item, Lagged):
                    out.append(
                        encode_frame(
                            "lagged",
                            {
                                "last_seq": item.last_seq,
                                "message": "this client fell too far behind and was cut off; "
                                f"reconnect with Last-Event-ID: {item.last_seq}",
                            },
                            id=item.last_seq,
                        ).decode()
                    )
                elif isinstance(item, Closing):
                    out.append(f"retry: {RECONNECT_MS}\n")
                    out.append(
                        encode_frame(
                            "closing",
                            {
                                "last_seq": item.last_seq,
                                "reason": item.reason,
                                "message": "the server is shutting down; reconnect later with "
                                f"Last-Event-ID: {item.last_seq}",
                            },
                            id=item.last_seq,
                        ).decode()
                    )
            if out:
                yield "".join(out).encode()
    finally:
        gateway.streams.discard(sub)
        if not sub.closed:
            # Disconnecting is not stopping: only leave the subscriber set.
            registry = gateway.runtime.registry
            if registry.is_alive():
                registry.tell(Unsubscribe(run_id=sub.run_id, subscription=sub))
