"""The baseline: the simplest correct design of the same API, without actors.

A dict of runs, one asyncio task per run, one ``asyncio.Queue`` per
subscriber, FastAPI + sse-starlette.  It serves what the benchmarks use of
runyard's API with the same wire format and the same agents:

* ``POST /runs`` -> 202 ``{"run_id", "status"}``
* ``GET /runs/{id}`` -> the run with its events
* ``GET /runs/{id}/stream`` -> ``event: run`` first, then ``id: seq`` /
  ``event: type`` / ``data: {seq, ts, type, data}`` frames, ``done`` last;
  ``Last-Event-ID`` or ``?after=`` resumes after that seq.
* ``GET /healthz``, ``GET /readyz`` (live run count)

Bearer tokens come from ``RUNYARD_TOKENS`` (``user:token[:admin],...``), the
same variable runyard reads.  It is written the way a competent engineer
would write it in an afternoon: each frame is ``json.dumps``-ed per
subscriber and sent as its own SSE event; nothing is batched or pre-encoded.
Resume is exact because the replay snapshot and joining the subscriber set
happen in one synchronous step on the loop.  There is no store and no cap.

``uvicorn --factory bench.baseline_app:create_app``
"""

# No `from __future__ import annotations`: FastAPI must see the local dependency objects.

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from bench.agents import bench_catalog
from runyard.actors.agents import AgentCatalog
from runyard.actors.context import StopRequested
from runyard.actors.loop_budget import SLICE_S, turn_spent


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Run:
    def __init__(self, run_id: str, owner: str, agent: str, input_dict: dict[str, Any]) -> None:
        self.run_id = run_id
        self.owner = owner
        self.agent = agent
        self.input = input_dict
        self.status = "running"
        self.result: Any = None
        self.error: str | None = None
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.events: list[dict[str, Any]] = []
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.task: asyncio.Task[None] | None = None

    def add_event(self, type_: str, data: dict[str, Any]) -> int:
        seq = len(self.events) + 1
        event = {"seq": seq, "ts": iso(time.time()), "type": type_, "data": data}
        self.events.append(event)
        self.publish(event)
        return seq

    # The hooks below are where the durable baseline (bench.durable_app) differs:
    # here everything is visible the moment it happens.

    def publish(self, event: dict[str, Any]) -> None:
        """Hand a new event to its readers: at once, there being no store."""
        for queue in self.subscribers:
            queue.put_nowait(event)

    @property
    def visible(self) -> int:
        """How many events readers may see (``GET``, replay)."""
        return len(self.events)

    @property
    def live(self) -> bool:
        """Readers may not see the end yet: a new subscriber waits for more."""
        return self.status == "running"

    async def stored(self) -> None:
        """Return once the start may be acknowledged: at once, there being no store."""

    def ended(self) -> None:
        """The ``done`` event is added: end every subscriber's stream."""
        self.close()

    def close(self) -> None:
        for queue in self.subscribers:
            queue.put_nowait(None)
        self.subscribers.clear()

    def delivers(self, event: dict[str, Any], after: int) -> bool:
        """Whether a live ``event`` goes to a subscriber that resumed ``after`` a seq.

        The plain baseline sends every event past the replay snapshot, even
        to one that resumed past the end; the durable one skips those.
        """
        return True

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "status": self.status,
            "owner": self.owner,
            "started_at": iso(self.started_at),
            "finished_at": None if self.finished_at is None else iso(self.finished_at),
            "event_count": len(self.events),
            "input_dict": self.input,
            "result": self.result,
            "error": self.error,
            "events": self.events,
        }


class Ctx:
    """What an agent sees: emit, ready, pace, stopping, check_stop, sleep."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._stop = asyncio.Event()
        self.run_id = run.run_id
        self.user_id = run.owner
        self.attempt = 0

    def emit(self, type_: str, /, **data: Any) -> int:
        return self._run.add_event(type_, data)

    async def ready(self) -> None:
        await asyncio.sleep(0)  # nothing to wait for: no store

    async def pace(self) -> None:
        # The same shared per-turn budget as runyard's ctx, so both pace alike.
        if turn_spent() >= SLICE_S:
            await self.ready()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def check_stop(self) -> None:
        if self._stop.is_set():
            raise StopRequested

    async def sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            raise StopRequested
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return
        raise StopRequested


class StartRunRequest(BaseModel):
    agent: str = Field(min_length=1, max_length=64)
    input_dict: dict[str, Any] = Field(default_factory=dict)


def parse_tokens(value: str) -> dict[str, str]:
    tokens = {}
    for entry in value.split(","):
        parts = entry.strip().split(":")
        if len(parts) >= 2:
            tokens[parts[1]] = parts[0]
    return tokens


def create_app(
    catalog: AgentCatalog | None = None, tokens: dict[str, str] | None = None
) -> FastAPI:
    return build_app("baseline", Run, catalog, tokens)


def build_app(
    title: str,
    new_run: Callable[[str, str, str, dict[str, Any]], Run],
    catalog: AgentCatalog | None = None,
    tokens: dict[str, str] | None = None,
) -> FastAPI:
    """The API over runs made by ``new_run(run_id, owner, agent, input_dict)``.

    The run class's hooks (``publish``, ``visible``, ``live``, ``stored``,
    ``ended``, ``delivers``) decide when readers see what; the HTTP side is
    the same for the plain and the durable baseline.
    """
    catalog = catalog or bench_catalog()
    users = tokens if tokens is not None else parse_tokens(os.environ.get("RUNYARD_TOKENS", ""))
    runs: dict[str, Run] = {}
    app = FastAPI(title=title)

    async def caller(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        user = users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(401, "invalid or missing token")
        return user

    def owned(run_id: str, user: str) -> Run:
        run = runs.get(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        if run.owner != user:
            raise HTTPException(403, "not your run")
        return run

    async def supervise(run: Run, ctx: Ctx) -> None:
        try:
            run.result = await catalog.get(run.agent)(run.input, ctx)  # type: ignore[arg-type]
            run.status = "success"
        except StopRequested:
            run.status = "stopped"
        except Exception as exc:
            run.status = "error"
            run.error = f"{type(exc).__name__}: {exc}"
        run.finished_at = time.time()
        run.add_event("done", {"status": run.status, "result": run.result, "error": run.error})
        run.ended()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        live = sum(1 for r in runs.values() if r.status == "running")
        return {"status": "ok", "detail": {"live_runs": live}}

    @app.post("/runs", status_code=202)
    async def start_run(
        body: StartRunRequest, user: Annotated[str, Depends(caller)]
    ) -> JSONResponse:
        if body.agent not in catalog:
            raise HTTPException(400, f"unknown agent {body.agent!r}")
        run = new_run(uuid.uuid4().hex, user, body.agent, body.input_dict)
        runs[run.run_id] = run
        run.task = asyncio.create_task(supervise(run, Ctx(run)))
        await run.stored()
        return JSONResponse(
            {"run_id": run.run_id, "status": "running"},
            status_code=202,
            headers={"Location": f"/runs/{run.run_id}"},
        )

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, user: Annotated[str, Depends(caller)]) -> JSONResponse:
        return JSONResponse(owned(run_id, user).as_json())

    @app.get("/runs/{run_id}/stream")
    async def stream_run(
        run_id: str,
        user: Annotated[str, Depends(caller)],
        after: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> EventSourceResponse:
        run = owned(run_id, user)
        raw = last_event_id or after or "0"
        if not raw.isdigit():
            raise HTTPException(400, "Last-Event-ID / after must be an event seq")
        return EventSourceResponse(
            follow(run, int(raw)),
            ping=10,
            sep="\n",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def follow(run: Run, after: int) -> Any:
        # Snapshot of the visible part and subscribe in one step (no await
        # between): exact resume.
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        replay = run.events[after : run.visible]
        live = run.live
        if live:
            run.subscribers.add(queue)
        try:
            status = "running" if live else run.status
            yield {
                "event": "run",
                "data": dumps({"run_id": run.run_id, "status": status, "after": after}),
            }
            for event in replay:
                yield {"id": str(event["seq"]), "event": event["type"], "data": dumps(event)}
            while live:
                item = await queue.get()
                if item is None:
                    break
                if not run.delivers(item, after):
                    continue
                yield {"id": str(item["seq"]), "event": item["type"], "data": dumps(item)}
        finally:
            run.subscribers.discard(queue)

    return app
