"""Who is calling (runyard.web.auth, runyard.web.sessions): tokens, signed session cookies, auth dependencies.

The HTTP part runs a tiny FastAPI app in-process through httpx's ASGI
transport; it also checks the error shape from runyard.web.errors that auth relies on.
"""

from __future__ import annotations

import hmac
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from runyard.actors.messages import Caller
from runyard.web.auth import SESSION_COOKIE, AdminDep, Authenticator, CallerDep, install_auth
from runyard.web.config import ConfigError, Settings, load_settings
from runyard.web.errors import install_error_handlers
from runyard.web.sessions import SECRET_FILE_NAME, SessionSigner, load_or_create_secret
from runyard.web.users import User, hash_token

pytestmark = pytest.mark.usefixtures("clean_runyard_env")

KEY = b"k" * 32


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------
# Token check


def many_users(n: int) -> list[User]:
    return [User(f"user{i}", hash_token(f"token-{i}"), admin=i == 0) for i in range(n)]


@pytest.mark.timeout(10)
def test_authenticate_token_returns_the_right_caller() -> None:
    auth = Authenticator(many_users(50), SessionSigner(KEY))
    for i in (0, 1, 25, 49):
        assert auth.authenticate_token(f"token-{i}") == Caller(f"user{i}", admin=i == 0)
    for wrong in ("token-50", "token-", "token-1 ", "", "TOKEN-1", "token-10x"):
        assert auth.authenticate_token(wrong) is None


@pytest.mark.timeout(10)
def test_authenticate_token_compares_every_user_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # the module runyard.web.auth calls
    auth = Authenticator(many_users(20), SessionSigner(KEY))
    assert auth.authenticate_token("token-0") == Caller("user0", admin=True)  # first user
    assert calls == [32] * 20  # no early exit; always equal-length digests
    calls.clear()
    assert auth.authenticate_token("nobody") is None
    assert calls == [32] * 20


# --------------------------------------------------------------------------
# Sessions


@pytest.mark.timeout(10)
def test_session_round_trip_and_expiry() -> None:
    clock = FakeClock()
    signer = SessionSigner(KEY, ttl_s=100, clock=clock)
    issued = signer.issue("alice@example.org")
    assert issued.expires_at == clock.now + 100
    assert signer.verify(issued.value) == "alice@example.org"
    clock.now += 99
    assert signer.verify(issued.value) == "alice@example.org"
    clock.now += 1
    assert signer.verify(issued.value) is None


@pytest.mark.timeout(10)
def test_session_tampering_is_rejected() -> None:
    signer = SessionSigner(KEY, clock=FakeClock())
    value = signer.issue("bob").value
    version, user, issued, expires, mac = value.split(".")
    alice = signer.issue("alice").value.split(".")[1]
    forged = [
        f"{version}.{alice}.{issued}.{expires}.{mac}",  # other user, old mac
        f"{version}.{user}.{issued}.{int(expires) + 10**6}.{mac}",  # extended expiry
        f"{version}.{user}.{issued}.{expires}.{mac[:-2]}AA",  # altered mac
        f"v2.{user}.{issued}.{expires}.{mac}",
        f"{version}.{user}.{issued}.{expires}",
        value + ".x",
        "",
        "garbage",
        "v1.%%%.1.2.%%%",
        "v1.Ym9i.1.notanumber.AAAA",
    ]
    for bad in forged:
        assert signer.verify(bad) is None, bad
    assert SessionSigner(b"x" * 32, clock=FakeClock()).verify(value) is None  # other key


@pytest.mark.timeout(10)
def test_session_of_removed_user_fails_and_admin_flag_comes_from_config() -> None:
    signer = SessionSigner(KEY, clock=FakeClock())
    cookie = signer.issue("bob").value
    before = Authenticator([User("bob", hash_token("b"), admin=False)], signer)
    assert before.authenticate_session(cookie) == Caller("bob", admin=False)
    promoted = Authenticator([User("bob", hash_token("b"), admin=True)], signer)
    assert promoted.authenticate_session(cookie) == Caller("bob", admin=True)
    removed = Authenticator([User("carol", hash_token("c"))], signer)
    assert removed.authenticate_session(cookie) is None


@pytest.mark.timeout(10)
def test_secret_file_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    key = load_or_create_secret(data_dir)
    path = data_dir / SECRET_FILE_NAME
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data_dir) == key  # survives a restart
    assert [p.name for p in data_dir.iterdir()] == [SECRET_FILE_NAME]  # no temp file left


@pytest.mark.parametrize("content", ["not hex\n", "abcd\n"])
@pytest.mark.timeout(10)
def test_secret_file_malformed_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / SECRET_FILE_NAME).write_text(content)
    with pytest.raises(ConfigError, match="delete it to make a new one"):
        load_or_create_secret(tmp_path)


# --------------------------------------------------------------------------
# Over HTTP: require_caller, require_admin, /auth/session, error shape


class StartBody(BaseModel):
    agent: str
    limit: int = 1


def make_app(tmp_path: Path, clock: FakeClock | None = None) -> FastAPI:
    settings = Settings(data_dir=tmp_path, tokens="alice:tok-a:admin,bob:tok-b", max_body_bytes=200)
    app = FastAPI()
    install_error_handlers(app, settings)
    install_auth(app, Authenticator.from_settings(settings, clock=clock or FakeClock()))

    @app.get("/me")
    async def me(caller: CallerDep) -> dict[str, object]:
        return {"user_id": caller.user_id, "admin": caller.admin}

    @app.get("/ops")
    async def ops(caller: AdminDep) -> dict[str, bool]:
        return {"ok": True}

    @app.post("/runs")
    async def start(body: StartBody, caller: CallerDep) -> dict[str, str]:
        return {"agent": body.agent}

    return app


async def run(app: FastAPI, steps: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send requests in order on one client (cookies persist between them)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [await client.request(m, url, **kw) for m, url, kw in steps]


async def chunks(piece: bytes, count: int) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked upload)."""
    for _ in range(count):
        yield piece


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"]


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_http_bearer_and_401s(tmp_path: Path) -> None:
    none, basic, wrong, ok = await run(
        make_app(tmp_path),
        [
            ("GET", "/me", {}),
            ("GET", "/me", {"headers": {"Authorization": "Basic dTpw"}}),
            ("GET", "/me", {"headers": {"Authorization": "Bearer tok-x"}}),
            ("GET", "/me", {"headers": {"Authorization": "bearer tok-b"}}),
        ],
    )
    for r in (none, basic, wrong):
        assert error_of(r) == (401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert ok.json() == {"user_id": "bob", "admin": False}


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_http_admin_only(tmp_path: Path) -> None:
    bob, alice = await run(
        make_app(tmp_path),
        [
            ("GET", "/ops", {"headers": {"Authorization": "Bearer tok-b"}}),
            ("GET", "/ops", {"headers": {"Authorization": "Bearer tok-a"}}),
        ],
    )
    assert error_of(bob) == (403, "forbidden")
    assert alice.json() == {"ok": True}


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_http_session_cookie_flow(tmp_path: Path) -> None:
    clock = FakeClock()
    app = make_app(tmp_path, clock)
    no_bearer, login, me, bad_bearer_wins, logout, after = await run(
        app,
        [
            ("POST", "/auth/session", {}),
            ("POST", "/auth/session", {"headers": {"Authorization": "Bearer tok-b"}}),
            ("GET", "/me", {}),
            ("GET", "/me", {"headers": {"Authorization": "Bearer wrong"}}),
            ("DELETE", "/auth/session", {"headers": {"Origin": "http://test"}}),  # as a browser
            ("GET", "/me", {}),
        ],
    )
    assert error_of(no_bearer) == (401, "unauthorized")
    assert login.status_code == 200
    assert login.json()["user_id"] == "bob"
    assert login.json()["expires_at"].endswith("Z")
    cookie = login.headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/" in cookie
    assert me.json() == {"user_id": "bob", "admin": False}
    assert error_of(bad_bearer_wins) == (401, "unauthorized")
    assert logout.status_code == 204
    assert "max-age=0" in logout.headers["set-cookie"].lower()
    assert error_of(after) == (401, "unauthorized")


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_http_session_survives_restart_and_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    (login,) = await run(
        make_app(tmp_path, clock),
        [("POST", "/auth/session", {"headers": {"Authorization": "Bearer tok-a"}})],
    )
    cookie = login.cookies[SESSION_COOKIE]
    restarted = make_app(tmp_path, clock)  # same data dir: same key
    with_cookie = {"headers": {"Cookie": f"{SESSION_COOKIE}={cookie}"}}
    (me,) = await run(restarted, [("GET", "/me", with_cookie)])
    assert me.json() == {"user_id": "alice", "admin": True}
    clock.now += 8 * 24 * 3600
    (expired,) = await run(restarted, [("GET", "/me", with_cookie)])
    assert error_of(expired) == (401, "unauthorized")
    assert "session expired" in expired.json()["error"]["message"]


@pytest.mark.anyio
@pytest.mark.timeout(10)
async def test_http_error_shape_for_validation_json_routing_and_size(tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer tok-a"}
    json_h = {**auth, "content-type": "application/json"}
    invalid, malformed, missing, too_big, chunked, ok = await run(
        make_app(tmp_path),
        [
            ("POST", "/runs", {"headers": auth, "json": {"limit": "many"}}),
            ("POST", "/runs", {"headers": json_h, "content": b"{not json"}),
            ("GET", "/nowhere", {"headers": auth}),
            ("POST", "/runs", {"headers": json_h, "content": b"x" * 500}),
            ("POST", "/runs", {"headers": json_h, "content": chunks(b"x" * 150, 3)}),
            ("POST", "/runs", {"headers": auth, "json": {"agent": "echo"}}),
        ],
    )
    assert error_of(invalid) == (422, "validation_error")
    message = invalid.json()["error"]["message"]
    assert "agent: Field required" in message
    assert "limit:" in message
    assert error_of(malformed) == (400, "malformed_json")
    assert error_of(missing) == (404, "not_found")
    assert error_of(too_big) == (413, "payload_too_large")
    assert error_of(chunked) == (413, "payload_too_large")
    assert ok.json() == {"agent": "echo"}


def test_nodes_sharing_a_session_secret_accept_each_others_sessions(tmp_path: Path) -> None:
    # Two nodes behind one balancer, each with its own data dir.
    shared = "s" * 40
    a = Authenticator.from_settings(
        Settings(data_dir=tmp_path / "a", tokens="alice:tok-a", session_secret=shared)
    )
    b = Authenticator.from_settings(
        Settings(data_dir=tmp_path / "b", tokens="alice:tok-a", session_secret=shared)
    )
    alone = Authenticator.from_settings(Settings(data_dir=tmp_path / "c", tokens="alice:tok-a"))
    cookie = a.issue_session(Caller("alice")).value
    assert b.authenticate_session(cookie) == Caller("alice")
    assert alone.authenticate_session(cookie) is None  # its own data-dir key


def test_a_short_session_secret_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNYARD_SESSION_SECRET", "short")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "RUNYARD_SESSION_SECRET" in str(err.value)
    assert "short" not in str(err.value)  # a secret is never echoed
