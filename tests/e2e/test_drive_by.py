"""Drive-by requests in headless Chromium (docs/api.md §17): a page of another origin
cannot create jobs on a tokenless server nor open its WebSockets.

The attacker's pages come from a tiny HTTP server on another port, opened as
``http://localhost:<port>`` (another origin, and another site, than the API at
``http://127.0.0.1:<port>``). Each refusal is checked against a control: the
same form or socket from the API's own page works.
"""

from __future__ import annotations

import contextlib
import html
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.source_server import SourceServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000

if not shutil.which(CHROMIUM):
    pytest.skip("needs Debian's chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")


def form_page(action: str, fields: dict[str, str], enctype: str) -> str:
    """An auto-submitting form, as a hostile page would have it."""
    inputs = "".join(f'<input name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    return (f'<!doctype html><form method="POST" action="{html.escape(action)}" '
            f'enctype="{enctype}">{inputs}</form><script>document.forms[0].submit()</script>')


#: opens a WebSocket and reports what happened in ``window.outcome`` (from a frame: to its parent)
SOCKET_SCRIPT = """
const report = (outcome) => { window.outcome = outcome; parent.postMessage(outcome, "*"); };
const socket = new WebSocket(%s);
socket.onmessage = (event) => { report({opened: true, first: JSON.parse(event.data)}); socket.close(); };
socket.onclose = (event) => { if (!window.outcome) report({opened: false, code: event.code}); };
"""


def socket_page(ws_url: str) -> str:
    return f"<!doctype html><script>{SOCKET_SCRIPT % repr(ws_url)}</script>"


def null_origin_socket_page(ws_url: str) -> str:
    """A sandboxed frame: its requests carry ``Origin: null``."""
    inner = html.escape(socket_page(ws_url))
    return ('<!doctype html><script>window.addEventListener("message", '
            "(event) => { window.outcome = event.data; });</script>"
            f'<iframe sandbox="allow-scripts" srcdoc="{inner}"></iframe>')


@contextlib.contextmanager
def attacker_site(pages: dict[str, str]) -> Iterator[str]:
    """Serve ``pages`` ({path: html}) on a free port; yields ``http://localhost:<port>``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
async def browser() -> Any:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser: Any) -> Any:
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


async def job_names(api: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        listed = await http.get(f"{api}/api/v1/downloads")
    assert listed.status_code == 200, listed.text
    return [job["filename"] for job in listed.json()["items"]]


async def submit(page: Any, url: str, api: str) -> Any:
    """Open ``url`` and return the API's answer to the form it submits."""
    async with page.expect_response(
        lambda r: r.url.startswith(api) and r.request.method == "POST"
    ) as answer:
        await page.goto(url)
    return await answer.value


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "multipart/form-data"])
async def test_an_auto_submitting_form_on_another_origin_creates_no_job(
    browser: Any, start_server: Any, source: SourceServer, enctype: str
) -> None:
    api = start_server().url  # tokenless, as `bgdownload serve` started by hand
    action = f"{api}/api/v1/downloads"
    fields = {"url": source.url("/bytes/100?seed=evil"), "filename": "totally-legit-update.sh"}
    with attacker_site({"/": form_page(action, fields, enctype)}) as site:
        page = await new_page(browser)
        refused = await submit(page, f"{site}/", api)
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "forbidden"
    assert await job_names(api) == []

    # control: the very same form on the API's own page is a job
    page = await new_page(browser)
    await page.goto(f"{api}/")
    own = {**fields, "filename": "own-page.bin"}
    async with page.expect_response(lambda r: r.url == action) as answer:
        await page.evaluate(
            """([action, fields, enctype]) => {
                document.open();
                document.write('<form method="POST"></form>');
                const form = document.forms[0];
                form.action = action;
                form.enctype = enctype;
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                form.submit();
            }""",
            [action, own, enctype],
        )
    assert (await answer.value).status == 202
    assert await job_names(api) == ["own-page.bin"]


async def test_websockets_from_another_origin_or_a_sandbox_are_refused(
    browser: Any, start_server: Any, source: SourceServer
) -> None:
    api = start_server().url
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(f"{api}/api/v1/downloads", json={"url": source.url("/bytes/100")})
    assert created.status_code == 202
    job_id = created.json()["id"]
    ws_url = api.replace("http://", "ws://") + f"/api/v1/downloads/{job_id}/ws"
    pages = {"/socket": socket_page(ws_url), "/sandboxed": null_origin_socket_page(ws_url)}
    with attacker_site(pages) as site:
        for path in pages:
            page = await new_page(browser)
            await page.goto(site + path)
            result = await (await page.wait_for_function("window.outcome")).json_value()
            assert result["opened"] is False, (path, result)

    # control: the API's own page opens the same socket and gets the job's snapshot
    page = await new_page(browser)
    await page.goto(f"{api}/")
    # as a function: a bare script's value (its last assignment) would be called by playwright
    await page.evaluate(f"() => {{ {SOCKET_SCRIPT % repr(ws_url)} }}")
    result = await (await page.wait_for_function("window.outcome")).json_value()
    assert result["opened"] is True
    assert result["first"]["event"] == "snapshot" and result["first"]["data"]["id"] == job_id
