"""The job widget under a real kernel (nbclient): it moves while the cell blocks in wait().

The kernel talks to a scripted in-kernel API (httpx.MockTransport) whose event
stream trickles out over a second, so this checks the threading design — widget
updates sent from the client's background loop reach the frontend while the
kernel's main thread is blocked — without needing a server.
"""

from __future__ import annotations

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.slow

SETUP = r'''
import asyncio, json, threading, httpx
from bgdownload.client import AsyncClient, Client
ID = "0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11"
def job(state, loaded):
    return {"id": ID, "state": state, "url": "https://example.org/v.bin", "filename": "v.bin",
            "progress": {"loaded": loaded, "total": 1000, "speed": 100}}
EVENTS = [("snapshot", job("active", 0)),
          ("progress", {"id": ID, "state": "active", "loaded": 500, "total": 1000, "speed": 9}),
          ("state", {"id": ID, "state": "completed", "path": "v.bin", "error": None})]
class Trickle(httpx.AsyncByteStream):
    async def __aiter__(self):
        for i, (name, data) in enumerate(EVENTS):
            await asyncio.sleep(0.3)
            yield f"id: {i + 1}-0\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()
def route(request):
    if request.url.path.endswith("/events"):
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=Trickle())
    route.calls = getattr(route, "calls", 0) + 1
    return httpx.Response(200, json=job("completed", 1000) if route.calls > 1 else job("waiting", 0))
'''

SYNC_WAIT = r'''
client = Client("http://api.test", journal=False, transport=httpx.MockTransport(route))
j = client.get(ID)
j.wait()
print("STATE", j.state.value)
'''

# one cell: nbclient (unlike JupyterLab) only records comm messages whose parent is the
# cell running now, and a task keeps the parent of the cell that started it
ASYNC_DISPLAY = r'''
aclient = AsyncClient("http://api.test", journal=False, transport=httpx.MockTransport(route))
aj = await aclient.get(ID)
display(aj)
await aj.wait()  # the widget's task runs on the kernel's loop meanwhile
print("ASYNC", aj.state.value)
'''


def run(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (SETUP, *cells)])
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            store_widget_state=True).execute()
    return nb


def widget_models(nb: nbformat.NotebookNode, name: str) -> list[dict]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [m["state"] for m in state.values() if m["model_name"] == name]


def outputs(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_sync_wait_shows_a_widget_that_reaches_success():
    nb = run(SYNC_WAIT)
    assert "STATE completed" in outputs(nb)
    [bar] = widget_models(nb, "FloatProgressModel")
    assert (bar["value"], bar["bar_style"]) == (100.0, "success")
    views = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in views[0]["data"]


def test_async_job_widget_is_driven_by_the_kernel_loop():
    nb = run(ASYNC_DISPLAY)
    assert "ASYNC completed" in outputs(nb)
    [bar] = widget_models(nb, "FloatProgressModel")
    assert bar["bar_style"] == "success"
