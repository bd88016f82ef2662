"""A real browser for the console tests: Debian's Chromium, driven by Playwright (async, on the
test's own event loop, where the gateway runs too).

Without Chromium the browser tests are skipped with the reason; under CI=true they fail instead
(`.ci/run` installs Chromium when it is missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "console"  # the screenshots docs/console.md shows
VIEWPORT = {"width": 1366, "height": 768}


def chromium() -> str:
    """The system Chromium, or skip (fail under CI=true) saying why."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    why = None
    if path is None:
        why = "no Chromium on PATH (apt-get install -y chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            why = "the playwright package is not installed (pip install -e '.[test]')"
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {why}")
        pytest.skip(why)
    return path


@contextlib.asynccontextmanager
async def browser_page(base_url: str):
    """A fresh browser context (no cookies) and page at 1366×768."""
    from playwright.async_api import async_playwright

    path = chromium()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = await browser.new_context(viewport=VIEWPORT, base_url=base_url)
            context.set_default_timeout(10_000)
            yield await context.new_page()
        finally:
            await browser.close()


async def login(page, token: str, then: str = "/console/") -> None:
    """Through the login page, as a person would."""
    await page.goto(then)
    assert "/console/login" in page.url
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(lambda url: "/console/login" not in url)


async def shot(page, name: str) -> None:
    """A screenshot into docs/console/ when ``GATEWAY_SCREENSHOTS=1`` (to refresh the docs by hand);
    otherwise taken all the same (the page must render) and thrown away, so that a test run
    leaves the checkout as it found it."""
    if os.environ.get("GATEWAY_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"))
    else:
        assert await page.screenshot()
