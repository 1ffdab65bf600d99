"""Request and response models: the HTTP API's contract, as the OpenAPI schema shows it.

Responses that carry whole traces are assembled by :mod:`runyard.web.wire` for
speed; the models here still declare their shape so ``/openapi.json`` is
complete.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["running", "success", "error", "stopped"]

MAX_DURATION_S = 7 * 24 * 3600.0


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
    agent: str = Field(min_length=1, max_length=64, description="A catalog agent's name.")
    input_dict: dict[str, Any] = Field(default_factory=dict, description="The agent's input.")
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_S,
        description="Wall-time limit; past it the run ends as `error` (timed out).",
    )
    restart: RestartModel | None = Field(
        default=None, description="Restart policy for crashes; default: never restart."
    )


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


class RunDetail(RunSummaryModel):
    owner: str
    input_dict: dict[str, Any]
    result: Any = None
    options: dict[str, Any]
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


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: dict[str, Any] = Field(default_factory=dict)
