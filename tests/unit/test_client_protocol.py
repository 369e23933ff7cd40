"""Request building, response → typed objects, error mapping, event folding."""

from __future__ import annotations

import httpx
import pytest

from bgdownload import errors
from bgdownload.client import protocol
from bgdownload.client.protocol import JobInfo
from bgdownload.models import Event, JobState, parse_states
from bgdownload.retry_after import parse_retry_after

from .client_fakes import JOB_ID, error_body, job_json


def response(status: int, body: object = None, headers: dict[str, str] | None = None,
             content: bytes | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://api.test/api/v1/downloads/x")
    if content is not None:
        return httpx.Response(status, content=content, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", errors.InvalidRequest),
        (401, "unauthorized", errors.Unauthorized),
        (404, "not_found", errors.NotFound),
        (409, "invalid_state", errors.InvalidState),
        (413, "payload_too_large", errors.PayloadTooLarge),
        (422, "invalid_url", errors.InvalidURL),
        (422, "blocked_destination", errors.BlockedDestination),
    ],
)
def test_error_body_maps_to_the_matching_class(status, code, cls):
    exc = protocol.error_from_response(response(status, error_body(code, "why it failed")))
    assert type(exc) is cls
    assert exc.code == code
    assert exc.message == "why it failed"
    assert isinstance(exc, errors.BgdownloadError)


def test_rate_limited_carries_retry_after():
    exc = protocol.error_from_response(
        response(429, error_body("rate_limited", "slow down"), {"Retry-After": "7"})
    )
    assert isinstance(exc, errors.RateLimited)
    assert exc.retry_after == 7.0


def test_unknown_code_is_kept_verbatim():
    exc = protocol.error_from_response(response(418, error_body("teapot", "short and stout")))
    assert type(exc) is errors.BgdownloadError
    assert exc.code == "teapot"


def test_non_json_gateway_error_is_server_unavailable():
    exc = protocol.error_from_response(response(502, content=b"<html>Bad Gateway</html>"))
    assert isinstance(exc, errors.ServerUnavailable)
    assert "502" in exc.message and "Bad Gateway" in exc.message


def test_retry_after_as_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("nonsense") is None


def test_unreadable_retry_after_means_one_second():
    exc = protocol.error_from_response(
        response(429, error_body("rate_limited", "slow down"), headers={"Retry-After": "nonsense"})
    )
    assert isinstance(exc, errors.RateLimited) and exc.retry_after == 1.0


def test_create_call_has_a_fresh_idempotency_key_each_time():
    first = protocol.create_call("https://example.org/a", filename="a.bin", priority=2)
    second = protocol.create_call("https://example.org/a")
    assert first.json == {"url": "https://example.org/a", "filename": "a.bin", "priority": 2}
    assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]
    assert first.idempotent


def test_create_call_sends_every_download_option():
    call = protocol.create_call(
        None, files=["https://example.org/a", {"url": "https://example.org/b"}],
        filename=None, sha256="ab" * 32, headers={"Cookie": "c"}, priority=1, max_speed=10,
        connections=4, metadata={"k": "v"},
    )
    assert call.json == {
        "files": [{"url": "https://example.org/a"}, {"url": "https://example.org/b"}],
        "sha256": "ab" * 32, "priority": 1, "max_speed": 10, "connections": 4,
        "headers": {"Cookie": "c"}, "metadata": {"k": "v"},
    }


def test_an_unknown_download_option_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        protocol.create_call("https://example.org/a", colour="red")  # type: ignore[call-arg]


def test_create_call_needs_a_url():
    with pytest.raises(errors.InvalidRequest, match="needs a url"):
        protocol.create_call()
    with pytest.raises(errors.InvalidRequest, match="must be a string"):
        protocol.create_call(42)  # type: ignore[arg-type]


def test_bad_job_id_is_refused_before_any_request():
    with pytest.raises(errors.InvalidRequest, match="not a job id"):
        protocol.get_call("../../etc/passwd")


def test_state_filter_typo_is_a_clear_error():
    assert parse_states("active, waiting") == {JobState.ACTIVE, JobState.WAITING}
    with pytest.raises(errors.InvalidRequest, match="unknown state 'actve'"):
        parse_states("actve")


def test_job_info_from_the_api_object():
    info = JobInfo.from_dict(job_json("failed", error={"code": "http_error", "message": "404"}))
    assert info.id == JOB_ID and info.state is JobState.FAILED
    assert info.error is not None and info.error.code == "http_error"
    assert info.progress.total == 1000


def test_malformed_job_object_is_a_clear_error():
    with pytest.raises(errors.BgdownloadError, match="malformed job"):
        JobInfo.from_dict({"state": "active"})


def test_events_fold_into_the_job():
    info = JobInfo.from_dict(job_json("waiting"))
    info = info.apply(Event("1-0", "progress", {
        "id": JOB_ID, "state": "active", "loaded": 400, "total": 1000, "speed": 100,
    }))
    assert info.state is JobState.ACTIVE
    assert (info.progress.loaded, info.progress.percent, info.progress.eta) == (400, 40.0, 6.0)
    info = info.apply(Event("2-0", "state", {
        "id": JOB_ID, "state": "completed", "path": "video.mp4", "sha256": "ab" * 32,
        "error": None,
    }))
    assert info.state is JobState.COMPLETED and info.path == "video.mp4"
    assert info.progress.loaded == 1000
    assert protocol.is_terminal_event(Event("2-0", "state", {"state": "completed"}))
    assert not protocol.is_terminal_event(Event("2-0", "progress", {"state": "completed"}))


def test_event_ids_compare_as_stream_ids():
    assert protocol.event_order("1732479303301-10") > protocol.event_order("1732479303301-9")
    assert protocol.event_order("not-an-id") is None


def test_retry_policy_only_repeats_safe_calls():
    policy = protocol.RetryPolicy(retries=2)
    create = protocol.create_call("https://example.org/a")
    pause = protocol.control_call(JOB_ID, "pause")
    read_error = httpx.ReadError("reset")
    refused = httpx.ConnectError("refused")
    assert policy.retry_exception(create, read_error, 0)
    assert not policy.retry_exception(pause, read_error, 0)
    assert policy.retry_exception(pause, refused, 0)  # never reached the server
    assert not policy.retry_exception(create, read_error, 2)
    assert policy.retry_response(create, response(503, {}), 0)
    assert not policy.retry_response(pause, response(503, {}), 0)
