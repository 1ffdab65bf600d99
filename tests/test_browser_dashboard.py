"""The home page in a real browser: the runs list and the start form.

The list updates live and pages with "load more"; the start form shows an
error next to its field; the page fits a narrow window. Each test has its own
live server (``server``); fixtures and helpers in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_helpers import NARROW, Tab, no_horizontal_overflow, screenshot
from tests.dashboard_pages import local_hms, sign_in, wait_feed_live
from tests.dashboard_runs import run_json, start
from tests.live_server import TOKENS, LiveServer

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(30)
def test_runs_list_updates_live_without_reload(server: LiveServer, page: Page) -> None:
    sign_in(page, server)
    wait_feed_live(page)
    page.evaluate("window.__same_document = true")

    sleeper = start(server, "sleeper", seconds=60)
    row = page.locator(f'tr[data-run-id="{sleeper}"]')
    expect(row.locator(".badge")).to_have_text("running")
    expect(page.locator(f'.live-list li[data-run-id="{sleeper}"]')).to_be_visible()

    ticker = start(server, "ticker", n=10, interval=0.05)
    ticker_row = page.locator(f'tr[data-run-id="{ticker}"]')
    expect(ticker_row.locator(".badge")).to_have_text("success")
    expect(ticker_row.locator(".events")).to_have_text("11")
    expect(page.locator("tbody tr").first).to_have_attribute("data-run-id", ticker)  # newest first

    with server.client() as c:
        assert c.post(f"/runs/{sleeper}/stop").status_code == 202
    expect(row.locator(".badge")).to_have_text("stopped")
    expect(page.locator(".live-panel .empty")).to_have_text("Nothing is running.")

    # Start time in the viewer's zone (the browser runs in Europe/Berlin, the server in UTC).
    started_at = run_json(server, ticker)["started_at"]
    expect(ticker_row.locator(".started")).to_have_text(local_hms(started_at))

    # Filter by status.
    page.get_by_label("Status").select_option("stopped")
    expect(page.locator("tbody tr[data-run-id]")).to_have_count(1)
    expect(row).to_be_visible()
    page.get_by_label("Status").select_option("")
    expect(page.locator("tbody tr[data-run-id]")).to_have_count(2)

    assert page.evaluate("window.__same_document") is True, "the page must not have reloaded"
    for text in page.locator("tbody tr[data-run-id]").all_inner_texts():
        assert "null" not in text, text
        assert "undefined" not in text, text
    screenshot(page, "runs-list.png")


@pytest.mark.timeout(30)
def test_load_more_pages_through_the_list(server: LiveServer, page: Page) -> None:
    with server.client() as c:
        for _ in range(55):  # one page is 50
            assert c.post("/runs", json={"agent": "echo"}).status_code == 202
    sign_in(page, server)
    rows = page.locator("tbody tr[data-run-id]")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(55)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()


@pytest.mark.timeout(30)
def test_start_form_shows_errors_next_to_the_field(server: LiveServer, page: Page) -> None:
    sign_in(page, server)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    input_box = page.locator("#start-input")
    input_error = page.locator("#start-input-error")

    input_box.fill('{"n": 5,')
    page.get_by_role("button", name="Start run").click()
    expect(input_error).to_have_text(re.compile("Invalid JSON"))
    expect(input_box).to_have_attribute("aria-invalid", "true")
    expect(input_box).to_be_focused()

    input_box.fill("[1, 2]")
    page.get_by_role("button", name="Start run").click()
    expect(input_error).to_have_text(re.compile("must be a JSON object"))
    assert posts == [], "invalid input must not reach the server"

    # The server's 422 goes next to the field it names.
    input_box.fill("{}")
    expect(input_error).to_be_hidden()
    page.locator("#start-max").fill("-5")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#start-max-error")).to_have_text(re.compile("max_duration_s"))
    assert len(posts) == 1

    # Run code: bad JSON input is caught here, the server judges the code.
    page.get_by_role("tab", name="Run code").click()
    page.locator("#code-source").fill("def run(:\n    pass\n")
    page.locator("#code-input").fill("{oops")
    page.get_by_role("button", name="Run code").click()
    expect(page.locator("#code-input-error")).to_have_text(re.compile("Invalid JSON"))
    assert len(posts) == 1
    page.locator("#code-input").fill("{}")
    page.get_by_role("button", name="Run code").click()
    code_error = page.locator("#code-source-error")
    expect(code_error).to_be_visible()
    with httpx.Client(base_url=server.base_url) as c:
        c.headers["Authorization"] = f"Bearer {TOKENS['alice']}"
        probe = c.post("/agents/run-code/start", json={"code": "def run(:\n", "input_dict": {}})
    if probe.status_code != 422:  # no run-code route: the form shows the server's answer
        expect(code_error).to_have_text(probe.json()["error"]["message"])
        return
    expect(code_error).to_have_text(re.compile("line 1"))

    # Good code runs; event types the page never heard of are shown like any other.
    page.locator("#code-source").fill(
        "async def run(input_dict, ctx):\n"
        "    print('hello from the child')\n"
        "    ctx.emit('made_up_type', value=42)\n"
        "    return {'ok': True}\n"
    )
    page.get_by_role("button", name="Run code").click()
    expect(page.locator(".run-page")).to_have_attribute("data-status", "success", timeout=20_000)
    expect(page.locator('.trace-list [data-type="made_up_type"]')).to_contain_text('"value":42')
    expect(page.locator(".trace-list")).to_contain_text("hello from the child")


@pytest.mark.timeout(30)
def test_home_page_on_a_narrow_window(server: LiveServer, browser: Browser) -> None:
    narrow = Tab(browser, NARROW)
    try:
        page = narrow.page
        start(server, "failer", events=2)
        sleeper = start(server, "sleeper", seconds=60)
        sign_in(page, server)
        expect(page.locator("tbody tr[data-run-id]")).to_have_count(2)
        expect(page.locator(".live-list li")).to_have_count(1)
        expect(page.get_by_role("button", name="Start run")).to_be_visible()
        no_horizontal_overflow(page)
        screenshot(page, "home-narrow.png")
        with server.client() as c:
            assert c.post(f"/runs/{sleeper}/stop").status_code == 202
    finally:
        narrow.close()
