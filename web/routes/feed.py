"""``GET /runs/feed``: the lifecycle of the runs you may read, as SSE: a run list never polls.

Frames: ``event: ready`` once subscribed (list your runs *after* it and no
change can fall in between), then ``run_started``, ``run_stopping``,
``run_finished``, ``run_deleted``, each with the run's summary.  Changes
carry no ids: on reconnect, list again and keep watching.  The runs are
those ``GET /runs`` lists: your own and your workspaces' (``?workspace=``:
one workspace's only, 403 if you are not a member).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from runyard.actors.feed import Feed
from runyard.actors.messages import WatchRuns
from runyard.web.auth import CallerDep
from runyard.web.errors import error_responses
from runyard.web.gateway import GatewayDep
from runyard.web.models import workspace_query
from runyard.web.sse import feed_stream, response_kwargs

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get(
    "/feed",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": __doc__ or ""},
        **error_responses(401, 403, 422),
    },
    response_class=EventSourceResponse,
    summary="Follow your runs' lifecycle (started, stopping, finished, deleted)",
)
async def run_feed(
    request: Request,
    caller: CallerDep,
    gateway: GatewayDep,
    workspace: Annotated[str | None, workspace_query()] = None,
) -> EventSourceResponse:
    feed: Feed = await gateway.ask(WatchRuns(caller=caller, workspace=workspace))
    heartbeat_s = request.app.state.settings.heartbeat_s
    frames = request.app.state.open_streams.track("feed", feed_stream(gateway, feed))
    return EventSourceResponse(frames, **response_kwargs(heartbeat_s))
