"""Health, readiness, the agent catalog and the operators' registry view."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runyard.actors.asyncio_actor import ask
from runyard.actors.membership import ListMembers, MemberInfo
from runyard.actors.messages import CheckHealth, Health, Introspect, RegistrySnapshot
from runyard.web.auth import AdminDep, CallerDep
from runyard.web.errors import error_responses
from runyard.web.gateway import GatewayDep
from runyard.web.loop_monitor import LoopMonitor, rss_bytes
from runyard.web.models import AgentModel, HealthResponse, LiveRunModel, NodeModel, RegistryView
from runyard.web.version import package_version

router = APIRouter()


# The probes answer HEAD too (same status and headers, no body: the HTTP server
# drops it), for balancers that probe with HEAD; kept out of the schema, whose
# operation ids must be unique per route.
@router.get(
    "/healthz",
    response_model=HealthResponse,
    tags=["ops"],
    summary="Process is up, and its version",
)
@router.head("/healthz", include_in_schema=False)
async def healthz() -> HealthResponse:
    """Open without a token: it says nothing but "this process answers" and which
    release it is (``detail.version``, the installed package's version)."""
    return HealthResponse(status="ok", detail={"version": package_version()})


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Not ready"}},
    tags=["ops"],
    summary="Registry and store answering",
)
@router.head("/readyz", include_in_schema=False)
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """503 while shutting down or while the store does not answer (writes are then queued)."""
    try:
        health: Health = await gateway.runtime.ask(CheckHealth(), timeout=5.0)
    except Exception as exc:
        return JSONResponse(
            HealthResponse(status="unavailable", detail={"registry": repr(exc)}).model_dump(),
            status_code=503,
        )
    store = health.store
    detail = {
        "accepting": health.accepting,
        "live_runs": health.live_runs,
        "store": None
        if store is None
        else {
            "up": store.up,
            "backlog": store.backlog,
            "last_error": store.last_error,
        },
    }
    ready = health.accepting and (store is None or store.up)
    return JSONResponse(
        HealthResponse(status="ok" if ready else "unavailable", detail=detail).model_dump(),
        status_code=200 if ready else 503,
    )


@router.get(
    "/agents",
    response_model=list[AgentModel],
    responses=error_responses(401),
    tags=["runs"],
    summary="The agents a run can be started with",
)
async def list_agents(caller: CallerDep, gateway: GatewayDep) -> list[AgentModel]:
    return [
        AgentModel(
            name=e.name,
            description=" ".join(e.description.split()),
            input_schema=e.inputs.json_schema(),
        )
        for e in gateway.runtime.catalog
    ]


@router.get(
    "/ops/registry",
    response_model=RegistryView,
    responses=error_responses(401, 403),
    tags=["ops"],
    summary="What is alive right now (admins only)",
)
async def ops_registry(request: Request, admin: AdminDep, gateway: GatewayDep) -> RegistryView:
    snap: RegistrySnapshot = await gateway.ask(Introspect(caller=admin))
    monitor: LoopMonitor = request.app.state.loop_monitor
    runtime = gateway.runtime
    members: tuple[MemberInfo, ...] = ()
    if runtime.membership is not None:
        members = await ask(runtime.membership, ListMembers(), timeout=5.0)
    return RegistryView(
        node_id=runtime.config.node_id,
        nodes=[NodeModel(**dataclasses.asdict(m)) for m in members],
        runs_by_status=snap.runs_by_status,
        live=[
            LiveRunModel(
                run_id=r.run_id,
                owner=r.owner,
                agent=r.agent,
                age_s=round(r.age_s, 3),
                trace_length=r.trace_length,
                unstored_bytes=r.unstored_bytes,
                subscribers=r.subscribers,
                stopping=r.stopping,
            )
            for r in snap.live
        ],
        cached_finished=snap.cached_finished,
        persistence_backlog=snap.persistence_backlog,
        accepting=snap.accepting,
        event_loop_lag_ms=round(monitor.lag_s * 1000, 3),
        rss_bytes=rss_bytes(),
        uptime_s=round(monitor.uptime_s, 3),
    )
