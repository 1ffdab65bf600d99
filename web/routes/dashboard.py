"""The browser dashboard: a static shell (``web/static/``) served at ``/``.

The shell holds no data, so it needs no authentication; everything it shows
comes from the authenticated API (session cookie from ``POST /auth/session``).
Client-side pages have real URLs (``/ui/runs/{run_id}``, ``/ui/admin``) that
all answer ``index.html``, so a run page can be bookmarked and reopened.

Every response here says ``Cache-Control: no-cache``: the browser revalidates
(``If-None-Match`` -> 304, cheap) and never runs a stale script against a
newer API after an upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"

_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

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

router = APIRouter(include_in_schema=False)


def _file(request: Request, path: Path, headers: dict[str, str]) -> Response:
    """The file, or 304 when the browser's copy (``If-None-Match``) is current."""
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {**_COMMON_HEADERS, **headers, "ETag": etag}
    presented = request.headers.get("if-none-match", "")
    if etag in (tag.strip() for tag in presented.split(",")):
        return Response(status_code=304, headers=headers)
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers=headers,
        stat_result=stat,
    )


def _index(request: Request) -> Response:
    return _file(
        request,
        STATIC_DIR / "index.html",
        {
            "Content-Security-Policy": _CSP,
            "Referrer-Policy": "no-referrer",  # a ?token= URL must never leak
        },
    )


@router.get("/")
async def index(request: Request) -> Response:
    return _index(request)


@router.get("/ui")
@router.get("/ui/{path:path}")
async def client_page(request: Request, path: str = "") -> Response:
    """Client-side routes (``/ui/runs/{run_id}``, ``/ui/admin``): the same shell."""
    return _index(request)


@router.get("/static/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    root = STATIC_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise HTTPException(404, f"Not Found: {request.method} {request.url.path}")
    return _file(request, target, {})
