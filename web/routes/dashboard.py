"""The browser dashboard: a static shell (``web/static/``) served at ``/``.

The shell holds no data, so it needs no authentication; everything it shows
comes from the authenticated API (session cookie from ``POST /auth/session``).
Client-side pages have real URLs (``/ui/runs/{run_id}``, ``/ui/admin``) that
all answer ``index.html``, so a run page can be bookmarked and reopened.

Starlette's ``StaticFiles`` serves the files, ``index.html`` included: it
confines paths to the directory, sets ``ETag``/``Last-Modified`` and answers
a matching ``If-None-Match`` with 304.  Every response here adds
``Cache-Control: no-cache``: the browser revalidates (a cheap 304) and never
runs a stale script against a newer API after an upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"

_COMMON_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}

# The page only ever talks to its own origin; run data is rendered as text,
# and this policy is the second line of defence should that ever slip.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)

_INDEX_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "no-referrer",  # a ?token= URL must never leak
}


class ShellFiles(StaticFiles):
    """``StaticFiles`` whose answers (200 and 304 alike) carry :data:`_COMMON_HEADERS`."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_COMMON_HEADERS)
        return response


_files: Final = ShellFiles(directory=STATIC_DIR)

router = APIRouter(include_in_schema=False)


async def _index(request: Request) -> Response:
    response = await _files.get_response("index.html", request.scope)
    response.headers.update(_INDEX_HEADERS)
    return response


@router.get("/")
async def index(request: Request) -> Response:
    return await _index(request)


@router.get("/ui")
@router.get("/ui/{path:path}")
async def client_page(request: Request, path: str = "") -> Response:
    """Client-side routes (``/ui/runs/{run_id}``, ``/ui/admin``): the same shell."""
    return await _index(request)


def install_dashboard(app: FastAPI) -> None:
    """Serve the shell at ``/`` and ``/ui/...``, and the files under ``/static``.

    The files are mounted on the app itself: FastAPI drops a ``Mount`` made
    on an ``APIRouter`` when the router is included.
    """
    app.include_router(router)
    app.mount("/static", _files, name="static")
