"""Request and response models: the HTTP API's contract, as the OpenAPI schema shows it.

Responses that carry whole traces are assembled by :mod:`runyard.web.wire` for
speed; the models here still declare their shape so ``/openapi.json`` is
complete.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from runyard.actors.access import WORKSPACE_ID_PATTERN
from runyard.web.json_text import JSONObject, Text

Status = Literal["running", "success", "error", "stopped"]

MAX_DURATION_S = 7 * 24 * 3600.0


def output_schema_field() -> Any:
    """The ``output_schema`` field of the start requests (a fresh ``Field`` per model)."""
    return Field(
        default=None,
        description="A JSON Schema (an object; Draft 2020-12 unless `$schema` names another) "
        "the result is checked against when the run succeeds. Mismatches become the record's "
        "`schema_warnings`; the status stays `success`. An invalid schema, or one over 64 KiB "
        "of JSON, is refused with 422 `invalid_output_schema` before a run exists.",
    )


WORKSPACE_PATTERN = f"^{WORKSPACE_ID_PATTERN.pattern}$"
"""A workspace id as the API takes it (a malformed one is a 422 before anything runs)."""


def workspace_field() -> Any:
    """The ``workspace`` field of the start requests (a fresh ``Field`` per model)."""
    return Field(
        default=None,
        pattern=WORKSPACE_PATTERN,
        description="Start the run in this workspace: its members can list, read and stream "
        "it, its admins stop and delete it (you must be a member: 403 otherwise). "
        "Omitted: a personal run.",
    )


def workspace_query() -> Any:
    """The ``?workspace=`` filter of the run list and the feed (a fresh ``Query`` each)."""
    return Query(
        pattern=WORKSPACE_PATTERN,
        description="Only the runs of this workspace (you must be a member: 403 otherwise).",
    )


class RestartModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_restarts: int = Field(ge=0, le=100, description="Restarts after a crash (0 = never).")
    backoff_s: float = Field(
        default=0.1, ge=0, le=3600, description="Wait before the first restart; doubles each time."
    )


class StartRunRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"agent": "ticker", "input_dict": {"n": 5}}]},
    )
    agent: Text = Field(min_length=1, max_length=64, description="A catalog agent's name.")
    input_dict: JSONObject = Field(default_factory=dict, description="The agent's input.")
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_S,
        description="Wall-time limit; past it the run ends as `error` (timed out).",
    )
    restart: RestartModel | None = Field(
        default=None, description="Restart policy for crashes; default: never restart."
    )
    output_schema: dict[str, Any] | None = output_schema_field()
    workspace: str | None = workspace_field()


class RunStartedResponse(BaseModel):
    run_id: str
    status: Status


class RunSummaryModel(BaseModel):
    run_id: str
    agent: str
    status: Status
    started_at: str = Field(description="UTC ISO-8601 with `Z`.")
    finished_at: str | None
    duration_s: float | None
    event_count: int
    error: str | None = Field(description="Why the run did not succeed: exception, limit, stop.")
    workspace: str | None = Field(
        default=None,
        description="The workspace the run is shared with; null for a personal run.",
    )
    """Defaulted, unlike its neighbours: a client of this version still decodes the
    answers of a node not upgraded yet (a rolling upgrade behind one address)."""


class RunListResponse(BaseModel):
    runs: list[RunSummaryModel]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class EventModel(BaseModel):
    seq: int = Field(description="1, 2, 3, ... within the run; the SSE `id`.")
    ts: str
    type: str
    data: dict[str, Any]


class SchemaWarningModel(BaseModel):
    path: str = Field(description="JSON Pointer into the result (`/items/0/name`; `` for all).")
    message: str


class OpsTotalsModel(BaseModel):
    count: int = Field(description="Ops of this kind.")
    duration_s: float | None = Field(default=None, description="Their `duration_s`, summed.")
    tokens: float | None = Field(default=None, description="Their `tokens`, summed.")
    cost: float | None = Field(default=None, description="Their `cost`, summed.")


class RunDetail(RunSummaryModel):
    owner: str
    input_dict: dict[str, Any]
    result: Any = None
    options: dict[str, Any] = Field(
        description="What the run was started with: `max_duration_s`, `restart`, "
        "`output_schema`, and for run-code the submitted `code` (never its `env`)."
    )
    schema_warnings: list[SchemaWarningModel] | None = Field(
        description="Where a `success` result does not match `output_schema` (at most 50, "
        "then one entry with path `` saying more were left out); `[]`: it matches; "
        "null: not checked (no schema, or the run did not succeed)."
    )
    ops_log: dict[str, OpsTotalsModel] = Field(
        description="The run's `ctx.op` operations summed per kind, once it ended; "
        "a total is absent when no op of that kind gave it."
    )
    events: list[EventModel]


class StopResponse(BaseModel):
    run_id: str
    status: Literal["stopping"]


class LiveRunModel(BaseModel):
    run_id: str
    owner: str
    agent: str
    age_s: float
    trace_length: int
    unstored_bytes: int = Field(
        description="Event data the run emitted that the store has not acknowledged yet."
    )
    subscribers: int
    stopping: bool


class NodeModel(BaseModel):
    """One node sharing the store, as this node's membership sees its lease."""

    node_id: str
    state: str = Field(description="alive, stopped (drained and left) or taken_over.")
    lease_age_s: float = Field(description="Seconds since this node saw that lease renewed.")
    lease_s: float
    expired: bool = Field(description="Not renewed for lease_s: its live runs get taken over.")
    live_runs: int
    draining: bool
    taken_over_by: str | None = None


class RegistryView(BaseModel):
    node_id: str
    nodes: list[NodeModel] = Field(
        description="Every node sharing the store (CouchDB), this one included; "
        "empty for a single node on SQLite."
    )
    runs_by_status: dict[str, int]
    live: list[LiveRunModel]
    cached_finished: int
    persistence_backlog: int = Field(description="Records waiting for the store (-1: unknown).")
    accepting: bool
    event_loop_lag_ms: float
    rss_bytes: int
    uptime_s: float


class WhoAmIResponse(BaseModel):
    """The authenticated caller, as ``GET /auth/session`` reports it.

    ``admin`` is read from the current configuration at every request, so a
    client that shows admin pages should ask this rather than remember it.
    """

    user_id: str
    admin: bool = Field(description="Whether the caller may use the admin endpoints (`/ops/*`).")


class AgentModel(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any] = Field(
        description="The agent's input_dict as JSON Schema (Draft 2020-12): its declared "
        "numbers with their ranges and defaults; a start outside them is a 422 naming the field."
    )


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: dict[str, Any] = Field(default_factory=dict)
