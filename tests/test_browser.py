"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Each test runs its own live server (``server`` fixture: real uvicorn on
127.0.0.1) and a fresh browser context (own cookies) in one shared Chromium.
Nothing sleeps: every wait is a Playwright expectation or ``wait_for_function``
with a timeout.  Screenshots go to ``test-artifacts/`` (git-ignored).

Needs ``/usr/bin/chromium`` (``make browser-deps`` installs it); a browser
download never works here, so Playwright is pointed at that executable.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from actors.stream_items import Lagged
from actors.subscription import Subscription
from tests.live_server import TOKENS, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
VIEWER_TZ = "Europe/Berlin"  # not the server's UTC: times must be converted
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 400, "height": 800}

expect.set_options(timeout=10_000)


# --------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (make browser-deps)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Tab:
    """A browser context with one page; JavaScript errors fail the test.

    So do console errors (a CSP refusal, a failed module import), except
    Chromium's note on every 4xx answer, which some tests provoke on purpose.
    """

    def __init__(self, browser: Browser, viewport: dict[str, int] = WIDE) -> None:
        self.context: BrowserContext = browser.new_context(
            viewport=viewport, locale="en-GB", timezone_id=VIEWER_TZ
        )
        self.errors: list[str] = []
        self.page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"JavaScript errors in the page: {self.errors}"


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    t = Tab(browser)
    yield t
    t.close()


@pytest.fixture
def page(tab: Tab) -> Page:
    return tab.page


def sign_in(page: Page, server: LiveServer, user: str = "alice") -> None:
    """The link ``runyard serve`` prints: ``/?token=...``."""
    page.goto(f"{server.base_url}/?token={TOKENS[user]}")
    expect(page.locator("#current-user")).to_have_text(user)


def wait_feed_live(page: Page) -> None:
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "open")


def rendered_seqs(page: Page) -> list[int]:
    seqs: list[int] = page.eval_on_selector_all(
        ".trace-list [data-seq]", "els => els.map(e => Number(e.dataset.seq))"
    )
    return seqs


def wait_seq(page: Page, seq: int, timeout: float = 10_000) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.trace-list [data-seq]').length >= n",
        arg=seq,
        timeout=timeout,
    )


def start(server: LiveServer, agent: str, user: str = "alice", **input_dict: Any) -> str:
    with server.client(user) as c:
        r = c.post("/runs", json={"agent": agent, "input_dict": input_dict})
        assert r.status_code == 202, r.text
        run_id: str = r.json()["run_id"]
        return run_id


def run_json(server: LiveServer, run_id: str, user: str = "alice") -> dict[str, Any]:
    with server.client(user) as c:
        r = c.get(f"/runs/{run_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def cut_run_streams(server: LiveServer, run_id: str) -> int:
    """Drop the server side of ``run_id``'s open streams, as a lagging reader's is."""

    async def cut() -> int:  # on the server's loop, which owns the streams
        subs = [s for s in server.gateway.streams if isinstance(s, Subscription)]
        subs = [s for s in subs if s.run_id == run_id]
        for sub in subs:
            sub.close(Lagged(last_seq=sub.last_seq))
        return len(subs)

    loop = server.gateway.runtime.loop
    return asyncio.run_coroutine_threadsafe(cut(), loop).result(5)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    assert viewport is not None
    assert width <= viewport["width"], f"page is {width} px wide in a {viewport['width']} px window"


def local_hms(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(VIEWER_TZ)).strftime("%H:%M:%S")


# --------------------------------------------------------------------------
# Signing in


@pytest.mark.browser
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


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_sign_in_link_drops_the_token_and_admins_see_the_registry(
    server: LiveServer, page: Page
) -> None:
    sleeper = start(server, "sleeper", seconds=60)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    sign_in(page, server, "root")
    assert "token" not in page.url
    assert page.evaluate("location.search") == ""

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
    page.goto(server.base_url + "/?token=wrong")
    expect(page.locator("#token-error")).to_have_text(re.compile("not accepted"))
    assert "token" not in page.url
    with server.client() as c:
        assert c.post(f"/runs/{sleeper}/stop").status_code == 202


# --------------------------------------------------------------------------
# The run page


@pytest.mark.browser
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
    shown = len(rendered_seqs(page))
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
    assert rendered_seqs(page) == list(range(1, total + 1))
    expect(page.locator(".result-card")).to_contain_text('"ticks": 80')
    expect(page.locator(".event-count")).to_have_text(str(total))

    # The page at 1280x800, then on a narrow window.
    screenshot(page, "run-page.png")
    page.set_viewport_size(NARROW)
    no_horizontal_overflow(page)
    screenshot(page, "run-page-narrow.png")


@pytest.mark.browser
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
    seen = len(rendered_seqs(page))
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


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_stop_then_delete_show_their_outcomes(server: LiveServer, page: Page) -> None:
    sign_in(page, server)
    run_id = start(server, "sleeper", seconds=60)
    page.goto(f"{server.base_url}/ui/runs/{run_id}")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "running")
    expect(page.locator('.trace-list [data-type="sleeping"]')).to_be_visible()
    outcome = page.locator("#action-outcome")

    # Deleting a running run is refused: the server's 409 message is shown.
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete permanently").click()
    expect(outcome).to_have_text(re.compile("still running; stop it first"))
    expect(outcome).to_have_attribute("data-kind", "error")

    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".run-page")).to_have_attribute("data-status", "stopped")
    expect(page.locator(".title-row .badge")).to_have_text("stopped")
    expect(outcome).to_have_text("The run stopped.")
    expect(page.locator(".result-card")).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert rendered_seqs(page) == list(range(1, run_json(server, run_id)["event_count"] + 1))

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete permanently").click()
    expect(outcome).to_have_text("Run deleted.")
    expect(page.locator(".run-page")).to_have_attribute("data-status", "deleted")
    with server.client() as c:
        assert c.get(f"/runs/{run_id}").status_code == 404

    page.get_by_role("link", name="All runs").click()
    expect(page.locator(".runs-card .empty")).to_be_visible()
    expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_have_count(0)


@pytest.mark.browser
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


# --------------------------------------------------------------------------
# The runs list


@pytest.mark.browser
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


@pytest.mark.browser
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


# --------------------------------------------------------------------------
# The start form


@pytest.mark.browser
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


@pytest.mark.browser
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
