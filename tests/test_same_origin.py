"""The cross-site guard's rule (runyard.web.same_origin, runyard.web.origins), without a server.

Which requests may use the session cookie to change something, how the
server's own origin is read (``RUNYARD_PUBLIC_ORIGIN``, ``Host``,
``X-Forwarded-*``) and how origins are compared.  The same rule against a
real server and a real browser: ``test_api_same_origin.py``,
``test_browser_same_origin.py``.
"""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from runyard.web.config import ConfigError, Settings, load_settings
from runyard.web.origins import normalize_origin
from runyard.web.same_origin import SameOriginRule

pytestmark = pytest.mark.usefixtures("clean_runyard_env")

HOST = {"host": "127.0.0.1:8000"}
OWN = "http://127.0.0.1:8000"


def refusal(
    headers: dict[str, str],
    *,
    method: str = "POST",
    cookie: bool = True,
    scheme: str = "http",
    rule: SameOriginRule | None = None,
) -> str | None:
    return (rule or SameOriginRule()).refusal(method, Headers(headers), scheme, cookie)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("HTTP://Runyard.Example.COM", "http://runyard.example.com"),
        ("https://runyard.example.com:443/", "https://runyard.example.com"),
        ("http://runyard.example.com:80", "http://runyard.example.com"),
        ("https://runyard.example.com:8443", "https://runyard.example.com:8443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("", None),
        ("runyard.example.com", None),
        ("ftp://runyard.example.com", None),
        ("https://runyard.example.com/runs", None),
        ("https://runyard.example.com?x=1", None),
        ("https://runyard.example.com#x", None),
        ("https://user@runyard.example.com", None),
        ("http://127.0.0.1:99999", None),
        ("http://127.0.0.1:port", None),
    ],
)
def test_origins_are_normalized_or_refused(text: str, origin: str | None) -> None:
    assert normalize_origin(text) == origin


@pytest.mark.timeout(10)
def test_safe_methods_bearer_clients_and_cookieless_requests_are_never_checked() -> None:
    evil = {**HOST, "origin": "http://127.0.0.1:9000"}
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert refusal(evil, method=method) is None
    assert refusal({**evil, "authorization": "Bearer tok"}) is None
    assert refusal(evil, cookie=False) is None
    # Every other method is checked, not only the four common ones.
    for method in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND"):
        assert refusal(evil, method=method) is not None, method


@pytest.mark.timeout(10)
def test_origin_must_be_the_servers_own() -> None:
    assert refusal({**HOST, "origin": OWN}) is None
    assert refusal({**HOST, "origin": OWN + "/"}) is None
    # Same host, other port: same site, so SameSite=Strict let the cookie through.
    message = refusal({**HOST, "origin": "http://127.0.0.1:9000"})
    assert message is not None
    assert "'http://127.0.0.1:9000'" in message
    assert OWN in message
    assert "Authorization: Bearer" in message
    assert "RUNYARD_PUBLIC_ORIGIN" in message  # what an operator behind a proxy sets
    assert refusal({**HOST, "origin": "https://127.0.0.1:8000"}) is not None  # other scheme
    assert refusal({**HOST, "origin": "null"}) is not None  # sandboxed frame, data: page
    assert refusal({**HOST, "origin": "http://localhost:8000"}) is not None


@pytest.mark.timeout(10)
def test_origin_wins_over_sec_fetch_site() -> None:
    assert refusal({**HOST, "origin": "http://evil", "sec-fetch-site": "same-origin"}) is not None
    assert refusal({**HOST, "origin": OWN, "sec-fetch-site": "cross-site"}) is None


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("site", "refused"),
    [("same-origin", False), ("none", False), ("same-site", True), ("cross-site", True)],
)
def test_without_origin_sec_fetch_site_decides(site: str, refused: bool) -> None:
    message = refusal({**HOST, "sec-fetch-site": site})
    assert (message is not None) == refused
    if refused:
        assert message is not None
        assert repr(site) in message


@pytest.mark.timeout(10)
def test_neither_header_is_refused_with_what_to_send_instead() -> None:
    message = refusal(HOST)
    assert message is not None
    assert "no Origin header" in message
    assert "Authorization: Bearer <token>" in message
    assert f"Origin: {OWN}" in message


@pytest.mark.timeout(10)
def test_own_origin_follows_the_proxy_headers() -> None:
    proxied = {
        "host": "10.0.0.5:8000",
        "x-forwarded-host": "runyard.example.com, 10.0.0.1",
        "x-forwarded-proto": "https, http",
    }
    assert SameOriginRule().own_origin(Headers(proxied), "http") == "https://runyard.example.com"
    assert refusal({**proxied, "origin": "https://runyard.example.com"}) is None
    assert refusal({**proxied, "origin": "http://10.0.0.5:8000"}) is not None
    # uvicorn already put a trusted X-Forwarded-Proto into the scheme.
    assert refusal({"host": "runyard.example.com", "origin": "https://runyard.example.com"},
                   scheme="https") is None  # fmt: skip
    # A Host that is not a plain host[:port] is no origin: refused, never guessed.
    assert refusal({"host": "127.0.0.1:8000/x", "origin": OWN}) is not None
    assert refusal({"origin": OWN}) is not None  # no Host at all


@pytest.mark.timeout(10)
def test_public_origin_is_the_only_accepted_origin() -> None:
    rule = SameOriginRule(public_origin="https://runyard.example.com")
    assert refusal({**HOST, "origin": "https://runyard.example.com"}, rule=rule) is None
    assert refusal({**HOST, "origin": OWN}, rule=rule) is not None
    forwarded = {**HOST, "x-forwarded-host": "other.example", "origin": "http://other.example"}
    assert refusal(forwarded, rule=rule) is not None


@pytest.mark.timeout(10)
def test_public_origin_setting_is_normalized_or_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().public_origin is None
    monkeypatch.setenv("RUNYARD_PUBLIC_ORIGIN", "HTTPS://Runyard.Example.com:443/")
    assert load_settings().public_origin == "https://runyard.example.com"
    monkeypatch.setenv("RUNYARD_PUBLIC_ORIGIN", "https://runyard.example.com/dashboard")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "RUNYARD_PUBLIC_ORIGIN" in message
    assert "e.g. https://runyard.example.com" in message
    assert "'https://runyard.example.com/dashboard'" in message
