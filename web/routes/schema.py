"""``GET /openapi.json``: the API's schema, behind a token like everything else.

FastAPI serves the schema and its HTML viewers openly by default; runyard's
rule is that nothing but ``/healthz`` (and the dashboard's static sign-in
shell) answers without a token, so the app turns those off and serves the
schema here.  The HTML viewers load their scripts from a CDN, which a
locked-down deployment cannot reach anyway.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from runyard.web.auth import CallerDep
from runyard.web.errors import error_responses

router = APIRouter()


@router.get(
    "/openapi.json",
    include_in_schema=False,
    responses=error_responses(401),
)
async def openapi_schema(request: Request, caller: CallerDep) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
