"""``/runs``: start, list, read, stop, delete runs (streams: :mod:`runyard.web.routes.stream`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from runyard.actors.messages import DeleteRun, ListRuns, ReadRun, RestartPolicy, StartRun, StopRun
from runyard.actors.output_schema import check_schema
from runyard.actors.records import Event, RunRecord
from runyard.actors.stored_replay import StoredReplay
from runyard.web.auth import CallerDep
from runyard.web.errors import error_responses
from runyard.web.gateway import GatewayDep, gateway_of
from runyard.web.models import (
    RunDetail,
    RunListResponse,
    RunStartedResponse,
    StartRunRequest,
    Status,
    StopResponse,
    workspace_query,
)
from runyard.web.wire import event_json, record_head, record_json, summary_dict

router = APIRouter(prefix="/runs", tags=["runs"])

LARGE_TRACE = 2_000
"""Above this many events, a run's JSON is encoded in a worker thread (~2.5 ms of loop time)."""


@router.post(
    "",
    status_code=202,
    response_model=RunStartedResponse,
    responses=error_responses(400, 401, 403, 413, 422, 429, 503),
    summary="Start a catalog agent in the background",
)
async def start_run(body: StartRunRequest, caller: CallerDep, request: Request) -> JSONResponse:
    """Answers at once with the `run_id`; the run goes on whether or not anyone watches.

    With `workspace`, the run is shared with that workspace (403 if you are not a member).
    """
    gateway = gateway_of(request)  # not a dependency here: see gateway_of
    if body.output_schema is not None:  # slow for a big schema: not on the loop (then cached)
        await asyncio.to_thread(check_schema, body.output_schema)
    restart = None
    if body.restart is not None:
        restart = RestartPolicy(body.restart.max_restarts, body.restart.backoff_s)
    started = await gateway.ask(
        StartRun(
            caller=caller,
            agent=body.agent,
            input=body.input_dict,
            max_duration_s=body.max_duration_s,
            restart=restart,
            output_schema=body.output_schema,
            workspace=body.workspace,
        )
    )
    # A plain JSONResponse: this is the hottest route, and the model above
    # documents the shape without validating our own output on every call.
    return JSONResponse(
        {"run_id": started.run_id, "status": started.status},
        status_code=202,
        headers={"Location": f"/runs/{started.run_id}"},
    )


@router.get(
    "",
    response_model=RunListResponse,
    responses=error_responses(400, 401, 403, 422),
    summary="List your runs and your workspaces' runs, newest first",
)
async def list_runs(
    caller: CallerDep,
    gateway: GatewayDep,
    status: Annotated[Status | None, Query(description="Only runs with this status.")] = None,
    agent: Annotated[str | None, Query(max_length=64, description="Only this agent.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    workspace: Annotated[str | None, workspace_query()] = None,
) -> JSONResponse:
    """Your own runs and those shared with your workspaces; `workspace` keeps one
    workspace's runs only (403 if you are not a member)."""
    page = await gateway.ask(
        ListRuns(
            caller=caller,
            status=status,
            agent=agent,
            limit=limit,
            cursor=cursor,
            workspace=workspace,
        )
    )
    return JSONResponse(
        {"runs": [summary_dict(s) for s in page.runs], "next_cursor": page.next_cursor}
    )


@router.get(
    "/{run_id}",
    response_model=RunDetail,
    responses=error_responses(401, 403, 404),
    summary="A run's record: status, events, result, error",
)
async def get_run(run_id: str, caller: CallerDep, gateway: GatewayDep) -> Response:
    """Live, recently finished or long finished (from the store): the same answer."""
    found = await gateway.ask(ReadRun(caller=caller, run_id=run_id))
    if isinstance(found, StoredReplay):
        # Only the store holds it: written in pages as they are read, never whole.
        return StreamingResponse(_paged_record(found), media_type="application/json")
    record: RunRecord = found
    if len(record.events) > LARGE_TRACE:
        # 100,000 events take ~125 ms to encode: not on the loop every run shares.
        body = await asyncio.to_thread(record_json, record)
    else:
        body = record_json(record)
    return Response(body, media_type="application/json")


@router.post(
    "/{run_id}/stop",
    status_code=202,
    response_model=StopResponse,
    responses=error_responses(401, 403, 404, 409),
    summary="Stop a run: cooperative first, cancelled after the grace period",
)
async def stop_run(run_id: str, caller: CallerDep, gateway: GatewayDep) -> StopResponse:
    """202 means the stop is under way; the run's stream ends with `done` status `stopped`.

    A run that already finished answers 409 saying how it finished.
    """
    accepted = await gateway.ask(StopRun(caller=caller, run_id=run_id))
    return StopResponse(run_id=accepted.run_id, status="stopping")


@router.delete(
    "/{run_id}",
    status_code=204,
    responses=error_responses(401, 403, 404, 409),
    summary="Delete a finished run from memory and from the store",
)
async def delete_run(run_id: str, caller: CallerDep, gateway: GatewayDep) -> Response:
    """A running run answers 409: stop it first."""
    await gateway.ask(DeleteRun(caller=caller, run_id=run_id))
    return Response(status_code=204)


async def _paged_record(replay: StoredReplay) -> AsyncIterator[bytes]:
    """A stored run's JSON: its head, then its events a page at a time, then ``]}``."""
    yield record_head(replay.header, replay.end_seq).encode()
    first = True
    while True:
        items = await replay.next_batch()
        events = [item for item in items if isinstance(item, Event)]
        if events:
            text = ",".join(map(event_json, events))
            yield (text if first else "," + text).encode()
            first = False
        if not items or len(events) < len(items):  # the end (or a shutdown)
            break
    yield b"]}"
