"""The SSE parser, and the event source's reconnects with Last-Event-ID and retry: advice."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgdownload import errors
from bgdownload.client.sse import EventSource, ServerSentEvent, SSEDecoder

from .client_fakes import error_body, sse_event, sse_response

STREAM = (
    "\ufeffretry: 2000\r\n\r\n"
    ": keep-alive\n\n"
    "id: 1-0\nevent: snapshot\ndata: {\"a\": 1}\n\n"
    "data: line one\r\ndata:line two\r\n\r\n"
    "id: 2-0\revent: progress\rdata: {}\r\r"
    "event: orphan\n\n"
)
EXPECTED = [
    ServerSentEvent(data='{"a": 1}', event="snapshot", id="1-0"),
    ServerSentEvent(data="line one\nline two", event="message", id="1-0"),
    ServerSentEvent(data="{}", event="progress", id="2-0"),
]


def decode(chunks: list[str]) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events, decoder


def test_decoder_follows_the_standard():
    events, decoder = decode([STREAM])
    assert events == EXPECTED
    assert decoder.retry == 2000
    assert decoder.last_event_id == "2-0"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_decoder_gives_the_same_events_however_the_text_is_split(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert decode(chunks)[0] == EXPECTED


def test_crlf_split_across_chunks_is_one_line_end():
    events, _ = decode(["data: x\r", "\n\r", "\ndata: y\n\n"])
    assert [e.data for e in events] == ["x", "y"]


def opener(client: httpx.AsyncClient, path: str = "/events"):
    @asynccontextmanager
    async def open_stream(last_event_id):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with client.stream("GET", path, headers=headers) as response:
            if response.status_code == 404:
                await response.aread()
                raise errors.NotFound("gone")
            if response.status_code >= 500:
                raise errors.ServerUnavailable("restarting")
            yield response
    return open_stream


async def test_reconnects_with_last_event_id_and_honours_retry_advice():
    seen_ids: list[str | None] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_ids.append(request.headers.get("Last-Event-ID"))
        if len(seen_ids) == 1:  # two events, then the connection drops mid-event
            return sse_response(
                b"retry: 1500\n\n",
                sse_event("10-0", "snapshot", {"n": 1}),
                sse_event("11-0", "progress", {"n": 2}),
                b"id: 12-0\nevent: progress\ndata: {\"n\"",
                broken=True,
            )
        if len(seen_ids) == 2:
            return httpx.Response(503, json=error_body("unavailable", "restarting"))
        return sse_response(sse_event("12-0", "state", {"n": 3}))

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(base_url="http://api.test",
                                 transport=httpx.MockTransport(handler)) as client:
        source = EventSource(opener(client), sleep=fake_sleep)
        got = []
        async for event in source:
            got.append((event.id, event.data["n"]))
            if len(got) == 3:
                break
    assert got == [("10-0", 1), ("11-0", 2), ("12-0", 3)]  # no gap, no duplicate
    assert seen_ids == [None, "11-0", "11-0"]
    assert sleeps[0] == 1.5  # the server's retry: advice
    assert sleeps[1] >= 1.5


async def test_a_clean_close_reconnects_too():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Last-Event-ID"))
        return sse_response(sse_event(f"{len(calls)}-0", "progress", {"n": len(calls)}))

    async def no_sleep(_: float) -> None:
        pass

    async with httpx.AsyncClient(base_url="http://api.test",
                                 transport=httpx.MockTransport(handler)) as client:
        source = EventSource(opener(client), sleep=no_sleep)
        ids = []
        async for event in source:
            ids.append(event.id)
            if len(ids) == 3:
                break
    assert ids == ["1-0", "2-0", "3-0"]
    assert calls == [None, "1-0", "2-0"]


async def test_client_errors_end_the_stream_and_repeated_failures_give_up():
    async def no_sleep(_: float) -> None:
        pass

    def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=error_body("not_found", "no such job"))

    async with httpx.AsyncClient(base_url="http://api.test",
                                 transport=httpx.MockTransport(not_found)) as client:
        with pytest.raises(errors.NotFound):
            async for _ in EventSource(opener(client), sleep=no_sleep):
                pass

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with httpx.AsyncClient(base_url="http://api.test",
                                 transport=httpx.MockTransport(down)) as client:
        source = EventSource(opener(client), sleep=no_sleep, max_failures=3)
        with pytest.raises(errors.ServerUnavailable, match="kept failing"):
            async for _ in source:
                pass


async def test_non_json_data_is_skipped():
    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(b"data: not json\n\n", sse_event("5-0", "progress", {"ok": True}))

    async with httpx.AsyncClient(base_url="http://api.test",
                                 transport=httpx.MockTransport(handler)) as client:
        async for event in EventSource(opener(client)):
            assert event.data == {"ok": True}
            break
