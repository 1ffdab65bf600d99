"""The browsable API reference (``/docs``) in a real browser, with no network but the server.

Every request the page makes to anything but the runyard server is refused
and recorded: the page must render the operations from the assets the
package carries (no CDN) and the schema behind sign-in.  Console errors (a
Content-Security-Policy refusal among them) fail the test (``tests/browser_helpers.py``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, expect

from tests.browser_helpers import Tab, screenshot
from tests.dashboard_pages import sign_in
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(60)
def test_the_api_reference_renders_offline_behind_sign_in(server: LiveServer, tab: Tab) -> None:
    own = urlsplit(server.base_url).netloc
    elsewhere: list[str] = []

    def only_the_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    tab.context.route("**/*", only_the_server)
    page = tab.page

    response = page.goto(f"{server.base_url}/docs")
    assert response is not None
    assert response.status == 401  # signed out: no reference, like every page's data

    sign_in(page, server, "alice")
    response = page.goto(f"{server.base_url}/docs")
    assert response is not None
    assert response.status == 200
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("runyard")
    paths = page.locator(".opblock-summary-path")
    expect(paths.filter(has_text="/runs/{run_id}/stream")).to_have_count(1)
    expect(paths.filter(has_text="/runs/{run_id}/stop")).to_have_count(1)
    assert paths.count() >= 10

    # An operation opens and shows its error answers, from the served schema.
    page.locator(".opblock-summary-path", has_text="/runs/{run_id}/stop").click()
    expect(page.locator(".opblock.is-open .responses-table")).to_contain_text("409")
    screenshot(page, "api-docs.png")
    assert elsewhere == [], f"the page reached beyond the server: {elsewhere}"
