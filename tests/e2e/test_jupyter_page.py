"""The Active Downloads page served by Jupyter, in headless Chromium: under a non-root
base URL, behind Jupyter's login, with XSRF on the POSTs the page makes."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.test_jupyter_e2e import TOKEN, JupyterServer, jupyter, wait_healthy
from tests.e2e.test_page import CHROMIUM_ARGS, SCREENSHOT_DIR, TIMEOUT_MS, playwright_api, row
from tests.support.source_server import SourceServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["jupyter"]  # the fixture, imported for use here


async def test_page_inside_jupyter_starts_and_follows_a_download(
    jupyter: JupyterServer, source: SourceServer
) -> None:
    with httpx.Client(headers={"Authorization": f"token {TOKEN}"}) as client:
        wait_healthy(jupyter, client)
    expect = playwright_api.expect
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            # ?token= logs the browser in (a cookie), as Jupyter's own links do
            await page.goto(f"{jupyter.url}bgdownload/?token={TOKEN}")
            await expect(page.locator("#connection")).to_have_attribute("data-mode", "live")
            await page.fill("#url", source.url("/bytes/2000000?rate=1000000&seed=jp"))
            await page.fill("#filename", "inside-jupyter.bin")
            await page.click("#start")
            job = row(page, "inside-jupyter.bin")
            await expect(job).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
            await expect(job.locator(".bar")).to_have_attribute("data-percent", "100")
            await page.screenshot(path=str(SCREENSHOT_DIR / "bgdownload-jupyter-page.png"))
        finally:
            await browser.close()
    with httpx.Client(headers={"Authorization": f"token {TOKEN}"}) as client:
        items = client.get(f"{jupyter.url}bgdownload/api/v1/downloads").json()["items"]
    assert [(j["filename"], j["sha256"]) for j in items] == [
        ("inside-jupyter.bin", source.expected_sha256(2_000_000, "jp"))
    ]
