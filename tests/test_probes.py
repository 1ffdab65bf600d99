"""``/healthz`` and ``/readyz`` against real servers: open, versioned, and answering HEAD.

Load balancers probe with GET or HEAD; a HEAD must get the status a GET gets,
with no body.  ``/healthz`` names the installed release, so an operator can
tell which version each node runs.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer, LiveServerFactory

pytestmark = pytest.mark.server


@pytest.mark.timeout(20)
def test_healthz_is_open_and_names_the_installed_version(live: LiveServer) -> None:
    resp = httpx.get(f"{live.base_url}/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "detail": {"version": version("runyard")}}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_gets_the_status_of_get_and_no_body(live: LiveServer, path: str) -> None:
    get = httpx.get(f"{live.base_url}{path}")
    head = httpx.head(f"{live.base_url}{path}")
    assert (head.status_code, get.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.timeout(60)
def test_head_readyz_is_503_while_the_store_cannot_open(
    tmp_path: Path, live_server: LiveServerFactory
) -> None:
    (tmp_path / "runs.sqlite3").mkdir()  # a directory where the database should be
    server = live_server(data_dir=tmp_path, store_timeout_s=1)
    get = httpx.get(f"{server.base_url}/readyz", timeout=10)
    head = httpx.head(f"{server.base_url}/readyz", timeout=10)
    assert (head.status_code, get.status_code) == (503, 503)
    assert head.content == b""
    assert httpx.head(f"{server.base_url}/healthz").status_code == 200
