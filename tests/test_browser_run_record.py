"""The run page shows the rest of the record, in a real browser: the output schema's
warnings, the operations summary and a run-code run's code, with "Run again".

The first run ends while its page watches, so the warnings and the summary
come from its ``done`` event; the run started again is shown from its record.
Fixtures and helpers in ``tests/browser_helpers.py``.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser_helpers import NARROW, Tab, no_horizontal_overflow, screenshot
from tests.dashboard_pages import sign_in
from tests.dashboard_runs import run_json
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser]

CODE = """import asyncio

async def run(input_dict, ctx):
    ctx.op("llm", "chat", model="m", tokens=1200, cost=0.0042, duration_s=1.5)
    ctx.op("tool", "search", duration_s=0.25)
    await ctx.sleep(input_dict.get("wait", 0))
    return {"items": [{"name": input_dict["name"]}]}
"""
SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    },
}


@pytest.mark.timeout(60)
def test_warnings_ops_and_code_are_shown_and_run_again_starts_the_same_code(
    server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    sign_in(page, server)
    input_dict = {"name": 42, "wait": 2}
    with server.client("alice") as alice:
        resp = alice.post(
            "/agents/run-code/start",
            json={"code": CODE, "input_dict": input_dict, "output_schema": SCHEMA},
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    run_page = page.locator(".run-page")
    expect(run_page).to_have_attribute("data-status", "running")
    expect(page.locator(".code-card pre")).to_have_text(CODE)
    expect(page.locator(".schema-card")).to_be_hidden()  # nothing checked yet

    # It ends while watched: the done event brings the warnings and the summary.
    expect(run_page).to_have_attribute("data-status", "success", timeout=20_000)
    warnings = page.locator(".schema-card")
    expect(warnings).to_be_visible()
    expect(warnings).to_contain_text("does not match its output schema (1 warning)")
    expect(warnings.locator(".schema-path")).to_have_text("/items/0/name")
    expect(warnings.locator("li")).to_contain_text("42 is not of type 'string'")
    llm = page.locator('.ops-table tr[data-kind="llm"]')
    expect(llm.locator("td")).to_have_text(["1", "1.5 s", "1,200", "0.0042"])
    expect(page.locator('.ops-table tr[data-kind="tool"] td')).to_have_text(
        ["1", "0.25 s", "—", "—"]
    )
    assert run_json(server, run_id)["schema_warnings"] == [
        {"path": "/items/0/name", "message": "42 is not of type 'string'"}
    ]
    screenshot(page, "run-page-record.png")
    page.set_viewport_size(NARROW)
    no_horizontal_overflow(page)
    screenshot(page, "run-page-record-narrow.png")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Run again: the code form, filled in with this run's code and input.
    page.get_by_role("button", name="Run again").click()
    expect(page).to_have_url(f"{server.base_url}/")
    expect(page.get_by_role("tab", name="Run code")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#code-source")).to_have_value(CODE)
    assert json.loads(page.locator("#code-input").input_value()) == input_dict
    page.locator("#code-input").fill(json.dumps({"name": "again"}))
    page.get_by_role("button", name="Run code").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f]+$"))
    again = page.url.rsplit("/", 1)[1]
    assert again != run_id
    expect(run_page).to_have_attribute("data-status", "success", timeout=20_000)
    expect(page.locator(".code-card pre")).to_have_text(CODE)
    expect(page.locator('.ops-table tr[data-kind="llm"] td').first).to_have_text("1")
    expect(page.locator(".schema-card")).to_be_hidden()  # run again keeps no schema
    record = run_json(server, again)
    assert record["options"] == {"code": CODE}
    assert record["input_dict"] == {"name": "again"}
