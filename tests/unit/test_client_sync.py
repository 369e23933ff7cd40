"""Client and Job over httpx.MockTransport: retries, idempotency, wait(), events, attach."""

from __future__ import annotations

import io
import socket

import httpx
import pytest

from bgdownload import errors
from bgdownload.client import Client, Journal
from bgdownload.client.terminal import TerminalBar
from bgdownload.models import JobState

from .client_fakes import JOB_ID, Recorder, error_body, job_json, sse_event, sse_response

OTHER_ID = "7d1f0a2b-0000-4000-8000-000000000002"


def make_client(route, **kwargs) -> tuple[Client, Recorder]:
    recorder = Recorder(route)
    kwargs.setdefault("journal", False)
    client = Client("http://api.test", "secret", transport=recorder.transport(),
                    stream_retry=0.01, **kwargs)
    return client, recorder


def test_create_sends_the_body_token_and_an_idempotency_key_reused_on_retry():
    answers = iter([
        httpx.Response(503, json=error_body("unavailable", "starting")),
        httpx.Response(202, json=job_json("waiting")),
    ])
    client, rec = make_client(lambda request: next(answers))
    with client:
        job = client.download("https://example.org/video.mp4", filename="v.mp4",
                              headers={"Cookie": "x=1"}, metadata={"k": 1})
    assert job.id == JOB_ID and job.state is JobState.WAITING
    first, second = rec.requests
    assert first.headers["Authorization"] == "Bearer secret"
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.content == second.content
    assert httpx.Response(200, content=first.content).json() == {
        "url": "https://example.org/video.mp4", "filename": "v.mp4",
        "headers": {"Cookie": "x=1"}, "metadata": {"k": 1},
    }


def test_create_is_retried_after_a_dropped_connection_with_the_same_key():
    calls = []

    def route(request):
        calls.append(request.headers["Idempotency-Key"])
        if len(calls) == 1:
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json=job_json("waiting"))

    client, _ = make_client(route)
    with client:
        client.download("https://example.org/video.mp4")
        client.download("https://example.org/video.mp4")
    assert calls[0] == calls[1]
    assert calls[2] != calls[1]  # a new call is a new job


def test_control_calls_are_not_retried_and_map_errors():
    client, rec = make_client(
        lambda request: httpx.Response(409, json=error_body("invalid_state", "already done"))
    )
    with client, pytest.raises(errors.InvalidState, match="already done"):
        client.pause(JOB_ID)
    assert len(rec.requests) == 1
    client, rec = make_client(lambda request: httpx.Response(503, json={}))
    with client, pytest.raises(errors.ServerUnavailable):
        client.cancel(JOB_ID)
    assert len(rec.requests) == 1


def test_connection_refused_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is free again: nothing listens on it
    with (
        Client(f"http://127.0.0.1:{port}", retries=1, journal=False) as client,
        pytest.raises(errors.ServerUnavailable, match=r"cannot connect .* is it running"),
    ):
        client.jobs()


def events_route(*event_bodies: bytes, final: dict | None = None):
    def route(request):
        if request.url.path.endswith("/events"):
            return sse_response(*event_bodies)
        return httpx.Response(200, json=final or job_json("completed"))
    return route


def test_wait_follows_events_and_returns_the_final_job():
    final = job_json("completed", path="video.mp4", sha256="ab" * 32,
                     progress={"loaded": 1000, "total": 1000, "speed": 0})
    client, rec = make_client(events_route(
        sse_event("1-0", "snapshot", job_json("active")),
        sse_event("2-0", "progress", {"id": JOB_ID, "state": "active", "loaded": 500,
                                      "total": 1000, "speed": 50}),
        sse_event("3-0", "state", {"id": JOB_ID, "state": "completed", "path": "video.mp4",
                                   "sha256": "ab" * 32, "error": None}),
        sse_event("4-0", "progress", {"id": JOB_ID, "state": "active", "loaded": 1}),
        final=final,
    ))
    with client:
        job = client.get(JOB_ID)
        assert job.wait(progress=False) is job
    assert job.state is JobState.COMPLETED and job.sha256 == "ab" * 32
    assert job.path == "video.mp4"
    stream = [r for r in rec.requests if r.url.path.endswith("/events")]
    assert len(stream) == 1  # ended after the terminal event, no reconnect


def test_wait_raises_download_failed_with_the_job_error_code():
    failed = job_json("failed", error={"code": "http_error", "message": "source answered 404"})
    client, _ = make_client(events_route(
        sse_event("1-0", "state", {"id": JOB_ID, "state": "failed", "error": failed["error"]}),
        final=failed,
    ))
    with client:
        job = client.get(JOB_ID)
        with pytest.raises(errors.DownloadFailed) as info:
            job.wait(progress=False)
    assert info.value.code == "http_error"
    assert info.value.job is job
    assert "source answered 404" in str(info.value)


def test_cancelled_job_fails_wait_with_code_cancelled():
    client, _ = make_client(events_route(
        sse_event("1-0", "snapshot", job_json("cancelled")), final=job_json("cancelled")
    ))
    with client, pytest.raises(errors.DownloadFailed) as info:
        client.get(JOB_ID).wait(progress=False)
    assert info.value.code == "cancelled"


def test_wait_timeout():
    def route(request):
        if request.url.path.endswith("/events"):  # a job that never finishes
            return sse_response(sse_event("1-0", "snapshot", job_json("active")))
        return httpx.Response(200, json=job_json("active"))

    client, _ = make_client(route)
    with client, pytest.raises(errors.WaitTimeout, match="still active"):
        client.get(JOB_ID).wait(timeout=0.3, progress=False)


def test_events_iterate_synchronously_and_update_the_job():
    client, _ = make_client(events_route(
        sse_event("1-0", "snapshot", job_json("active")),
        sse_event("2-0", "progress", {"id": JOB_ID, "state": "active", "loaded": 10,
                                      "total": 1000, "speed": 5}),
        sse_event("3-0", "state", {"id": JOB_ID, "state": "cancelled", "error": None}),
    ))
    with client:
        job = client.get(JOB_ID)
        kinds = [event.event for event in job.events()]
        assert kinds == ["snapshot", "progress", "state"]
        assert job.state is JobState.CANCELLED


def test_breaking_out_of_events_closes_the_stream():
    client, _ = make_client(events_route(
        sse_event("1-0", "snapshot", job_json("active")),
        sse_event("2-0", "progress", {"id": JOB_ID, "state": "active", "loaded": 10}),
    ))
    with client:
        job = client.get(JOB_ID)
        for event in job.events():
            assert event.event == "snapshot"
            break
        assert job.refresh().state is JobState.COMPLETED  # the client still works


def test_jobs_follow_cursors_and_filter_states():
    def route(request):
        if request.url.params.get("cursor") == "page2":
            return httpx.Response(200, json={"items": [job_json("active", OTHER_ID)],
                                             "next": None})
        return httpx.Response(200, json={"items": [job_json("waiting")], "next": "page2"})

    client, rec = make_client(route)
    with client:
        found = client.jobs(state="active,waiting")
    assert [j.id for j in found] == [JOB_ID, OTHER_ID]
    assert rec.requests[0].url.params["state"] == "active,waiting"


def test_attach_without_id_uses_the_journal(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")

    def route(request):
        if request.method == "POST":
            return httpx.Response(202, json=job_json("waiting"))
        return httpx.Response(200, json={"items": [job_json("active"),
                                                   job_json("active", OTHER_ID)], "next": None})

    client, rec = make_client(route, journal=journal)
    with client:
        client.download("https://example.org/video.mp4")
        attached = client.attach()
    assert [j.id for j in attached] == [JOB_ID]  # OTHER_ID was created elsewhere
    assert journal.ids() == [JOB_ID]
    assert set(rec.requests[-1].url.params["state"].split(",")) == {"waiting", "active", "paused"}


def test_repr_is_one_line():
    client, _ = make_client(lambda request: httpx.Response(200, json=job_json(
        "active", progress={"loaded": 12_300_000, "total": 50_000_000, "speed": 3_400_000})))
    with client:
        text = repr(client.get(JOB_ID))
    assert "\n" not in text
    assert text.startswith("<Job 0b6f3c1e active 24.6% video.mp4 12.3 MB / 50.0 MB · 3.4 MB/s")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_only_on_a_tty():
    client, _ = make_client(lambda request: httpx.Response(200, json=job_json("completed")))
    with client:
        info = client.get(JOB_ID).info
    assert TerminalBar.for_stdout(info, io.StringIO()) is None
    tty = FakeTTY()
    bar = TerminalBar.for_stdout(info, tty)
    assert bar is not None
    bar.update(info)
    bar.close(info)
    assert "video.mp4 completed" in tty.getvalue()
