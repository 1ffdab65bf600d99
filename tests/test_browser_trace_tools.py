"""The run page's tools in a real browser: find events, colours, copy, download.

Filter by type, search, "jump to the first error" and the detail pane; the
`done` row coloured by how the run ended; copying the run id and link; the
trace downloaded as JSON Lines. Fixtures and helpers in
``tests/browser_helpers.py``.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser_helpers import Tab, screenshot
from tests.dashboard_pages import sign_in, wait_seq
from tests.dashboard_runs import run_json, start
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]

STEPS = 200  # more rows than the box shows, so the error is out of view


def _row_background(page: Page, seq: int) -> str:
    colour: str = page.locator(f'.trace-list [data-seq="{seq}"]').evaluate(
        "r => getComputedStyle(r).backgroundColor"
    )
    return colour


def _css_colour(page: Page, variable: str) -> str:
    """What ``var(--x)`` computes to, as getComputedStyle writes colours."""
    colour: str = page.evaluate(
        """v => { const p = document.createElement('p'); p.style.background = `var(${v})`;
                  document.body.append(p); const c = getComputedStyle(p).backgroundColor;
                  p.remove(); return c; }""",
        variable,
    )
    return colour


@pytest.mark.timeout(45)
def test_filter_search_and_jump_to_the_first_error(server: LiveServer, page: Page) -> None:
    run_id = start(server, "failer", events=STEPS, message="the disk is on fire")
    sign_in(page, server)
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "error")
    total = run_json(server, run_id)["event_count"]
    wait_seq(page, total)
    types = run_json(server, run_id)["events"]
    error_seq = next(e["seq"] for e in types if e["type"] == "error")

    # The `done` row of a failed run is red, not green.
    done = page.locator(f'.trace-list [data-seq="{total}"]')
    expect(done).to_have_class(re.compile(r"\bev-done-error\b"))
    assert _row_background(page, total) == _css_colour(page, "--error-bg")
    assert _row_background(page, total) != _css_colour(page, "--success-bg")

    # Filter by type: only `step` rows, and the count says how many match.
    trace = page.locator(".trace")
    trace.evaluate("t => { t.scrollTop = 0; }")
    page.get_by_label("Event type").select_option("step")
    expect(page.locator(".trace-matches")).to_have_text(f"{STEPS} of {total} events")
    types_shown = set(
        page.eval_on_selector_all(".trace-list [data-type]", "els => els.map(e => e.dataset.type)")
    )
    assert types_shown == {"step"}, types_shown

    # Search within the filter.
    page.get_by_label("Search events").fill('"i":150')
    expect(page.locator(".trace-matches")).to_have_text(f"1 of {total} events")
    expect(page.locator(".trace-list [data-seq]")).to_have_count(1)
    expect(page.locator(".trace-list [data-seq]")).to_contain_text('"i":150')
    screenshot(page, "trace-search.png")

    # Jump to the first error: the filter that hides it is cleared, the row is
    # scrolled into view and chosen, and its details open below.
    page.get_by_role("button", name="Jump to first error").click()
    expect(page.locator(".trace-matches")).to_have_text("")
    expect(page.get_by_label("Search events")).to_have_value("")
    row = page.locator(f'.trace-list [data-seq="{error_seq}"]')
    expect(row).to_be_in_viewport()
    expect(row).to_have_class(re.compile(r"\bselected\b"))
    detail = page.locator("#trace-detail")
    expect(detail).to_be_visible()
    expect(detail).to_contain_text("the disk is on fire")
    expect(detail).to_contain_text("Traceback")
    screenshot(page, "trace-first-error.png")

    # Any row opens its event; Close hides it.
    trace.evaluate("t => { t.scrollTop = 0; }")
    page.locator('.trace-list [data-seq="2"]').click()
    expect(detail).to_contain_text('"i": 2')
    detail.get_by_role("button", name="Close event details").click()
    expect(detail).to_be_hidden()

    # By keyboard: from the box, arrows walk the rows (past the window's
    # margin, which is rendered as the focus moves) and Enter opens one.
    expect(trace).to_be_focused()
    trace.evaluate("t => { t.scrollTop = 0; }")
    page.keyboard.press("ArrowDown")
    expect(page.locator('.trace-list [data-seq="1"]')).to_be_focused()
    for _ in range(80):
        page.keyboard.press("ArrowDown")
    focused = page.locator('.trace-list [data-seq="81"]')
    expect(focused).to_be_focused()
    expect(focused).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(detail).to_contain_text('"i": 81')


@pytest.mark.timeout(45)
def test_done_row_is_coloured_by_how_the_run_ended(server: LiveServer, page: Page) -> None:
    ok = start(server, "echo", hello=1)
    stopped = start(server, "sleeper", seconds=60)
    with server.client() as c:
        assert c.post(f"/runs/{stopped}/stop").status_code == 202
    sign_in(page, server)
    for run_id, status, colour in (
        (ok, "success", "--success-bg"),
        (stopped, "stopped", "--stopped-bg"),
    ):
        page.goto(f"{server.base_url}/ui/runs/{run_id}")
        expect(page.locator(".run-page")).to_have_attribute("data-status", status)
        last = run_json(server, run_id)["event_count"]
        done = page.locator(f'.trace-list [data-seq="{last}"]')
        expect(done).to_have_attribute("data-type", "done")
        expect(done).to_have_class(re.compile(rf"\bev-done-{status}\b"))
        assert _row_background(page, last) == _css_colour(page, colour), status
    screenshot(page, "trace-done-stopped.png")


@pytest.mark.timeout(45)
def test_copy_id_and_link_and_download_the_trace_as_json_lines(
    server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    run_id = start(server, "ticker", n=40, interval=0)
    sign_in(page, server)
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "success")
    record = run_json(server, run_id)
    wait_seq(page, record["event_count"])

    copy_id = page.get_by_role("button", name="Copy id")
    copy_id.click()
    expect(page.locator("#copy-run-id")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == run_id
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("#copy-run-url")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{server.base_url}/ui/runs/{run_id}"
    expect(page.locator("#copy-run-id")).to_have_text("Copy id")  # the note goes away

    with page.expect_download() as info:
        page.get_by_role("button", name="Download JSONL").click()
    download = info.value
    assert download.suggested_filename == f"run-{run_id}.jsonl"
    path = download.path()
    assert path is not None
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == record["event_count"]
    assert [json.loads(line) for line in lines] == record["events"]
    screenshot(page, "run-page-copied.png")
