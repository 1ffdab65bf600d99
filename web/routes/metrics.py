"""``GET /metrics``: the Prometheus text format, for admins or the metrics token.

A scraper should not hold an admin's token (that one also reads
``/ops/registry`` and signs in to the dashboard), so ``RUNYARD_METRICS_TOKEN``
is a bearer token that opens this endpoint and nothing else: it names no
user, and every other route refuses it like any unknown token.  Admins may
read it too (token or session cookie), which is handy from a browser.

The numbers come from the app's own registry (:mod:`runyard.web.metrics`), built
when the app starts.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from runyard.actors.errors import NotAdmin
from runyard.web.auth import require_caller
from runyard.web.errors import error_responses

router = APIRouter(tags=["ops"])


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def require_metrics_reader(request: Request) -> None:
    """The metrics token as ``Authorization: Bearer``, else an admin caller.

    Compared in constant time (digests of equal length); a wrong token falls
    through to the ordinary check, which answers 401 "invalid token".
    """
    expected: str | None = request.app.state.settings.metrics_token
    header = request.headers.get("authorization")
    if expected is not None and header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            _digest(token.strip()), _digest(expected)
        ):
            return
    caller = await require_caller(request)
    if not caller.admin:
        raise NotAdmin("this endpoint is for admins and the metrics token (RUNYARD_METRICS_TOKEN)")


@router.get(
    "/metrics",
    dependencies=[Depends(require_metrics_reader)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **error_responses(401, 403),
    },
    response_class=Response,
    summary="Prometheus metrics (admins, or RUNYARD_METRICS_TOKEN)",
)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
