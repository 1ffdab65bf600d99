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
    """The seqs of the trace rows in the page now: the window in view plus its margin."""
    seqs: list[int] = page.eval_on_selector_all(
        ".trace-list [data-seq]", "els => els.map(e => Number(e.dataset.seq))"
    )
    return seqs


# Scrolls the trace box from top to end a view at a time, waiting two frames
# after each step (the window renders on the next frame), and collects every
# row's seq; each window must itself be consecutive, so a duplicate or a hole
# anywhere fails.  Puts the scroll position back.
_WALK_TRACE = """async (box) => {
    const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const start = box.scrollTop;
    const seen = [];
    for (let top = 0; ; top += Math.max(1, box.clientHeight)) {
        box.scrollTop = top;
        await frames();
        const rows = box.querySelectorAll('.trace-list [data-seq]');
        const seqs = [...rows].map(e => Number(e.dataset.seq));
        for (let i = 1; i < seqs.length; i += 1) {
            const [a, b] = [seqs[i - 1], seqs[i]];
            if (b !== a + 1) return {error: `rows ${a} then ${b}`};
        }
        for (const s of seqs) if (!seen.length || s > seen[seen.length - 1]) seen.push(s);
        if (box.scrollTop + box.clientHeight >= box.scrollHeight - 1) break;
    }
    box.scrollTop = start;
    await frames();
    return {seen};
}"""


def trace_seqs(page: Page) -> list[int]:
    """Every seq the trace shows, read by scrolling it end to end (rows are windowed)."""
    walked = page.locator(".trace").evaluate(_WALK_TRACE)
    assert "error" not in walked, walked
    seqs: list[int] = walked["seen"]
    return seqs


def wait_seq(page: Page, seq: int, timeout: float = 10_000) -> None:
    """The trace holds events up to ``seq`` (its box's ``data-last-seq``)."""
    page.wait_for_function(
        "n => Number(document.querySelector('.trace')?.dataset.lastSeq || 0) >= n",
        arg=seq,
        timeout=timeout,
    )


def local_hms(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(VIEWER_TZ)).strftime("%H:%M:%S")
