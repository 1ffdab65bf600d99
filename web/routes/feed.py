"""``GET /runs/feed``: the caller's run lifecycle as SSE, so a run list never polls.

Frames: ``event: ready`` once subscribed (list your runs *after* it and no
change can fall in between), then ``run_started``, ``run_stopping``,
``run_finished``, ``run_deleted``, each with the run's summary.  Changes
carry no ids: on reconnect, list again and keep watching.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from actors.feed import Feed
from actors.messages import Unwatch, WatchRuns
from actors.stream_items import Closing, Lagged, RunChange
from web.auth import CallerDep
from web.errors import error_responses
from web.gateway import Gateway, GatewayDep
from web.sse import encode_frame
from web.streaming import LIVE_BATCH_ITEMS, RECONNECT_MS, sse_response_kwargs
from web.wire import summary_dict

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get(
    "/feed",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": __doc__ or ""},
        **error_responses(401),
    },
    response_class=EventSourceResponse,
    summary="Follow your runs' lifecycle (started, stopping, finished, deleted)",
)
async def run_feed(request: Request, caller: CallerDep, gateway: GatewayDep) -> EventSourceResponse:
    feed: Feed = await gateway.ask(WatchRuns(caller=caller))
    settings = request.app.state.settings
    return EventSourceResponse(_frames(gateway, feed), **sse_response_kwargs(settings.heartbeat_s))


async def _frames(gateway: Gateway, feed: Feed) -> AsyncIterator[bytes]:
    gateway.streams.add(feed)
    try:
        yield encode_frame("ready", {"user_id": feed.user_id})
        while True:
            items = await feed.next_batch(LIVE_BATCH_ITEMS)
            if not items:
                return
            out = []
            for item in items:
                if isinstance(item, RunChange):
                    out.append(encode_frame(f"run_{item.kind}", summary_dict(item.summary)))
                elif isinstance(item, Lagged):
                    out.append(
                        encode_frame("lagged", {"message": "too far behind; list your runs again"})
                    )
                elif isinstance(item, Closing):
                    out.append(f"retry: {RECONNECT_MS}\n".encode())
                    out.append(encode_frame("closing", {"reason": item.reason}))
            yield b"".join(out)
    finally:
        gateway.streams.discard(feed)
        registry = gateway.runtime.registry
        if registry.is_alive():
            registry.tell(Unwatch(feed=feed))
