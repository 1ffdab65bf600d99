"""The cross-site guard against a real server: the cookie acts only from our own pages.

A page on another port of the same host is the same *site*, so the browser
sends the ``SameSite=Strict`` cookie with its form POSTs and ``no-cors``
fetches.  Here an httpx client holding a real session cookie sends what such
a browser would send (``Origin``, ``Sec-Fetch-Site``), against real uvicorn,
directly and behind Debian's nginx with ``deploy/nginx.conf``.  The same
attack from a real page in Chromium: ``test_browser_same_origin.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import assert_error, get_run, start, wait_finished
from tests.live_server import TOKENS, LiveServer, LiveServerFactory, bearer
from tests.nginx_balancer import Balancer, NginxMissing, nginx_binary

pytestmark = pytest.mark.server

OTHER_PORT_PAGE = "http://127.0.0.1:9"
"""A page on another port of the server's host: same site, other origin."""


@contextmanager
def cookie_client(base_url: str, user: str = "alice", **headers: str) -> Iterator[httpx.Client]:
    """A client holding ``user``'s session cookie (signed in at ``base_url``), no token kept."""
    with httpx.Client(base_url=base_url, timeout=15, headers=headers) as client:
        signed_in = client.post("/auth/session", headers=bearer(user))
        assert signed_in.status_code == 200, signed_in.text
        assert client.cookies.get("runyard_session")
        yield client


@pytest.fixture
def sleeper(live: LiveServer) -> Iterator[str]:
    """A run of alice's that lasts; stopped (if still running) after the test."""
    with live.client("alice") as alice:
        run_id = start(alice, "sleeper", seconds=120)
        yield run_id
        alice.post(f"/runs/{run_id}/stop")


def still_running(live: LiveServer, run_id: str) -> bool:
    with live.client("alice") as alice:
        return get_run(alice, run_id)["status"] == "running"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": OTHER_PORT_PAGE},  # a form POST or fetch from another port
        {"Origin": "null"},  # a sandboxed frame, a data: page
        {"Sec-Fetch-Site": "same-site"},  # no Origin: fetch metadata decides
        {"Sec-Fetch-Site": "cross-site"},
        {},  # neither: refused, the message says what to send
    ],
    ids=["other-port", "null", "same-site", "cross-site", "no-headers"],
)
def test_cookie_requests_from_another_origin_change_nothing(
    live: LiveServer, sleeper: str, headers: dict[str, str]
) -> None:
    with cookie_client(live.base_url, **headers) as forged:
        before = forged.get("/runs").json()["runs"]  # reading is not guarded
        assert sleeper in {r["run_id"] for r in before}

        message = assert_error(forged.post(f"/runs/{sleeper}/stop"), 403, "cross_origin_refused")
        assert "session cookie" in message
        assert "Authorization: Bearer <token>" in message
        started = forged.post("/runs", json={"agent": "echo", "input_dict": {}})
        assert_error(started, 403, "cross_origin_refused")
        assert_error(forged.delete(f"/runs/{sleeper}"), 403, "cross_origin_refused")
        assert_error(forged.delete("/auth/session"), 403, "cross_origin_refused")

        after = forged.get("/runs").json()["runs"]
    assert len(after) == len(before)  # nothing was started
    assert still_running(live, sleeper)


@pytest.mark.timeout(30)
def test_the_refusal_names_both_origins(live: LiveServer, sleeper: str) -> None:
    with cookie_client(live.base_url, Origin=OTHER_PORT_PAGE) as forged:
        message = assert_error(forged.post(f"/runs/{sleeper}/stop"), 403, "cross_origin_refused")
    assert repr(OTHER_PORT_PAGE) in message
    assert f"the runyard dashboard at {live.base_url}" in message


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "headers",
    [{"Origin": "{own}"}, {"Sec-Fetch-Site": "same-origin"}],
    ids=["origin", "sec-fetch-site"],
)
def test_cookie_requests_from_our_own_pages_work(
    live: LiveServer, sleeper: str, headers: dict[str, str]
) -> None:
    own = {name: value.format(own=live.base_url) for name, value in headers.items()}
    with cookie_client(live.base_url, **own) as page:
        stopped = page.post(f"/runs/{sleeper}/stop")
        assert stopped.status_code == 202, stopped.text
        with live.client("alice") as alice:
            assert wait_finished(alice, sleeper)["status"] == "stopped"
        signed_out = page.delete("/auth/session")
        assert signed_out.status_code == 204, signed_out.text
        assert_error(page.get("/runs"), 401, "unauthorized")


@pytest.mark.timeout(30)
def test_bearer_clients_are_not_affected(live: LiveServer) -> None:
    # Whatever Origin a service sends, its token decides (a page cannot make a
    # browser send Authorization to another origin without a CORS preflight).
    with live.client("alice") as service:
        service.headers["Origin"] = "https://elsewhere.example"
        run_id = start(service, "sleeper", seconds=120)
        assert service.post(f"/runs/{run_id}/stop").status_code == 202
    # And with a cookie in the jar too: the bearer token is what authenticates.
    with cookie_client(live.base_url, Origin=OTHER_PORT_PAGE) as both:
        started = both.post(
            "/runs", json={"agent": "echo", "input_dict": {}}, headers=bearer("alice")
        )
        assert started.status_code == 202, started.text


@contextmanager
def proxied_client(live: LiveServer, **headers: str) -> Iterator[httpx.Client]:
    """A client that talks to ``live`` as a proxy would, with alice's session cookie set by hand.

    By hand: a cookie jar files cookies under the ``Host`` header's name, and
    the cookie issued over (forwarded) https is ``Secure``; neither would
    come back over this plain loopback connection.
    """
    with cookie_client(live.base_url) as signed_in:
        cookie = signed_in.cookies["runyard_session"]
    headers = {**headers, "Cookie": f"runyard_session={cookie}"}
    with httpx.Client(base_url=live.base_url, timeout=15, headers=headers) as client:
        yield client


@pytest.mark.timeout(30)
def test_behind_a_proxy_the_forwarded_address_is_the_origin(live: LiveServer, sleeper: str) -> None:
    """Host / X-Forwarded-Proto (uvicorn trusts it from 127.0.0.1) / X-Forwarded-Host."""
    public = "https://runyard.example.com"
    proxied = {"Host": "runyard.example.com", "X-Forwarded-Proto": "https"}
    with proxied_client(live, **proxied) as page:
        wrong_scheme = page.post(
            f"/runs/{sleeper}/stop", headers={"Origin": public[:4] + public[5:]}
        )
        assert_error(wrong_scheme, 403, "cross_origin_refused")
        assert_error(page.post(f"/runs/{sleeper}/stop", headers={"Origin": live.base_url}), 403)
        assert still_running(live, sleeper)
        assert page.post(f"/runs/{sleeper}/stop", headers={"Origin": public}).status_code == 202

    with live.client("alice") as alice:
        run_id = start(alice, "sleeper", seconds=120)
    forwarded = {"X-Forwarded-Host": "runyard.example.com:8443", "X-Forwarded-Proto": "https"}
    with proxied_client(live, **forwarded) as page:
        assert_error(page.post(f"/runs/{run_id}/stop", headers={"Origin": public}), 403)
        ok = page.post(f"/runs/{run_id}/stop", headers={"Origin": public + ":8443"})
        assert ok.status_code == 202, ok.text


@pytest.mark.timeout(30)
def test_public_origin_setting_is_the_one_origin_accepted(live_server: LiveServerFactory) -> None:
    server = live_server(public_origin="https://runyard.example.com")
    with server.client("alice") as alice:
        run_id = start(alice, "sleeper", seconds=120)
    with cookie_client(server.base_url) as page:
        # Its own address no longer counts: browsers are said to come through the public one.
        direct = page.post(f"/runs/{run_id}/stop", headers={"Origin": server.base_url})
        message = assert_error(direct, 403, "cross_origin_refused")
        assert "https://runyard.example.com" in message
        public = page.post(
            f"/runs/{run_id}/stop", headers={"Origin": "https://runyard.example.com"}
        )
        assert public.status_code == 202, public.text


@pytest.fixture
def balancer(live: LiveServer, tmp_path: Path) -> Iterator[Balancer]:
    """Debian's nginx with ``deploy/nginx.conf`` in front of the module's server."""
    try:
        nginx_binary()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    nginx = Balancer(tmp_path / "nginx", [f"127.0.0.1:{live.port}"]).start()
    try:
        yield nginx
    finally:
        nginx.stop()
        nginx.listener.close()


@pytest.mark.timeout(60)
def test_through_nginx_on_its_own_port_the_dashboards_origin_is_accepted(
    live: LiveServer, balancer: Balancer
) -> None:
    # nginx on a port of its own: its $host drops the port, so the config must
    # pass the browser's host:port on (X-Forwarded-Host) for Origin to match.
    with httpx.Client(base_url=balancer.base_url, headers=bearer("alice"), timeout=15) as alice:
        run_id = start(alice, "sleeper", seconds=120)
    with cookie_client(balancer.base_url) as page:
        forged = page.post(f"/runs/{run_id}/stop", headers={"Origin": OTHER_PORT_PAGE})
        assert_error(forged, 403, "cross_origin_refused")
        direct = page.post(f"/runs/{run_id}/stop", headers={"Origin": live.base_url})
        assert_error(direct, 403, "cross_origin_refused")  # not the address the browser used
        assert still_running(live, run_id)
        ok = page.post(f"/runs/{run_id}/stop", headers={"Origin": balancer.base_url})
        assert ok.status_code == 202, ok.text
    with live.client("alice") as alice:
        assert wait_finished(alice, run_id)["status"] == "stopped"
    assert TOKENS["alice"] not in balancer.access_log.read_text()
