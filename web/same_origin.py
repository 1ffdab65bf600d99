"""The cross-site request forgery guard: the session cookie changes things only from our own pages.

``SameSite=Strict`` keeps the session cookie off requests from *other sites*,
but a site is a scheme and a host, not a port: a page on another port of the
same host (``http://127.0.0.1:9000`` against ``http://127.0.0.1:8000``) is
same-site, so the browser attaches the cookie to its ``no-cors`` fetches and
plain form POSTs.  Without this guard such a page could stop, start or
delete a signed-in user's runs.

The rule (:meth:`SameOriginRule.refusal`), for a request that carries the
session cookie, has no ``Authorization`` header, and uses a method other than
GET, HEAD or OPTIONS:

1. ``Origin`` present: it must equal the server's own origin.  ``Origin:
   null`` (sandboxed frames, ``data:`` pages) never does.
2. No ``Origin``: ``Sec-Fetch-Site`` must be ``same-origin`` or ``none``
   (``none``: the user started it, from the address bar or a bookmark).
3. Neither header: refused.  Every current browser sends ``Origin`` on such
   requests, so only a non-browser client that replays the cookie lands here,
   and that client can send ``Authorization: Bearer <token>`` (or ``Origin``)
   instead; refusing costs it one header, accepting would make the guard
   depend on a browser never leaving the header out.

Bearer-token clients are never affected: a page cannot make a browser send an
``Authorization`` header to another origin (that needs a CORS preflight,
which this server never grants), so a request that carries one is not a
forgery.  Requests without the cookie are left to the routes (a 401 says how
to authenticate).

The server's own origin is ``RUNYARD_PUBLIC_ORIGIN`` when set.  Otherwise it
is read from the request as a reverse proxy presents it: the scheme from
``X-Forwarded-Proto`` (else the one uvicorn saw, which is already the
forwarded one when uvicorn trusts the proxy), the host and port from
``X-Forwarded-Host`` (else ``Host``).  Taking those headers at face value is
safe *for this check*: a page cannot set ``Host`` or ``X-Forwarded-*`` on a
request its browser sends to us, so they name the server the browser
addressed; a client that can set them can set ``Origin`` too and is not what
this guards against.  A proxy that rewrites ``Host`` (nginx's ``$host``
drops the port) makes honest requests fail closed, never forged ones pass;
the 403 message names the origins compared and the setting that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.web.errors import error_response
from runyard.web.origins import normalize_origin

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing here; every other method is checked."""

TRUSTED_FETCH_SITES: Final = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values accepted when ``Origin`` is absent."""

REFUSED_CODE: Final = "cross_origin_refused"
_SHOWN_MAX: Final = 100


def _first(value: str | None) -> str | None:
    """The first entry of a comma-separated forwarding header (the client-facing proxy's)."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


@dataclass(frozen=True, slots=True)
class SameOriginRule:
    """Whether a request may use the session cookie to change something; see the module doc.

    ``public_origin``: the origin browsers reach the server at
    (``RUNYARD_PUBLIC_ORIGIN``, already normalized), or ``None`` to read it
    from each request.
    """

    public_origin: str | None = None

    def own_origin(self, headers: Headers, scheme: str) -> str | None:
        """This server's origin as the browser addressed it; ``None`` if the headers do not say."""
        if self.public_origin is not None:
            return self.public_origin
        host = _first(headers.get("x-forwarded-host")) or headers.get("host")
        if not host:
            return None
        proto = _first(headers.get("x-forwarded-proto")) or scheme
        return normalize_origin(f"{proto}://{host}")

    def refusal(self, method: str, headers: Headers, scheme: str, has_cookie: bool) -> str | None:
        """``None`` if the request may go on, else the 403 message (what to do instead)."""
        if method.upper() in SAFE_METHODS or not has_cookie or "authorization" in headers:
            return None
        own = self.own_origin(headers, scheme)
        origin = headers.get("origin")
        if origin is not None:
            if own is not None and normalize_origin(origin) == own:
                return None
            return self._mismatch(origin, own)
        site = headers.get("sec-fetch-site")
        if site is not None:
            if site.strip().lower() in TRUSTED_FETCH_SITES:
                return None
            return (
                f"refused: this {method} request uses the runyard session cookie but comes "
                f"from a page of another origin (Sec-Fetch-Site: {_shown(site)}), which "
                "cannot act with your session. Use the runyard dashboard itself, or send "
                "Authorization: Bearer <token>."
            )
        return (
            f"refused: this {method} request uses the runyard session cookie but says neither "
            "where it comes from (no Origin header) nor Sec-Fetch-Site, so it cannot be told "
            "from a cross-site forgery. Browsers send Origin themselves; a script should send "
            "Authorization: Bearer <token> instead of the cookie"
            + (f" (or Origin: {own})." if own else ".")
        )

    def _mismatch(self, origin: str, own: str | None) -> str:
        if own is None:
            return (
                f"refused: this request uses the runyard session cookie from {_shown(origin)}, "
                "and the server cannot tell its own origin (no Host header). Set "
                "RUNYARD_PUBLIC_ORIGIN to the address browsers use, or send "
                "Authorization: Bearer <token>."
            )
        return (
            f"refused: a page at {_shown(origin)} may not use the runyard session cookie of "
            f"{own} (cross-site request forgery guard). Use the runyard dashboard at {own}, "
            f"or send Authorization: Bearer <token>. If {own} is not the address in your "
            "browser, the server sits behind a proxy that hides it: set RUNYARD_PUBLIC_ORIGIN "
            "to that address (or have the proxy pass Host, X-Forwarded-Proto and "
            "X-Forwarded-Host)."
        )


def _shown(value: str) -> str:
    """A header value for a message: quoted, cut short (it is the client's text)."""
    text = value if len(value) <= _SHOWN_MAX else value[: _SHOWN_MAX - 3] + "..."
    return repr(text)


class SameOriginGuard:
    """ASGI middleware: a 403 ``cross_origin_refused`` for what :class:`SameOriginRule` refuses.

    Pure ASGI (not ``BaseHTTPMiddleware``) so streams pass through untouched;
    it runs before routing and body parsing, so every route, present and
    future, is covered and a refused request is never read.
    """

    def __init__(self, app: ASGIApp, *, rule: SameOriginRule, cookie_name: str) -> None:
        self.app = app
        self.rule = rule
        self.cookie_name = cookie_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            conn = HTTPConnection(scope)
            message = self.rule.refusal(
                scope["method"],
                conn.headers,
                str(scope.get("scheme", "http")),
                has_cookie=bool(conn.cookies.get(self.cookie_name)),
            )
            if message is not None:
                await error_response(403, REFUSED_CODE, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
