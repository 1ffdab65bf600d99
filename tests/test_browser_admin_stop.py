"""An admin stops another user's runaway run from the admin view, in a real browser.

The admin's registry lists every live run with a Stop action (two clicks);
the run ends "stopped by admin root", which its owner sees on the run's page.
Another user's run id is not a link there: its trace stays the owner's.
Fixtures and helpers in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.api_helpers import wait_finished
from tests.browser_helpers import Tab, screenshot
from tests.dashboard_pages import sign_in
from tests.dashboard_runs import start
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(60)
def test_admin_stops_another_users_run_from_the_admin_view(
    server: LiveServer, browser: Browser
) -> None:
    alices = start(server, "sleeper", seconds=120)
    own = start(server, "sleeper", user="root", seconds=120)
    admin, owner = Tab(browser), Tab(browser)
    try:
        page = admin.page
        sign_in(page, server, "root")
        page.get_by_role("link", name="Admin").click()
        row = page.locator(f'.registry-table tr[data-run-id="{alices}"]')
        expect(row).to_be_visible()
        expect(row.locator("td").nth(1)).to_have_text("alice")
        # Only the admin's own run links to its page.
        expect(row.locator("td.run a")).to_have_count(0)
        own_row = page.locator(f'.registry-table tr[data-run-id="{own}"]')
        expect(own_row.locator("td.run a")).to_have_attribute("href", f"/ui/runs/{own}")

        row.get_by_role("button", name=re.compile(r"Stop run \w+ of alice")).click()
        screenshot(page, "admin-stop-confirm.png")
        row.get_by_role("button", name="Stop alice's run").click()
        outcome = page.locator("#admin-outcome")
        expect(outcome).to_have_text(f"Stop requested for run {alices} of alice.")
        expect(outcome).to_have_attribute("data-kind", "ok")
        expect(row).to_have_count(0, timeout=15_000)  # gone from the live runs once it ended
        expect(own_row).to_be_visible()  # the admin's own run is untouched
        screenshot(page, "admin-stopped.png")

        with server.client("alice") as alice:
            run = wait_finished(alice, alices)
        assert (run["status"], run["error"]) == ("stopped", "stopped by admin root")

        # Its owner reads who stopped it.
        sign_in(owner.page, server, "alice")
        owner.page.goto(f"{server.base_url}/ui/runs/{alices}")
        expect(owner.page.locator(".result-card")).to_contain_text("stopped by admin root")
        screenshot(owner.page, "run-stopped-by-admin.png")

        # The admin still cannot read it.
        page.goto(f"{server.base_url}/ui/runs/{alices}")
        expect(page.locator(".run-error h2")).to_have_text("This run belongs to another user")
    finally:
        with server.client("root") as root:
            root.post(f"/runs/{own}/stop")
        owner.close()
        admin.close()
