"""A page on another port of 127.0.0.1 tries to stop a signed-in user's run, in Chromium.

The attack as it was found: alice is signed in to the dashboard (an
``HttpOnly``, ``SameSite=Strict`` session cookie); a page served from another
port of the same host is the same *site*, so Chromium attaches her cookie to
its ``no-cors`` fetch and to its plain form POST.  The server must refuse
both (403 ``cross_origin_refused``), her run must keep running, and the
dashboard's own Stop button must still work.  Fixtures and helpers in
``tests/browser_helpers.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, Response, expect

from tests.dashboard_pages import sign_in
from tests.dashboard_runs import run_json, start
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]

ATTACK_PAGE = """<!doctype html>
<html><head><title>cute cats</title></head><body>
<iframe name="sink" title="sink"></iframe>
<form id="forged" method="POST" action="{target}" target="sink">
  <input type="hidden" name="reason" value="forged">
</form>
<script>
  fetch("{target}", {{ method: "POST", mode: "no-cors", credentials: "include" }})
    .then(() => {{ document.body.dataset.fetch = "answered"; }},
          () => {{ document.body.dataset.fetch = "failed"; }});
  document.getElementById("forged").submit();
</script>
</body></html>
"""


class AttackSite:
    """A plain HTTP server on another port of 127.0.0.1 serving :data:`ATTACK_PAGE` at ``/``."""

    def __init__(self) -> None:
        self.target = ""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = ATTACK_PAGE.format(target=site.target).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest's output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="attack-site")

    def __enter__(self) -> AttackSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def attack_site() -> Iterator[AttackSite]:
    with AttackSite() as site:
        yield site


def _forged(response: Response, target: str, kind: str) -> bool:
    request = response.request
    return request.method == "POST" and request.url == target and request.resource_type == kind


@pytest.mark.timeout(60)
def test_a_page_on_another_port_cannot_stop_a_run_and_the_dashboard_still_can(
    server: LiveServer, page: Page, attack_site: AttackSite
) -> None:
    run_id = start(server, "sleeper", seconds=120)
    sign_in(page, server)  # alice's session cookie is in the browser now
    target = f"{server.base_url}/runs/{run_id}/stop"
    attack_site.target = target
    assert attack_site.url != server.base_url  # same host, other port: same site

    with (
        page.expect_response(lambda r: _forged(r, target, "fetch")) as fetched,
        page.expect_response(lambda r: _forged(r, target, "document")) as posted,
    ):
        page.goto(attack_site.url + "/")
    page.wait_for_function("document.body.dataset.fetch === 'answered'")

    # 403, not 401: the guard answers only requests that carry the session
    # cookie, so Chromium did send alice's cookie with both (without the guard
    # each would have been a 202 and the run stopped).
    assert fetched.value.status == 403
    assert posted.value.status == 403
    assert '"code":"cross_origin_refused"' in posted.value.text()
    assert run_json(server, run_id)["status"] == "running"

    # The dashboard's own Stop button, same browser, same cookie.
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".run-page")).to_have_attribute("data-status", "stopped")
    expect(page.locator("#action-outcome")).to_have_text("The run stopped.")
    assert run_json(server, run_id)["status"] == "stopped"
