"""The ``Allow`` header of a 405: every method the path answers to, not one route's.

Starlette answers a wrong method with the ``Allow`` of the first route whose
path matched; a path served by several routes (``GET /runs`` and
``POST /runs`` are two) then seems to allow one method.  RFC 9110 asks for
the full list, so each method is tried against the app's routes, as the
router itself would (``BaseRoute.matches``): FastAPI's included routers do
not expose their routes' methods, but they do answer ``matches``.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.routing import Match

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str] | None:
    """The methods a route of the app serves at this request's path, in :data:`METHODS`
    order; None when a mount (static files) answers every method itself."""
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return None if len(allowed) == len(METHODS) else allowed
