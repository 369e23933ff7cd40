"""Notebook widgets: what a job row shows in each state, and the live Active Downloads panel."""

from __future__ import annotations

import asyncio
import time

import httpx

from bgdownload.client import AsyncClient
from bgdownload.client.job import AsyncJob
from bgdownload.client.panel import ActivePanel
from bgdownload.client.protocol import JobInfo
from bgdownload.client.widgets import JobWidget

from .client_fakes import JOB_ID, Recorder, job_json, sse_event, sse_response

OTHER_ID = "7d1f0a2b-0000-4000-8000-000000000002"


def row(state: str, **fields) -> JobWidget:
    client = AsyncClient("http://api.test", journal=False)
    return JobWidget(AsyncJob(client, JobInfo.from_dict(job_json(state, **fields))), None)


def visible(widget: JobWidget) -> set[str]:
    return {a for a, b in widget.buttons.items() if b.layout.display != "none"}


def test_active_row_shows_bytes_speed_and_time_left():
    widget = row("active", progress={"loaded": 12_300_000, "total": 50_000_000,
                                     "speed": 3_400_000})
    assert widget.bar.value == 24.6 and widget.bar.bar_style == ""
    assert "12.3 MB / 50.0 MB · 3.4 MB/s · 11 s left" in widget.status.value
    assert "video.mp4" in widget.name.value
    assert visible(widget) == {"pause", "cancel"}


def test_unknown_size_is_an_indeterminate_info_bar():
    widget = row("active", progress={"loaded": 5_000_000, "total": None, "speed": 1_000_000})
    assert widget.bar.bar_style == "info" and widget.bar.value == widget.bar.max
    assert "bgd-pulse" in widget.bar._dom_classes
    assert widget.status.value == "5.0 MB · 1.0 MB/s"


def test_completed_is_green_and_failed_is_red_with_the_error():
    done = row("completed", progress={"loaded": 10, "total": 10, "speed": 0})
    assert done.bar.bar_style == "success" and done.bar.value == 100
    assert visible(done) == set()
    failed = row("failed", error={"code": "http_error", "message": "source answered HTTP 404"})
    assert failed.bar.bar_style == "danger"
    assert "http_error: source answered HTTP 404" in failed.status.value
    assert "color:#c62828" in failed.status.value


def test_paused_offers_resume():
    assert visible(row("paused")) == {"resume", "cancel"}


def test_the_outcome_is_drawn_last_and_sent_whole():
    widget = row("active", progress={"loaded": 5, "total": None, "speed": 1})
    sent: list[str] = []
    for name, part in (("bar", widget.bar), ("status", widget.status)):
        part.send_state = lambda key=None, name=name: sent.append(name)  # type: ignore[method-assign]
    done = JobInfo.from_dict(job_json("completed", progress={"loaded": 10, "total": 10}))
    widget.render(done)
    # the whole final state goes out again, even traits a front end saw before
    assert {"bar", "status"} <= set(sent)
    late = JobInfo.from_dict(job_json("active", progress={"loaded": 5, "total": None}))
    widget.render(late)  # an event from before the outcome, delivered late
    assert (widget.bar.max, widget.bar.value, widget.bar.bar_style) == (100, 100, "success")
    assert "bgd-pulse" not in widget.bar._dom_classes


def test_renders_from_two_threads_end_in_the_final_state():
    import threading

    widget = row("active", progress={"loaded": 5, "total": None, "speed": 1})
    pending = JobInfo.from_dict(job_json("active", progress={"loaded": 5, "total": None}))
    done = JobInfo.from_dict(job_json("completed", progress={"loaded": 10, "total": 10}))
    start = threading.Barrier(2)

    def spam() -> None:
        start.wait()
        for _ in range(200):
            widget.render(pending)

    thread = threading.Thread(target=spam)
    thread.start()
    start.wait()
    widget.render(done)
    thread.join()
    assert (widget.bar.max, widget.bar.value, widget.bar.bar_style) == (100, 100, "success")


def test_names_are_escaped():
    widget = row("waiting", filename="<script>x</script>.bin")
    assert "<script>" not in widget.name.value


async def test_active_panel_adds_and_removes_rows_live():
    released = asyncio.Event()

    def route(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/downloads":
            return httpx.Response(200, json={"items": [job_json("active")], "next": None})
        if path == f"/api/v1/downloads/{OTHER_ID}":
            return httpx.Response(200, json=job_json("waiting", OTHER_ID))
        if path == "/api/v1/events" and not released.is_set():
            released.set()
            return sse_response(
                sse_event("5-0", "progress", {"id": OTHER_ID, "state": "waiting", "loaded": 0}),
                sse_event("6-0", "state", {"id": JOB_ID, "state": "completed", "error": None}),
            )
        return sse_response()  # later reconnects: nothing new

    client = AsyncClient("http://api.test", journal=False, stream_retry=0.05,
                         transport=Recorder(route).transport())
    panel = ActivePanel(client, asyncio.get_running_loop(), linger=0.1)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and list(panel.rows) != [OTHER_ID]:
            await asyncio.sleep(0.02)  # the panel has no hook to wait on; polled, bounded
        assert list(panel.rows) == [OTHER_ID]  # JOB_ID came, completed and went
        assert panel.rows[OTHER_ID].widget in panel.widget.children
        assert len(panel.widget.children) == 3
    finally:
        panel.close()
        await client.aclose()
