"""What the dashboard shows in a browser page: signing in, the feed, the trace, times.

Each helper waits with a Playwright expectation or ``wait_for_function`` (a
deadline, never a sleep) and fails the test with what it waited for.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from playwright.sync_api import Page, expect

from tests.browser_helpers import VIEWER_TZ
from tests.live_server import TOKENS, LiveServer


def sign_in(page: Page, server: LiveServer, user: str = "alice") -> None:
    """The link ``runyard serve`` prints: ``/#token=...`` (never sent to the server)."""
    page.goto(f"{server.base_url}/#token={TOKENS[user]}")
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


def local_hms(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(VIEWER_TZ)).strftime("%H:%M:%S")
