"""Auth against a real server: bearer tokens, ownership, session cookies.

The module shares the default ``live`` server (from the ``live_server`` factory).
"""

from __future__ import annotations

import httpx
import pytest

from tests.api_helpers import assert_error, finished_and_running, get_run, start, wait_finished
from tests.live_server import TOKENS, LiveServer
from tests.sse_frames import frames

pytestmark = pytest.mark.server

VERBS = [
    ("GET", "/runs/{id}"),
    ("GET", "/runs/{id}/stream"),
    ("POST", "/runs/{id}/stop"),
    ("DELETE", "/runs/{id}"),
]


@pytest.fixture(scope="module")
def alice_runs(live: LiveServer) -> dict[str, str]:
    """One live and one finished run of alice's, shared by the ownership tests."""
    with live.client("alice") as alice:
        return finished_and_running(alice, secret="alice's")


def page_origin(live: LiveServer) -> dict[str, str]:
    """What a browser on the dashboard adds to its POSTs and DELETEs."""
    return {"Origin": live.base_url}


def _alice_runs_untouched(live: LiveServer, runs: dict[str, str]) -> None:
    with live.client("alice") as alice:
        assert get_run(alice, runs["running"])["status"] == "running"
        finished = get_run(alice, runs["finished"])
        assert finished["status"] == "success"
        assert finished["result"] == {"secret": "alice's"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("which", ["running", "finished"])
@pytest.mark.parametrize(("method", "path"), VERBS)
@pytest.mark.parametrize("user", ["bob", "root"])  # admin unlocks introspection, not traces
def test_another_users_run_is_403_for_every_verb(
    live: LiveServer, alice_runs: dict[str, str], which: str, method: str, path: str, user: str
) -> None:
    if user == "root" and which == "running" and method == "POST":
        pytest.skip("an admin may stop a live run: tests/test_api_admin_stop.py")
    run_id = alice_runs[which]
    with live.client(user) as other:
        message = assert_error(other.request(method, path.format(id=run_id)), 403, "forbidden")
    assert "alice's" not in message
    _alice_runs_untouched(live, alice_runs)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("user", ["bob", "root"])
def test_another_users_runs_never_appear_in_a_list(
    live: LiveServer, alice_runs: dict[str, str], user: str
) -> None:
    with live.client(user) as other:
        own = start(other, "echo", mine=True)
        wait_finished(other, own)
        for params in ({}, {"status": "running"}, {"status": "success"}, {"agent": "sleeper"}):
            listed = {r["run_id"] for r in other.get("/runs", params=params).json()["runs"]}
            assert not listed & set(alice_runs.values()), params
        assert own in {r["run_id"] for r in other.get("/runs").json()["runs"]}
    with live.client("alice") as alice:
        listed = {r["run_id"] for r in alice.get("/runs").json()["runs"]}
        assert set(alice_runs.values()) <= listed
        assert own not in listed


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6YWxpY2UtdG9rZW4="},
        {"Authorization": "alice-token"},
        {"Authorization": "Bearer alice-token extra"},
    ],
    ids=["none", "wrong", "empty", "basic", "no-scheme", "trailing"],
)
def test_401_without_a_valid_token(
    live: LiveServer, alice_runs: dict[str, str], headers: dict[str, str]
) -> None:
    run_id = alice_runs["running"]
    requests = [
        ("GET", "/runs", None),
        ("POST", "/runs", {"agent": "echo", "input_dict": {}}),
        ("GET", "/agents", None),
        ("GET", "/ops/registry", None),
        ("GET", "/auth/session", None),
        *[(m, p.format(id=run_id), None) for m, p in VERBS],
    ]
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=10) as anon:
        for method, path, body in requests:
            resp = anon.request(method, path, json=body)
            assert_error(resp, 401, "unauthorized")
            assert resp.headers["www-authenticate"] == "Bearer", (method, path)
    _alice_runs_untouched(live, alice_runs)
    with live.client("alice") as alice:
        listed = alice.get("/runs").json()["runs"]
        assert all(r["agent"] != "echo" or r["run_id"] == alice_runs["finished"] for r in listed)


@pytest.mark.timeout(20)
def test_session_cookie_lets_a_cookie_only_client_list_and_stream(live: LiveServer) -> None:
    with live.client("alice") as alice:
        run_id = start(alice, "ticker", n=3, interval=0.01)
        resp = alice.post("/auth/session")
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["user_id"] == "alice"
    assert info["admin"] is False
    assert info["expires_at"].endswith("Z")
    set_cookie = resp.headers["set-cookie"]
    attrs = [a.strip().lower() for a in set_cookie.split(";")]
    assert attrs[0].startswith("runyard_session=")
    assert "httponly" in attrs
    assert "samesite=strict" in attrs
    assert "path=/" in attrs
    assert "secure" not in attrs  # plain http on 127.0.0.1
    assert TOKENS["alice"] not in resp.cookies["runyard_session"]

    # A browser sends Origin on every POST and DELETE; the cookie needs it (test_api_same_origin).
    with httpx.Client(base_url=live.base_url, timeout=10, headers=page_origin(live)) as browser:
        # The token goes out once, on this request only; the cookie jar does the rest.
        signed_in = browser.post(
            "/auth/session", headers={"Authorization": f"Bearer {TOKENS['alice']}"}
        )
        assert signed_in.status_code == 200
        assert "authorization" not in browser.headers
        listed = browser.get("/runs")
        assert listed.status_code == 200, listed.text
        assert run_id in {r["run_id"] for r in listed.json()["runs"]}
        fs = frames(browser, run_id)
        assert fs[0].event == "run"
        assert fs[-1].event == "done"
        assert fs[-1].data["data"]["status"] == "success"

        # An explicit bearer token that fails is not rescued by the cookie.
        bad = browser.get("/runs", headers={"Authorization": "Bearer nope"})
        assert_error(bad, 401, "unauthorized")
        # The session cannot extend itself: only a bearer token starts a session.
        assert_error(browser.post("/auth/session"), 401, "unauthorized")

        out = browser.delete("/auth/session")
        assert out.status_code == 204
        cleared = out.headers["set-cookie"].lower()
        assert cleared.startswith("runyard_session=")
        assert "max-age=0" in cleared or "expires=thu, 01 jan 1970" in cleared
        assert "runyard_session" not in browser.cookies
        assert_error(browser.get("/runs"), 401, "unauthorized")


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("user", "admin"), [("alice", False), ("bob", False), ("root", True)])
def test_who_am_i_names_the_caller_by_token_and_by_cookie(
    live: LiveServer, user: str, admin: bool
) -> None:
    with live.client(user) as by_token:
        resp = by_token.get("/auth/session")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"user_id": user, "admin": admin}
        assert "set-cookie" not in resp.headers  # asking never starts or extends a session
        # The admin flag it reports is the one the admin endpoints enforce.
        assert by_token.get("/ops/registry").status_code == (200 if admin else 403)

    with httpx.Client(base_url=live.base_url, timeout=10, headers=page_origin(live)) as browser:
        signed_in = browser.post(
            "/auth/session", headers={"Authorization": f"Bearer {TOKENS[user]}"}
        )
        assert signed_in.status_code == 200
        resp = browser.get("/auth/session")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"user_id": user, "admin": admin}

        assert browser.delete("/auth/session").status_code == 204
        assert_error(browser.get("/auth/session"), 401, "unauthorized")


@pytest.mark.timeout(20)
def test_who_am_i_without_credentials_is_401(live: LiveServer) -> None:
    with httpx.Client(base_url=live.base_url, timeout=10) as anon:
        resp = anon.get("/auth/session")
        message = assert_error(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "POST /auth/session" in message  # says how to become a caller
        anon.cookies.set("runyard_session", "v1.x.y.z.w")
        assert_error(anon.get("/auth/session"), 401, "unauthorized")


@pytest.mark.timeout(20)
def test_tampered_session_cookie_is_401(live: LiveServer) -> None:
    with live.client("bob") as bob:
        cookie = bob.post("/auth/session").cookies["runyard_session"]
    version, _user, issued, expires, mac = cookie.split(".")
    forged_user = "YWxpY2U"  # base64url("alice"): bob tries to become alice
    for forged in (f"{version}.{forged_user}.{issued}.{expires}.{mac}", cookie[:-2] + "AA", "x"):
        with httpx.Client(base_url=live.base_url, timeout=10) as browser:
            browser.cookies.set("runyard_session", forged)
            assert_error(browser.get("/runs"), 401, "unauthorized")
