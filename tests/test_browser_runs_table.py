"""The runs table at desktop widths, with a long error line: nothing is cut off.

A long error used to widen the Run column until "Duration" read "DURATIO",
durations "21 m" and Events hid behind a horizontal scroll. Now the error
line is cut with an ellipsis (the whole text in its title) and every header
and value fits. Fixtures and helpers in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.browser_helpers import Tab, no_horizontal_overflow, screenshot
from tests.dashboard_pages import sign_in
from tests.dashboard_runs import start
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]

LONG_ERROR = "the upstream model kept answering 429 Too Many Requests; " * 12

# Per cell: is its content wider than the cell (cut off)?
_CUT_OFF = """table => [...table.querySelectorAll('th, td.started, td.duration, td.events')]
    .filter(c => c.scrollWidth > c.clientWidth + 1)
    .map(c => `${c.className || c.tagName}: ${c.textContent}`)"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", [1280, 1920])
def test_every_header_and_value_fits_with_a_long_error(
    server: LiveServer, browser: Browser, width: int
) -> None:
    failed = start(server, "failer", events=3, message=LONG_ERROR.strip())
    start(server, "ticker", n=3, interval=0)
    sleeper = start(server, "sleeper", seconds=60)
    tab = Tab(browser, {"width": width, "height": 900})
    try:
        page = tab.page
        sign_in(page, server)
        rows = page.locator("tbody tr[data-run-id]")
        expect(rows).to_have_count(3)
        row = page.locator(f'tr[data-run-id="{failed}"]')
        expect(row.locator(".badge")).to_have_text("error")

        table = page.locator(".runs-table")
        headers = table.locator("thead th")
        expect(headers).to_have_text(["Status", "Run", "Started", "Duration", "Events"])
        for i in range(5):
            expect(headers.nth(i)).to_be_visible()
        assert table.evaluate(_CUT_OFF) == []

        # No horizontal scroll: not in the table's wrapper, not on the page.
        wrap = page.locator(".runs-card .table-wrap")
        assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "the table scrolls sideways"
        no_horizontal_overflow(page)
        events = row.locator(".events")
        expect(events).to_be_in_viewport()
        expect(events).to_have_text("5")  # 3 steps, error, done

        # The error line is cut with an ellipsis and keeps the whole text in its title.
        error_line = row.locator(".row-error")
        assert LONG_ERROR.strip() in (error_line.get_attribute("title") or "")
        assert error_line.evaluate("e => e.scrollWidth > e.clientWidth"), "expected a cut line"
        assert error_line.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
        screenshot(page, f"runs-table-{width}.png")
    finally:
        with server.client() as c:
            c.post(f"/runs/{sleeper}/stop")
        tab.close()
