"""Who is calling: the ``Authenticator``, the request dependencies, the session routes.

* **Tokens** are checked by :class:`Authenticator` in constant time (see
  :meth:`Authenticator.authenticate_token` for why it loops over every user);
  the users come from :mod:`runyard.web.users`.
* **Sessions** (:mod:`runyard.web.sessions`) let a browser authenticate its
  ``EventSource`` with a cookie; removing a user from the configuration ends
  their sessions.
* **Same origin** (:mod:`runyard.web.same_origin`): a request that uses the cookie
  to change something must come from the server's own pages; the guard is
  middleware, so it covers every route.

Routes use :func:`require_caller` / :func:`require_admin` (or the
``CallerDep`` / ``AdminDep`` aliases).  ``create_app`` calls
:func:`install_auth` once (routes, the same-origin guard, and credential
redaction in uvicorn's logs: :mod:`runyard.web.log_redaction`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Final

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from runyard.actors.errors import NotAdmin
from runyard.actors.messages import Caller
from runyard.web.config import Settings
from runyard.web.errors import error_responses
from runyard.web.log_redaction import redact_credentials_in_logs
from runyard.web.models import WhoAmIResponse
from runyard.web.same_origin import SameOriginGuard, SameOriginRule
from runyard.web.sessions import IssuedSession, SessionSigner, load_or_create_secret
from runyard.web.timefmt import iso_utc
from runyard.web.users import User, hash_token, load_users

SESSION_COOKIE: Final = "runyard_session"

# --------------------------------------------------------------------------
# Authenticator


class Authenticator:
    """Maps a bearer token or a session cookie to a :class:`Caller`.

    ``same_origin`` is the rule under which a cookie may change things
    (``RUNYARD_PUBLIC_ORIGIN``); :func:`install_auth` enforces it.
    """

    def __init__(
        self,
        users: Iterable[User],
        sessions: SessionSigner,
        same_origin: SameOriginRule | None = None,
    ) -> None:
        self._users = tuple(users)
        self._by_id = {user.user_id: user for user in self._users}
        self.sessions = sessions
        self.same_origin = same_origin or SameOriginRule()

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> Authenticator:
        if settings.session_secret is not None:
            key = settings.session_secret.encode("utf-8")
        else:
            key = load_or_create_secret(settings.data_dir)
        return cls(
            load_users(settings),
            SessionSigner(key, clock=clock),
            SameOriginRule(public_origin=settings.public_origin),
        )

    @property
    def user_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def authenticate_token(self, token: str) -> Caller | None:
        """The caller whose token this is, in time that does not depend on the token.

        The presented token is hashed, then compared with *every* user's
        digest by ``hmac.compare_digest``, without stopping at a match.
        Hashing first gives equal-length inputs (comparing raw tokens would
        leak their length).  Looping over all users rather than looking the
        digest up in a dict: a dict lookup compares with ordinary ``==`` and
        bucket probing, whose timing depends on the stored digests; that
        would most likely be harmless (SHA-256 preimages are out of reach),
        but the loop needs no such argument, and with users from a config
        file (tens, maybe hundreds) it costs microseconds per request.
        """
        digest = hash_token(token)
        found: User | None = None
        for user in self._users:
            if hmac.compare_digest(digest, user.token_sha256):
                found = user
        return None if found is None else found.caller()

    def authenticate_session(self, cookie: str) -> Caller | None:
        """The caller of a valid session cookie whose user is still configured."""
        user_id = self.sessions.verify(cookie)
        user = None if user_id is None else self._by_id.get(user_id)
        return None if user is None else user.caller()

    def issue_session(self, caller: Caller) -> IssuedSession:
        return self.sessions.issue(caller.user_id)


# --------------------------------------------------------------------------
# FastAPI dependencies and the session routes


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def get_authenticator(request: Request) -> Authenticator:
    auth = getattr(request.app.state, "authenticator", None)
    if not isinstance(auth, Authenticator):
        raise RuntimeError("install_auth(app, authenticator) was not called")
    return auth


def _bearer_token(request: Request) -> str | None:
    """The ``Authorization: Bearer`` token; ``None`` without the header; 401 if malformed,
    400 if the header is sent more than once (which one counts would be a guess)."""
    headers = request.headers.getlist("authorization")
    if not headers:
        return None
    if len(headers) > 1:
        raise HTTPException(
            400, f"send one Authorization header, not {len(headers)}; which one counts is unclear"
        )
    header = headers[0]
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("malformed Authorization header; expected: Bearer <token>")
    return token


async def require_caller(request: Request) -> Caller:
    """The authenticated caller: ``Authorization: Bearer`` first, else the session cookie.

    ``async`` so FastAPI runs it on the loop, not in its thread pool (one
    SHA-256 and a few comparisons do not block).

    A bearer token that is present but wrong is a 401 even if a valid cookie
    is there too: explicit credentials that fail must not be papered over.
    """
    auth = get_authenticator(request)
    token = _bearer_token(request)
    if token is not None:
        caller = auth.authenticate_token(token)
        if caller is None:
            raise _unauthorized("invalid token")
        return caller
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        caller = auth.authenticate_session(cookie)
        if caller is None:
            raise _unauthorized("session expired or invalid; sign in again")
        return caller
    raise _unauthorized(
        "authentication required: send Authorization: Bearer <token> "
        "or sign in with POST /auth/session"
    )


CallerDep = Annotated[Caller, Depends(require_caller)]


async def require_admin(caller: CallerDep) -> Caller:
    """The caller, if an admin; 403 otherwise (introspection endpoints)."""
    if not caller.admin:
        raise NotAdmin("this endpoint is for admins only")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


class SessionInfo(BaseModel):
    user_id: str
    admin: bool
    expires_at: str
    """UTC ISO-8601 with ``Z``."""


router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/session",
    response_model=SessionInfo,
    responses=error_responses(401),
    summary="Exchange a bearer token for a session cookie",
)
async def create_session(request: Request, response: Response) -> SessionInfo:
    """Sets an HttpOnly, SameSite=Strict session cookie so EventSource requests authenticate.

    Only a bearer token is accepted here (not the cookie itself), so a
    session can never extend itself.  ``SameSite=Strict`` keeps the cookie
    from other sites, not from other ports of this host (same site); the
    same-origin guard (:mod:`runyard.web.same_origin`) covers those.
    """
    auth = get_authenticator(request)
    token = _bearer_token(request)
    if token is None:
        raise _unauthorized("send Authorization: Bearer <token> to start a session")
    caller = auth.authenticate_token(token)
    if caller is None:
        raise _unauthorized("invalid token")
    issued = auth.issue_session(caller)
    response.set_cookie(
        SESSION_COOKIE,
        issued.value,
        max_age=int(auth.sessions.ttl_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return SessionInfo(
        user_id=caller.user_id, admin=caller.admin, expires_at=iso_utc(issued.expires_at)
    )


@router.get(
    "/session",
    response_model=WhoAmIResponse,
    responses=error_responses(401),
    summary="Who am I: the caller's user id and admin flag",
)
async def read_session(caller: CallerDep) -> WhoAmIResponse:
    """The caller behind the bearer token or session cookie.

    The dashboard asks this after a reload (the cookie is HttpOnly, so the
    page cannot read who it belongs to) to know whose runs it shows and
    whether to offer the admin pages; probing an admin-only endpoint for a
    403 would answer the second question only, and noisily.
    """
    return WhoAmIResponse(user_id=caller.user_id, admin=caller.admin)


@router.delete("/session", status_code=204, summary="Sign out: clear the session cookie")
async def delete_session(request: Request) -> Response:
    """Clears the cookie; needs no credentials, so an expired session can always sign out."""
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def install_auth(app: FastAPI, authenticator: Authenticator) -> None:
    """Make ``authenticator`` what the dependencies use, mount ``/auth/session``,
    put the same-origin guard in front of every route (before the app starts),
    and keep credentials out of uvicorn's logs however the app is served."""
    app.state.authenticator = authenticator
    app.include_router(router)
    redact_credentials_in_logs()
    app.add_middleware(SameOriginGuard, rule=authenticator.same_origin, cookie_name=SESSION_COOKIE)
