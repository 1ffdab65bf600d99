"""The dashboard's shell and static files over real HTTP: open, revalidated, confined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard.web.routes.dashboard import STATIC_DIR
from tests.api_helpers import assert_error
from tests.live_server import LiveServer, make_settings

SHELL_PATHS = ["/", "/ui", "/ui/", "/ui/runs/r_0123abcd", "/ui/admin"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(Path(tmp_path_factory.mktemp("dashboard")), shutdown_grace_s=0.2)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
def anon(live: LiveServer) -> Iterator[httpx.Client]:
    """No token, no cookie: the shell holds no data, so it is open."""
    with live.client(None) as client:
        yield client


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", SHELL_PATHS)
def test_every_page_url_answers_the_shell_with_its_security_headers(
    anon: httpx.Client, path: str
) -> None:
    resp = anon.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.text == (STATIC_DIR / "index.html").read_text()
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_are_served_open_with_revalidation_headers(
    anon: httpx.Client, name: str, media_type: str
) -> None:
    resp = anon.get(f"/static/{name}")
    assert resp.status_code == 200, resp.text
    assert resp.content == (STATIC_DIR / name).read_bytes()
    # Module scripts are refused by the browser under any other type.
    assert resp.headers["content-type"].split(";")[0] in (
        {media_type, "application/javascript"} if name.endswith(".js") else {media_type}
    )
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["etag"]
    assert resp.headers["last-modified"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", ["/static/run.js", "/", "/ui/runs/r_0123abcd"])
def test_a_conditional_get_with_the_current_etag_is_304(anon: httpx.Client, path: str) -> None:
    first = anon.get(path)
    assert first.status_code == 200
    etag = first.headers["etag"]

    again = anon.get(path, headers={"If-None-Match": f'"stale", {etag}'})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "no-cache"

    stale = anon.get(path, headers={"If-None-Match": '"not-the-current-one"'})
    assert stale.status_code == 200
    assert stale.content == first.content


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/nope.js",
        b"/static/",
        b"/static/../routes/dashboard.py",
        b"/static/%2e%2e/auth.py",
        b"/static/..%2fauth.py",
    ],
)
def test_missing_files_and_escapes_are_a_json_404(anon: httpx.Client, raw_path: bytes) -> None:
    # A raw path, so the client cannot normalise the ``..`` away before sending.
    url = anon.base_url.copy_with(raw_path=raw_path)
    resp = anon.get(url)
    message = assert_error(resp, 404, "not_found")
    assert "import" not in resp.text  # no Python source leaked into the body
    assert message.startswith("Not Found")


@pytest.mark.timeout(20)
def test_writing_to_a_static_file_is_405(anon: httpx.Client) -> None:
    resp = anon.post("/static/app.js", content=b"x")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET, HEAD"
    assert anon.get("/static/app.js").content == (STATIC_DIR / "app.js").read_bytes()
