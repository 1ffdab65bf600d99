"""``GET /docs``: the OpenAPI document, browsable, from files the package carries.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, which a server without
internet access (or a browser behind a strict proxy) cannot reach, so the app
turns it off and serves this page instead: FastAPI's HTML with the script
and stylesheet of the ``swagger-ui-dist`` release vendored under
``web/static/swagger-ui/`` (its licence beside them; ``VERSION`` there says
which release and how to update it).  The files are in the repository rather
than fetched at install time so that ``make run`` on a fresh clone stays one
command and works offline.

The page needs a caller, like the schema it shows (``/openapi.json``): in a
browser that is the dashboard's session cookie, which the page's own request
for the schema then carries too.  Its Content-Security-Policy allows scripts
from this origin and the page's one inline script only (by hash), and
connections to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from runyard.web.auth import CallerDep
from runyard.web.errors import error_responses

ASSETS: Final = "/static/swagger-ui"

router = APIRouter(include_in_schema=False)


def _page() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="runyard API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        # null: no badge fetched from the public online validator.
        swagger_ui_parameters={"validatorUrl": None, "deepLinking": True},
    )


def _inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions for the page's inline ``<script>`` bodies."""
    bodies = re.findall(rb"<script>(.*?)</script>", html, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in bodies
    ]


_BODY: Final = bytes(_page().body)
_CSP: Final = (
    "default-src 'self'; "
    f"script-src 'self' {' '.join(_inline_script_hashes(_BODY))}; "
    # Swagger UI's React components set style attributes.
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/docs", responses=error_responses(401))
async def api_docs(caller: CallerDep) -> Response:
    return HTMLResponse(_BODY, headers=_HEADERS)
