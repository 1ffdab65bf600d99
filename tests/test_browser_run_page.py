"""The run page in a real browser: its live trace, autoscroll, stop and delete.

The trace survives a reload, a cut stream and a reopen with no duplicate and
no gap. Each test has its own live server (``server``); fixtures and helpers
in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser_helpers import NARROW, Tab, no_horizontal_overflow, screenshot
from tests.dashboard_pages import sign_in, trace_seqs, wait_seq
from tests.dashboard_runs import cut_run_streams, run_json, start
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]


@pytest.mark.timeout(45)
def test_trace_survives_reload_cut_stream_and_reopen_without_dup_or_gap(
    server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    resumes: list[int] = []  # Last-Event-ID of every stream request the pages make

    def watch(request: Any) -> None:
        if request.url.endswith("/stream"):
            resumes.append(int(request.headers.get("last-event-id", "0")))

    tab.context.on("request", watch)
    sign_in(page, server)
    form = page.get_by_role("form", name="Start a catalog agent")
    form.get_by_label("Agent", exact=True).select_option("ticker")
    form.get_by_label("Input (JSON object)").fill('{"n": 80, "interval": 0.05}')
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    run_url = page.url

    # Events arrive live.
    expect(page.locator(".run-page")).to_have_attribute("data-status", "running")
    expect(page.locator('.trace-list [data-seq="3"]')).to_be_visible()
    expect(page.locator(".conn")).to_have_text("live")

    # Reload mid-run: the record's events, then the stream from the last seq.
    wait_seq(page, 8)
    page.reload()
    wait_seq(page, 15)
    assert run_json(server, run_id)["status"] == "running", "the run should outlive the reload"

    # The server drops the stream (as it does to a lagging reader): the page
    # reconnects with Last-Event-ID and carries on.
    shown = int(page.locator(".trace").get_attribute("data-last-seq") or 0)
    assert cut_run_streams(server, run_id) == 1
    wait_seq(page, 30)
    # Each stream request resumes after what that page had already rendered:
    # the first page and the reloaded one after the events in GET /runs/{id},
    # the reconnect after the cut after everything shown before it.
    assert len(resumes) == 3, resumes
    assert resumes[0] < 8 <= resumes[1] < 15 <= shown <= resumes[2], (resumes, shown)

    # Close the tab and open the run's URL again in a new one.
    page.close()
    page = tab.new_page()
    page.goto(run_url)
    expect(page.locator(".run-page")).to_have_attribute("data-status", "success", timeout=15_000)

    total = run_json(server, run_id)["event_count"]
    assert total == 81  # 80 ticks + done
    assert trace_seqs(page) == list(range(1, total + 1))
    expect(page.locator(".result-card")).to_contain_text('"ticks": 80')
    expect(page.locator(".event-count")).to_have_text(str(total))

    # The page at 1280x800, then on a narrow window.
    screenshot(page, "run-page.png")
    page.set_viewport_size(NARROW)
    no_horizontal_overflow(page)
    screenshot(page, "run-page-narrow.png")


@pytest.mark.timeout(30)
def test_trace_autoscroll_pauses_when_scrolled_up(server: LiveServer, page: Page) -> None:
    sign_in(page, server)
    run_id = start(server, "ticker", n=90, interval=0.03)
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    trace = page.locator(".trace")
    at_bottom = "t => t.scrollHeight - t.scrollTop - t.clientHeight < 30"

    wait_seq(page, 30)  # more rows than the box shows
    assert trace.evaluate(at_bottom)
    expect(trace).to_have_attribute("data-autoscroll", "on")

    trace.evaluate("t => { t.scrollTop = 0; }")
    expect(trace).to_have_attribute("data-autoscroll", "off")
    seen = int(trace.get_attribute("data-last-seq") or 0)
    wait_seq(page, seen + 10)
    assert trace.evaluate("t => t.scrollTop") == 0, "new events must not yank the view down"
    jump = page.locator(".jump")
    expect(jump).to_have_text(re.compile(r"\d+ new events?"))
    screenshot(page, "run-page-running.png")

    jump.click()
    expect(trace).to_have_attribute("data-autoscroll", "on")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "success")
    expect(page.locator('.trace-list [data-seq="91"]')).to_be_attached()
    assert trace.evaluate(at_bottom)
    last_row_shown = """t => {
        const box = t.getBoundingClientRect();
        const row = t.querySelector('[data-seq="91"]').getBoundingClientRect();
        return row.top >= box.top && row.bottom <= box.bottom + 1;
    }"""
    assert trace.evaluate(last_row_shown)


@pytest.mark.timeout(30)
def test_stop_then_delete_show_their_outcomes(server: LiveServer, page: Page) -> None:
    sign_in(page, server)
    run_id = start(server, "sleeper", seconds=60)
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "running")
    expect(page.locator('.trace-list [data-type="sleeping"]')).to_be_visible()
    outcome = page.locator("#action-outcome")

    # The server refuses to delete a running run (409): the button says so first.
    delete = page.get_by_role("button", name="Delete", exact=True)
    expect(delete).to_be_disabled()
    expect(delete).to_have_attribute("title", re.compile("Stop the run first"))
    expect(delete).to_have_accessible_description(re.compile("Stop the run first"))
    screenshot(page, "run-page-delete-disabled.png")

    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".run-page")).to_have_attribute("data-status", "stopped")
    expect(page.locator(".title-row .badge")).to_have_text("stopped")
    expect(outcome).to_have_text("The run stopped.")
    expect(page.locator(".result-card")).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert trace_seqs(page) == list(range(1, run_json(server, run_id)["event_count"] + 1))

    expect(delete).to_be_enabled()
    expect(delete).to_have_attribute("title", "Delete this run and its trace")
    delete.click()
    page.get_by_role("button", name="Delete permanently").click()
    expect(outcome).to_have_text("Run deleted.")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "deleted")
    with server.client() as c:
        assert c.get(f"/runs/{run_id}").status_code == 404

    page.get_by_role("link", name="All runs").click()
    expect(page.locator(".runs-card .empty")).to_be_visible()
    expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_have_count(0)
