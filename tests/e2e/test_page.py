"""The Active Downloads page in headless Chromium against a real server, worker and source."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.source_server import SourceServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT_DIR = Path(os.environ.get("BGDOWNLOAD_SCREENSHOT_DIR", "/tmp"))
TIMEOUT_MS = 60_000

if not shutil.which(CHROMIUM):
    pytest.skip("needs Debian's chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(env: dict[str, str], log_path: Path, ready_status: int) -> Iterator[str]:
    """``python -m bgdownload.server.serve`` on a free loopback port; its base URL once
    ``GET /api/v1/downloads`` answers ``ready_status``."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bgdownload.server.serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/v1/downloads", timeout=2).status_code == ready_status:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log_path.read_text())
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def api_server(stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with running_server(stack_env, tmp_path / "server.log", 200) as base:
        yield base


@pytest.fixture
def token_server(stack_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    env = {**stack_env, "BGDOWNLOAD_TOKENS": "sesame:alice"}
    with running_server(env, tmp_path / "server-tokens.log", 401) as base:
        yield base


@pytest.fixture
async def page(api_server: str) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 800})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(api_server)
            yield page
        finally:
            await browser.close()


def row(page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".job", has=page.locator(".job-name", has_text=name))


async def start_download(page, url: str, filename: str) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#url", url)
    await page.fill("#filename", filename)
    await page.click("#start")
    await row(page, filename).wait_for()


async def test_page_starts_controls_and_follows_downloads(
    page, api_server: str, worker: object, source: SourceServer  # type: ignore[no-untyped-def]
) -> None:
    expect = playwright_api.expect
    await expect(page.locator("#connection")).to_have_attribute("data-mode", "live")

    # 1. one download from the form runs to 100 %
    await start_download(page, source.url("/bytes/3000000?rate=1500000&seed=a"), "first.bin")
    first = row(page, "first.bin")
    await expect(first).to_have_attribute("data-state", "active", timeout=TIMEOUT_MS)
    await expect(first.locator(".job-stats")).to_contain_text("MB/s")
    await expect(first.locator(".job-stats")).to_contain_text("left")
    await page.screenshot(path=str(SCREENSHOT_DIR / "bgdownload-page-active.png"))
    await expect(first).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await expect(first.locator(".bar")).to_have_attribute("data-percent", "100")
    await expect(first.locator('[data-action="file"]')).to_be_visible()

    # 2. pause and resume another; cancel a third
    await start_download(page, source.url("/bytes/4000000?rate=400000&seed=b"), "paused.bin")
    await start_download(page, source.url("/bytes/4000000?rate=400000&seed=c"), "cancelled.bin")
    paused = row(page, "paused.bin")
    cancelled = row(page, "cancelled.bin")
    await expect(paused).to_have_attribute("data-state", "active")
    await paused.locator('[data-action="pause"]').click()
    await expect(paused).to_have_attribute("data-state", "paused")
    await expect(paused.locator('[data-action="resume"]')).to_be_visible()
    await paused.locator('[data-action="resume"]').click()
    await expect(paused).to_have_attribute("data-state", "active")

    await expect(cancelled).to_have_attribute("data-state", "active")
    await cancelled.locator('[data-action="cancel"]').click()
    await expect(cancelled).to_have_attribute("data-state", "cancelled")
    await expect(cancelled.locator('[data-action="retry"]')).to_be_visible()

    # 3. reload mid-download: the row is rebuilt from the server and keeps moving
    before = float(await paused.locator(".bar").get_attribute("data-percent") or 0)
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-mode", "live")
    paused = row(page, "paused.bin")
    await expect(paused).to_have_attribute("data-state", "active")
    await page.wait_for_function(
        """([name, before]) => {
            const rows = [...document.querySelectorAll('.job')];
            const row = rows.find(r => r.querySelector('.job-name').textContent === name);
            return row && Number(row.querySelector('.bar').dataset.percent) > before;
        }""",
        arg=["paused.bin", before],
    )
    await expect(row(page, "cancelled.bin")).to_have_attribute("data-state", "cancelled")
    await expect(row(page, "first.bin")).to_have_attribute("data-state", "completed")
    await page.screenshot(path=str(SCREENSHOT_DIR / "bgdownload-page.png"), full_page=True)
    await expect(paused).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)


async def test_page_polls_when_event_source_is_unavailable(
    api_server: str, worker: object, source: SourceServer
) -> None:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.add_init_script("delete window.EventSource;")
            await page.goto(api_server)
            expect = playwright_api.expect
            await expect(page.locator("#connection")).to_have_attribute("data-mode", "polling")
            async with httpx.AsyncClient(timeout=10) as http:
                created = await http.post(f"{api_server}/api/v1/downloads", json={
                    "url": source.url("/bytes/1000000?rate=1000000"), "filename": "polled.bin"})
            assert created.status_code == 202
            polled = row(page, "polled.bin")
            await expect(polled).to_have_attribute("data-state", "completed")
        finally:
            await browser.close()


async def test_seed_event_source_snippet_runs_against_the_progress_route(
    page, api_server: str, worker: object, source: SourceServer  # type: ignore[no-untyped-def]
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(f"{api_server}/api/videos/download-url",
                                  data={"url": source.url("/bytes/2000000?rate=1000000")})
    assert created.status_code == 202
    job_id = created.json()["jobId"]
    # the snippet from the seed's "Monitor Progress" section, verbatim apart from collecting
    messages = await page.evaluate(
        """(jobId) => new Promise((resolve) => {
            const seen = [];
            const eventSource = new EventSource(`/api/videos/download-progress/${jobId}`);
            eventSource.onmessage = (event) => {
              const { loaded, total, percent, speed } = JSON.parse(event.data);
              const loadedMB = (loaded / 1024 / 1024).toFixed(2);
              const totalMB = (total / 1024 / 1024).toFixed(2);
              const speedMBps = (speed / 1024 / 1024).toFixed(2);
              seen.push({ text: `${loadedMB} MB / ${totalMB} MB @ ${speedMBps} MB/s`,
                          data: JSON.parse(event.data) });
              if (JSON.parse(event.data).state === 'completed') {
                eventSource.close();
                resolve(seen);
              }
            };
        })""",
        job_id,
    )
    assert messages[-1]["data"] == {"state": "completed", "percent": 100}
    progress = [m for m in messages if "state" not in m["data"]]
    assert progress, json.dumps(messages)
    assert all(m["text"].endswith("MB/s") and "NaN" not in m["text"] for m in progress)
    assert all(m["data"]["total"] == 2000000 for m in progress)


async def test_page_asks_for_a_token_when_the_server_wants_one(token_server: str) -> None:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(token_server)
            dialog = page.locator("#token-dialog")
            await playwright_api.expect(dialog).to_be_visible()
            await page.fill("#token-input", "sesame")
            await page.click("#token-dialog button[value=save]")
            await playwright_api.expect(page.locator("#connection")).to_have_attribute(
                "data-mode", "live")
            assert await page.evaluate("localStorage.getItem('bgdownload.token')") == "sesame"
            # a reload keeps the token: no second prompt, straight back to live
            await page.reload()
            await playwright_api.expect(page.locator("#connection")).to_have_attribute(
                "data-mode", "live")
            await playwright_api.expect(dialog).to_be_hidden()
        finally:
            await browser.close()


async def test_page_shows_bidi_controls_in_urls_as_escapes(
    page, api_server: str, source: SourceServer  # type: ignore[no-untyped-def]
) -> None:
    # a right-to-left override would show ".../evil‮gpj.exe" as ".../evilexe.jpg"
    spoofed = source.url("/bytes/1000") + "&n=evil\u202egpj.exe"
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(f"{api_server}/api/v1/downloads",
                                  json={"url": spoofed, "filename": "spoof.bin"})
    assert created.status_code == 202
    shown = row(page, "spoof.bin").locator(".job-url")
    await playwright_api.expect(shown).to_contain_text("evil\\u202egpj.exe")
    assert "\u202e" not in await shown.inner_text()
