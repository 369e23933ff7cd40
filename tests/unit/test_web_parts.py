"""The framework-free web layer both adapters share: parsing, error mapping, stream framing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bgdownload.errors import (
    IllegalTransition,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerUnavailable,
    Unauthorized,
)
from bgdownload.models import Event, JobState
from bgdownload.web import requests
from bgdownload.web.errors import error_reply
from bgdownload.web.streams import sse_text, ws_messages


def test_create_bodies_from_json_and_forms() -> None:
    assert requests.json_create_body("application/json", b'{"url": "http://x/"}') == {
        "url": "http://x/"
    }
    assert requests.json_create_body("", b"  ") == {}
    assert requests.form_create_body({"url": "http://x/", "priority": "3"}) == {
        "url": "http://x/", "priority": "3"
    }
    for mimetype, raw in (("application/json", b"{nope"), ("application/json", b"[1]"),
                          ("text/plain", b"{}"), ("application/json", b'{"colour": 1}'),
                          ("application/json", b'{"url": 42}')):
        with pytest.raises(InvalidRequest):
            requests.json_create_body(mimetype, raw)
    with pytest.raises(InvalidRequest, match="colour"):
        requests.form_create_body({"url": "http://x/", "colour": "red"})
    assert requests.is_form(requests.mimetype("multipart/form-data; boundary=b"))
    assert not requests.is_form(requests.mimetype("application/json; charset=utf-8"))
    with pytest.raises(PayloadTooLarge):
        requests.check_body_size(11, 10)
    requests.check_body_size(None, 10)


def test_query_strings_read_as_the_quart_schema_did() -> None:
    assert requests.list_arguments({}) == (None, 50, None)
    states, limit, cursor = requests.list_arguments(
        {"state": ["active,waiting"], "limit": ["2"], "cursor": ["c"]}
    )
    assert states == {JobState.ACTIVE, JobState.WAITING} and (limit, cursor) == (2, "c")
    for query in ({"limit": ["0"]}, {"limit": ["501"]}, {"limit": ["abc"]},
                  {"limit": ["1", "2"]}, {"state": ["sleeping"]}):
        with pytest.raises(InvalidRequest):
            requests.list_arguments(query)
    assert requests.delete_file({"delete_file": ["true"]}) is True
    assert requests.delete_file({}) is False
    with pytest.raises(InvalidRequest):
        requests.delete_file({"delete_file": ["maybe"]})


def test_last_event_id_takes_the_first_non_blank() -> None:
    assert requests.last_event_id(" 1-0 ", "2-0") == "1-0"
    assert requests.last_event_id("", "2-0") == "2-0"
    assert requests.last_event_id(None, "  ") is None


@pytest.mark.parametrize(("exc", "status", "code"), [
    (InvalidRequest("bad"), 400, "invalid_request"),
    (NotFound("gone"), 404, "not_found"),
    (ServerUnavailable("starting"), 503, "unavailable"),
    (RedisConnectionError("refused"), 503, "unavailable"),
    (ConnectionRefusedError("refused"), 503, "unavailable"),
    (IllegalTransition("a bug"), 500, "internal"),
    (KeyError("a bug"), 500, "internal"),
])
def test_one_error_mapping(exc: BaseException, status: int, code: str) -> None:
    reply = error_reply(exc)
    assert (reply.status, reply.code) == (status, code)
    assert reply.body == {"error": {"code": code, "message": reply.message}}
    assert ("Retry-After" in reply.headers) == (status == 503)
    assert reply.internal == (status == 500)
    if status == 500:
        assert reply.message == "internal server error"  # no details leak


def test_error_headers_of_401_and_429() -> None:
    assert "WWW-Authenticate" in error_reply(Unauthorized("who?")).headers
    assert error_reply(RateLimited("slow down", retry_after=0.2)).headers == {"Retry-After": "1"}


def _event(n: int, state: str = "active") -> Event:
    return Event(f"{n}-0", "state", {"state": state})


async def _events(*items: Event, then: BaseException | None = None,
                  pause: float = 0.0) -> AsyncIterator[Event]:
    for item in items:
        await asyncio.sleep(pause)
        yield item
    if then is not None:
        raise then


async def test_sse_text_frames_retry_events_and_keepalives() -> None:
    chunks = [c async for c in sse_text(_events(_event(1), _event(2), pause=0.05),
                                        keepalive=0.01)]
    assert chunks[0] == "retry: 2000\n\n"
    assert [c for c in chunks if not c.startswith(":")][1:] == [_event(1).sse(), _event(2).sse()]
    assert ": keep-alive\n\n" in chunks


async def test_a_job_deleted_mid_stream_ends_it_like_a_finished_one() -> None:
    chunks = [c async for c in sse_text(_events(_event(1), then=NotFound("deleted")))]
    assert chunks == ["retry: 2000\n\n", _event(1).sse()]
    messages = [m async for m in ws_messages(_events(_event(1), then=NotFound("deleted")))]
    assert [json.loads(m) for m in messages] == [_event(1).to_ws_frame()]


def test_the_jupyter_extension_does_not_load_quart() -> None:
    code = (
        "import sys, bgdownload_jupyter\n"
        "loaded = [m for m in ('quart', 'quart_schema', 'bgdownload.server') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
