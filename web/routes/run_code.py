"""``/agents/run-code``: submit agent code; it runs in a child process, in the background.

Two ways in, one run: ``start`` answers 202 with the ``run_id`` at once;
``stream`` answers with the run's SSE stream (first frame ``event: run``
carrying the ``run_id``, so a client can come back with
``GET /runs/{run_id}/stream``).  Closing that stream only leaves the run's
subscriber set; the run goes on.

The code is checked here first (``compile()`` and ``ast``, never executed in
the server; long code is compiled in a child process, never on the loop): a
syntax error, a missing ``run`` or a ``run`` that is not ``async def`` is a
422 whose error names the ``line`` and the ``reason``; code longer than
``RUNYARD_MAX_CODE_CHARS`` is a 413 before anything compiles it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sse_starlette import EventSourceResponse

from runyard.actors.code.check_process import check_code_off_loop
from runyard.actors.code.validate import MAX_ENV_VARS, InvalidCode, env_problem
from runyard.actors.messages import Caller, RunStarted, StartRun, Subscribe
from runyard.actors.output_schema import check_schema
from runyard.web.auth import CallerDep
from runyard.web.errors import error_response, error_responses
from runyard.web.gateway import Gateway, GatewayDep
from runyard.web.json_text import JSONObject, Text
from runyard.web.models import (
    MAX_DURATION_S,
    RunStartedResponse,
    output_schema_field,
    workspace_field,
)
from runyard.web.sse import response_kwargs, run_stream

router = APIRouter(prefix="/agents/run-code", tags=["run-code"])

DEFAULT_AGENT_NAME = "run-code"

EXAMPLE_CODE = """import asyncio

async def run(input_dict, ctx):
    for i in range(input_dict.get("n", 3)):
        ctx.check_stop()
        print("step", i)
        ctx.emit("progress", step=i)
        await asyncio.sleep(0.1)
    return {"steps": input_dict.get("n", 3)}
"""


class RunCodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"code": EXAMPLE_CODE, "input_dict": {"n": 3}}]},
    )
    code: Text = Field(
        min_length=1,
        description="Python source defining `async def run(input_dict, ctx)`; at most "
        "`RUNYARD_MAX_CODE_CHARS` characters (256 Ki by default, else 413).",
    )
    input_dict: JSONObject = Field(
        default_factory=dict, description="Passed to `run` as its first argument."
    )
    agent_name: Text | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description=f"The name recorded on the run (default `{DEFAULT_AGENT_NAME}`).",
    )
    env: dict[Text, Text] = Field(
        default_factory=dict,
        max_length=MAX_ENV_VARS,
        description="The child process's environment variables (names like identifiers); "
        "the server's own environment is never passed on.",
    )
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_S,
        description="Wall-time limit; past it the child is killed and the run ends `error`.",
    )
    output_schema: dict[str, Any] | None = output_schema_field()
    workspace: str | None = workspace_field()

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        problem = env_problem(env)
        if problem is not None:
            raise ValueError(problem)
        return env


RESPONSES: dict[int | str, dict[str, Any]] = error_responses(400, 401, 403, 413, 422, 429, 503)
RESPONSES[422] = {
    **RESPONSES[422],
    "description": "The code is not a run-code agent: code `invalid_code`, and besides "
    "`message` the error carries `line` and `column` (1-based, null when the problem has no "
    "position) and `reason`.  Or another field is invalid: code `validation_error`.",
}


def invalid_code_response(exc: InvalidCode) -> JSONResponse:
    detail = {
        "code": exc.code,
        "message": exc.message,
        "line": exc.line,
        "column": exc.column,
        "reason": exc.reason,
    }
    return JSONResponse({"error": detail}, status_code=exc.http_status)


class CodeTooLong(Exception):
    """The code is over ``RUNYARD_MAX_CODE_CHARS``: answered 413 before it is compiled."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"code is {length} characters long, more than the limit of {limit} "
            "(RUNYARD_MAX_CODE_CHARS)"
        )


def refusal(exc: InvalidCode | CodeTooLong) -> Response:
    if isinstance(exc, CodeTooLong):
        return error_response(413, "payload_too_large", str(exc))
    return invalid_code_response(exc)


async def _start(
    body: RunCodeRequest, caller: Caller, gateway: Gateway, request: Request
) -> RunStarted:
    limit = request.app.state.settings.max_code_chars
    if len(body.code) > limit:
        raise CodeTooLong(len(body.code), limit)
    # Off the loop: compiling long code holds the GIL for a good fraction of a second.
    await check_code_off_loop(body.code)
    if body.output_schema is not None:  # slow for a big schema: not on the loop (then cached)
        await asyncio.to_thread(check_schema, body.output_schema)
    started: RunStarted = await gateway.ask(
        StartRun(
            caller=caller,
            agent=body.agent_name or DEFAULT_AGENT_NAME,
            input=body.input_dict,
            max_duration_s=body.max_duration_s,
            code=body.code,
            env=dict(body.env),
            output_schema=body.output_schema,
            workspace=body.workspace,
        )
    )
    return started


@router.post(
    "/start",
    status_code=202,
    response_model=RunStartedResponse,
    responses=RESPONSES,
    summary="Run submitted agent code in the background",
)
async def start_code_run(
    body: RunCodeRequest,
    caller: CallerDep,
    gateway: GatewayDep,
    request: Request,
    response: Response,
) -> Response | RunStartedResponse:
    """Answers at once with the `run_id`; follow it with `GET /runs/{run_id}/stream`."""
    try:
        started = await _start(body, caller, gateway, request)
    except (InvalidCode, CodeTooLong) as exc:
        return refusal(exc)
    response.headers["Location"] = f"/runs/{started.run_id}"
    return RunStartedResponse(run_id=started.run_id, status=started.status)


@router.post(
    "/stream",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The run's SSE stream, as `GET /runs/{run_id}/stream`: first "
            "`event: run` (run_id, status, agent), then the trace, ending with `event: done`. "
            "Closing it does not stop the run.",
        },
        **RESPONSES,
    },
    response_class=EventSourceResponse,
    summary="Run submitted agent code and follow it over SSE",
)
async def stream_code_run(
    body: RunCodeRequest, request: Request, caller: CallerDep, gateway: GatewayDep
) -> Response:
    """The streaming start: same body as `/start`, answered with the run's events."""
    try:
        started = await _start(body, caller, gateway, request)
    except (InvalidCode, CodeTooLong) as exc:
        return refusal(exc)
    # Subscribed from seq 0 before the response starts: nothing the run emits is missed.
    sub = await gateway.ask(Subscribe(caller=caller, run_id=started.run_id))
    heartbeat_s = request.app.state.settings.heartbeat_s
    frames = run_stream(gateway, sub, agent=body.agent_name or DEFAULT_AGENT_NAME)
    return EventSourceResponse(
        request.app.state.open_streams.track("run-code", frames),
        **response_kwargs(heartbeat_s),
    )
