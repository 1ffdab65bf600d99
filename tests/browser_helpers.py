"""Fixtures and page helpers for the dashboard's browser tests (a ``pytest_plugins`` module).

- ``browser`` (module scope): Debian's Chromium (``/usr/bin/chromium``, ``make
  browser-deps``) driven by Playwright; a browser download never works here,
  so Playwright is pointed at that executable. Skips the test without it.
- ``tab``: a fresh browser context (own cookies) with one page, in the
  viewer's time zone; JavaScript and console errors fail the test.
- ``page``: that tab's page.

Nothing sleeps: every wait is a Playwright expectation or ``wait_for_function``
with a timeout. Screenshots go to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

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
