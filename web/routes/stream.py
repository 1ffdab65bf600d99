"""``GET /runs/{run_id}/stream``: replay then live, over SSE, resumable by seq."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from runyard.actors.messages import Subscribe
from runyard.web.auth import CallerDep
from runyard.web.errors import error_responses
from runyard.web.gateway import GatewayDep
from runyard.web.sse import parse_resume_cursor, response_kwargs, run_stream

router = APIRouter(prefix="/runs", tags=["runs"])

STREAM_DOC = """Server-sent events.  Frames: `event: run` first (run_id, status, no id),
then the trace (`id: <seq>`, `event: <type>`, `data: {seq, ts, type, data}`),
ending with `event: done` (status, result, error).  `Last-Event-ID` or
`?after=<seq>` resumes exactly after that event.  A client that falls too far
behind gets `event: lagged` with the seq to resume from.  Closing the stream
never stops the run."""


@router.get(
    "/{run_id}/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": STREAM_DOC},
        **error_responses(400, 401, 403, 404),
    },
    response_class=EventSourceResponse,
    summary="Follow a run: replay, then live",
)
async def stream_run(
    run_id: str,
    request: Request,
    caller: CallerDep,
    gateway: GatewayDep,
    after: Annotated[str | None, Query(description="Resume after this seq.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    after_seq = parse_resume_cursor(last_event_id, after)
    # Subscribe before the response starts, so 403/404 are real status codes.
    sub = await gateway.ask(Subscribe(caller=caller, run_id=run_id, after_seq=after_seq))
    heartbeat_s = request.app.state.settings.heartbeat_s
    return EventSourceResponse(run_stream(gateway, sub), **response_kwargs(heartbeat_s))
