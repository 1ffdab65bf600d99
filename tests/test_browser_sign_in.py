"""Signing in to the dashboard in a real browser, and who sees what.

The token form and sign-out, the ``/#token=`` link ``runyard serve`` prints
(dropped from the address bar, never sent to the server, so in no access
log), old ``/?token=`` links, the admin's registry view, and another user
seeing none of alice's runs. Each test has its own live server (``server``);
fixtures and helpers in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser_helpers import screenshot
from tests.dashboard_pages import sign_in, wait_feed_live
from tests.dashboard_runs import start
from tests.live_server import TOKENS, LiveServer

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(30)
def test_sign_in_with_the_token_form_and_sign_out(server: LiveServer, page: Page) -> None:
    page.goto(server.base_url + "/")
    token = page.get_by_label("Access token")
    expect(token).to_be_focused()

    token.fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#token-error")).to_have_text(re.compile("not accepted"))
    expect(token).to_have_attribute("aria-invalid", "true")
    screenshot(page, "sign-in.png")

    token.fill(TOKENS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#current-user")).to_have_text("alice")
    expect(page.locator(".runs-card .empty")).to_have_text(re.compile("No runs yet"))
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)  # alice is no admin

    page.reload()  # the session cookie keeps her signed in
    expect(page.locator("#current-user")).to_have_text("alice")
    expect(page.locator(".runs-card .empty")).to_have_text(re.compile("No runs yet"))
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    page.reload()  # the cookie is gone
    expect(page.get_by_label("Access token")).to_be_visible()


@pytest.mark.timeout(30)
def test_sign_in_link_drops_the_token_and_admins_see_the_registry(
    server: LiveServer, page: Page
) -> None:
    sleeper = start(server, "sleeper", seconds=60)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    sign_in(page, server, "root")
    assert "token" not in page.url
    assert page.evaluate("location.search + location.hash") == ""

    # After a reload only the cookie is left: "who am I" says root is an admin.
    page.reload()
    expect(page.locator("#current-user")).to_have_text("root")
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    assert "/auth/session" in asked
    assert "/ops/registry" not in asked  # no probing an admin endpoint for a 403

    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(re.compile(r"/ui/admin$"))
    expect(page.get_by_role("heading", name="Registry")).to_be_visible()
    live_row = page.locator(f'.registry-table tr[data-run-id="{sleeper}"]')
    expect(live_row).to_contain_text("alice")
    expect(live_row).to_contain_text("sleeper")
    expect(page.locator(".stat").filter(has_text="accepting runs")).to_contain_text("yes")
    screenshot(page, "admin-registry.png")

    # A wrong link token falls back to the form with a message.
    page.goto(server.base_url + "/#token=wrong")
    expect(page.locator("#token-error")).to_have_text(re.compile("not accepted"))
    assert "token" not in page.url
    with server.client() as c:
        assert c.post(f"/runs/{sleeper}/stop").status_code == 202


@pytest.mark.timeout(30)
def test_another_user_sees_none_of_alices_runs(server: LiveServer, page: Page) -> None:
    alices = start(server, "ticker", n=3, interval=0.01)
    sign_in(page, server, "bob")
    wait_feed_live(page)
    expect(page.locator(".runs-card .empty")).to_have_text(re.compile("No runs yet"))
    expect(page.locator("tr[data-run-id]")).to_have_count(0)

    page.goto(f"{server.base_url}/ui/runs/{alices}")
    error = page.locator(".run-error")
    expect(error).to_contain_text("This run belongs to another user")
    expect(error).to_contain_text("belongs to another user")
    expect(page.locator(".trace-list")).to_have_count(0)

    page.goto(f"{server.base_url}/ui/runs/no-such-run")
    expect(page.locator(".run-error")).to_contain_text("No such run")


class AccessLog(logging.Handler):
    """uvicorn's access log lines of the in-process live server, as it writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("uvicorn.access")
    handler, level = AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


@pytest.mark.timeout(30)
def test_the_sign_in_link_token_never_reaches_the_server(
    server: LiveServer, page: Page, access_log: AccessLog
) -> None:
    page.goto(f"{server.base_url}/#token={TOKENS['alice']}")
    expect(page.locator("#current-user")).to_have_text("alice")
    assert page.evaluate("location.hash") == ""

    # A link opened in a tab that is already on the dashboard changes only the fragment.
    page.evaluate("window.samePage = true")
    page.goto(f"{server.base_url}/#token={TOKENS['bob']}")
    expect(page.locator("#current-user")).to_have_text("bob")
    assert page.evaluate("window.samePage === true")  # no reload: the hashchange did it
    assert page.evaluate("location.hash") == ""
    page.reload()  # the cookie is bob's now
    expect(page.locator("#current-user")).to_have_text("bob")

    # Old "?token=" links still sign in; the server sees that token, its log does not.
    page.goto(f"{server.base_url}/ui/admin?token={TOKENS['root']}")
    expect(page.locator("#current-user")).to_have_text("root")
    assert page.evaluate("location.search") == ""
    expect(page.get_by_role("heading", name="Registry")).to_be_visible()

    logged = "\n".join(access_log.lines)
    assert '"POST /auth/session HTTP/1.1" 200' in logged, logged
    assert '"GET /ui/admin?token=[redacted] HTTP/1.1" 200' in logged, logged
    for token in TOKENS.values():
        assert token not in logged, logged
