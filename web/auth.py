"""Who is calling: users from configuration, bearer tokens, browser sessions.

Three parts, each small:

* **Users** come from ``RUNYARD_TOKENS`` (``user:token[:admin],...``) and/or
  ``RUNYARD_TOKENS_FILE`` (TOML ``[[users]]`` with ``id``, ``token`` or
  ``token_sha256``, ``admin``).  Malformed configuration is refused at start-up
  with a :class:`web.config.ConfigError` naming the entry, never the token.
  Only SHA-256 digests of tokens are kept in memory.
* **Tokens** are checked by :class:`Authenticator` in constant time (see
  :meth:`Authenticator.authenticate_token` for why it loops over every user).
* **Sessions** let a browser's ``EventSource`` (which cannot set headers)
  authenticate: ``POST /auth/session`` trades a bearer token for an HttpOnly,
  SameSite=Strict cookie holding an HMAC-signed ``(user_id, issued, expires)``.
  The HMAC key lives in ``<data_dir>/session.key`` (0600) so sessions survive
  restarts; deleting that file signs everyone out.  The cookie carries no
  privileges: the admin flag is read from the current configuration at every
  request, and removing a user from the configuration ends their sessions.

Routes use :func:`require_caller` / :func:`require_admin` (or the
``CallerDep`` / ``AdminDep`` aliases).  ``create_app`` calls
:func:`install_auth` once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from actors.errors import NotAdmin
from actors.messages import Caller
from web.config import ConfigError, Settings
from web.errors import error_responses
from web.timefmt import iso_utc

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "runyard_session"
SESSION_TTL_S: Final = 7 * 24 * 3600.0
SECRET_FILE_NAME: Final = "session.key"
LOCAL_ADMIN_ID: Final = "admin"
USER_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""User ids appear in URLs, logs and store queries: keep them plain."""

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")


# --------------------------------------------------------------------------
# Users


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    token_sha256: bytes = field(repr=False)
    admin: bool = False

    def caller(self) -> Caller:
        return Caller(user_id=self.user_id, admin=self.admin)


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: what is stored and compared."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens_env(value: str, source: str = "RUNYARD_TOKENS") -> list[User]:
    """``user:token[:admin],user2:token2`` -> users; blank entries are ignored.

    Error messages name the entry by position and user id and never echo a
    token (an entry without ``:`` might be a bare token, so it is not shown).
    """
    users = []
    for index, raw in enumerate(value.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        where = f"{source} entry {index}"
        parts = entry.split(":")
        if len(parts) == 1:
            raise ConfigError(f"{where} has no ':'; expected user:token or user:token:admin")
        user_id, token, *flags = parts
        where = f"{where} ({user_id!r})"
        if len(flags) > 1 or (flags and flags[0] != "admin"):
            raise ConfigError(
                f"{where}: expected user:token or user:token:admin "
                "(tokens cannot contain ':' or ',')"
            )
        users.append(_make_user(where, user_id, token=token, admin=bool(flags)))
    return users


def parse_tokens_toml(path: Path) -> list[User]:
    """Users from a TOML file of ``[[users]]`` (``id``, ``token``/``token_sha256``, ``admin``)."""
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"RUNYARD_TOKENS_FILE {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"RUNYARD_TOKENS_FILE {path}: not valid TOML: {exc}") from None
    return parse_users_document(document, f"RUNYARD_TOKENS_FILE {path}")


_USER_KEYS: Final = frozenset({"id", "token", "token_sha256", "admin"})


def parse_users_document(document: Mapping[str, Any], source: str) -> list[User]:
    """Validate a parsed TOML document; unknown keys are errors (a typo'd ``admn`` must fail)."""
    extra = set(document) - {"users"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected [[users]]")
    entries = document.get("users")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: expected one or more [[users]] tables")
    users = []
    for index, entry in enumerate(entries, start=1):
        where = f"{source}: users[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with id and token or token_sha256")
        if isinstance(entry.get("id"), str):
            where = f"{where} (id {entry['id']!r})"
        unknown = set(entry) - _USER_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise ConfigError(f"{where}: admin must be true or false")
        user_id = entry.get("id")
        if not isinstance(user_id, str):
            raise ConfigError(f"{where}: id is required and must be a string")
        token, digest = entry.get("token"), entry.get("token_sha256")
        if (token is None) == (digest is None):
            raise ConfigError(f"{where}: give exactly one of token or token_sha256")
        if token is not None and not isinstance(token, str):
            raise ConfigError(f"{where}: token must be a string")
        if digest is not None and not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
            raise ConfigError(
                f"{where}: token_sha256 must be 64 hex digits (sha256sum of the token)"
            )
        users.append(_make_user(where, user_id, token=token, token_sha256=digest, admin=admin))
    return users


def _make_user(
    where: str,
    user_id: str,
    *,
    token: str | None = None,
    token_sha256: str | None = None,
    admin: bool = False,
) -> User:
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise ConfigError(
            f"{where}: user id must be 1-64 characters of letters, digits, '_', '.', '@', '-' "
            "and start with a letter or digit"
        )
    if token_sha256 is not None:
        return User(user_id, bytes.fromhex(token_sha256), admin)
    if not token or token != token.strip() or any(ch.isspace() for ch in token):
        raise ConfigError(f"{where}: token must be non-empty and contain no whitespace")
    return User(user_id, hash_token(token), admin)


def load_users(settings: Settings) -> list[User]:
    """Users from both sources together; duplicate ids or shared tokens are refused.

    A token shared by two users could not say who is calling, and a
    duplicated id would silently keep one of two tokens.
    """
    users: list[User] = []
    if settings.tokens:
        users += parse_tokens_env(settings.tokens)
    if settings.tokens_file is not None:
        users += parse_tokens_toml(settings.tokens_file)
    by_id: dict[str, User] = {}
    by_digest: dict[bytes, User] = {}
    for user in users:
        if user.user_id in by_id:
            raise ConfigError(f"user {user.user_id!r} is configured more than once")
        other = by_digest.get(user.token_sha256)
        if other is not None:
            raise ConfigError(f"users {other.user_id!r} and {user.user_id!r} have the same token")
        by_id[user.user_id] = user
        by_digest[user.token_sha256] = user
    return users


def users_configured(settings: Settings) -> bool:
    return bool(settings.tokens) or settings.tokens_file is not None


def with_local_admin(settings: Settings) -> tuple[Settings, str | None]:
    """With no users configured, add one local admin with a fresh random token.

    Returns the settings to run with and the token to show the operator
    (``None`` when users were configured).  The token is new at every start,
    as Jupyter's is; it is never written to disk.
    """
    if users_configured(settings):
        return settings, None
    token = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: safe in RUNYARD_TOKENS and URLs
    local = settings.model_copy(update={"tokens": f"{LOCAL_ADMIN_ID}:{token}:admin"})
    return local, token


# --------------------------------------------------------------------------
# Sessions


def load_or_create_secret(data_dir: Path) -> bytes:
    """The session HMAC key from ``<data_dir>/session.key``, created 0600 if missing.

    Created under a temporary name and hard-linked into place, so two
    processes starting together agree on one key and nobody reads a
    half-written file.
    """
    path = data_dir / SECRET_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{SECRET_FILE_NAME}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ConfigError(
            f"{path}: expected a hex-encoded key; delete it to make a new one"
        ) from None
    if len(key) < 32:
        raise ConfigError(f"{path}: key is shorter than 32 bytes; delete it to make a new one")
    return key


@dataclass(frozen=True, slots=True)
class IssuedSession:
    value: str
    """The cookie value."""
    expires_at: float


class SessionSigner:
    """Signs and verifies session cookie values: ``v1.<user b64>.<issued>.<expires>.<mac b64>``.

    Stateless on purpose: no session table to persist or replicate; the
    price is that one session cannot be revoked alone (remove the user or
    rotate the key).
    """

    VERSION: Final = "v1"

    def __init__(
        self, key: bytes, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < 32:
            raise ValueError("session key must be at least 32 bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, user_id: str) -> IssuedSession:
        issued = int(self._clock())
        expires = issued + int(self.ttl_s)
        body = f"{self.VERSION}.{_b64(user_id.encode())}.{issued}.{expires}"
        return IssuedSession(f"{body}.{_b64(self._mac(body))}", float(expires))

    def verify(self, value: str) -> str | None:
        """The user id if ``value`` is ours, untampered and unexpired; else ``None``."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != self.VERSION:
            return None
        body, mac = ".".join(parts[:4]), parts[4]
        try:
            presented = _unb64(mac)
            user_id = _unb64(parts[1]).decode("utf-8")
            expires = int(parts[3])
        except ValueError:
            return None
        if not hmac.compare_digest(presented, self._mac(body)):
            return None
        if expires <= self._clock():
            return None
        return user_id

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, f"runyard-session|{body}".encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------
# Authenticator


class Authenticator:
    """Maps a bearer token or a session cookie to a :class:`Caller`."""

    def __init__(self, users: Iterable[User], sessions: SessionSigner) -> None:
        self._users = tuple(users)
        self._by_id = {user.user_id: user for user in self._users}
        self.sessions = sessions

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> Authenticator:
        key = load_or_create_secret(settings.data_dir)
        return cls(load_users(settings), SessionSigner(key, clock=clock))

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
    """The ``Authorization: Bearer`` token; ``None`` without the header; 401 if malformed."""
    header = request.headers.get("authorization")
    if header is None:
        return None
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
    session can never extend itself.
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
    """Make ``authenticator`` what the dependencies use, and mount ``/auth/session``."""
    app.state.authenticator = authenticator
    app.include_router(router)
