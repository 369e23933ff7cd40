"""Event streams of docs/api.md §3 over SSE and WebSocket: Quart glue over ``web.streams``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from quart import Blueprint, Response, request, websocket
from quart_schema import document_querystring

from bgdownload.models import Event
from bgdownload.server.auth import (
    authenticate_request,
    authenticate_websocket,
    current_owner,
    query_token_allowed,
)
from bgdownload.server.metrics import server_metrics
from bgdownload.server.state import service
from bgdownload.web import requests
from bgdownload.web.schemas import StreamQuery
from bgdownload.web.streams import SSE_HEADERS, job_events, sse_text, ws_messages

streams_bp = Blueprint("streams", __name__, url_prefix="/api/v1")
streams_bp.before_request(authenticate_request)
streams_bp.before_websocket(authenticate_websocket)


def last_event_id() -> str | None:
    """``Last-Event-ID`` header (EventSource reconnects) or ``?last_event_id=``."""
    return requests.last_event_id(
        request.headers.get("Last-Event-ID"), request.args.get("last_event_id")
    )


def ws_last_event_id() -> str | None:
    return requests.last_event_id(
        websocket.args.get("last_event_id"), websocket.headers.get("Last-Event-ID")
    )


def sse_response(
    events: AsyncIterator[Event], render: Callable[[Event], str | None] = Event.sse
) -> Response:
    """A ``text/event-stream`` response over ``events``; ``render`` may skip one (None)."""
    counter = server_metrics().streams

    async def body() -> AsyncIterator[bytes]:
        counter.opened("sse")
        text = sse_text(events, render)
        try:
            async for chunk in text:
                yield chunk.encode()
        finally:
            await text.aclose()
            counter.closed("sse")

    response = Response(body(), status=200, headers=SSE_HEADERS)
    response.timeout = None  # an event stream may stay open for days
    return response


@streams_bp.get("/downloads/<job_id>/events")
@query_token_allowed
@document_querystring(StreamQuery)
async def job_event_stream(job_id: str) -> Response:
    """Server-Sent Events of one job; ends after its terminal state."""
    return sse_response(await job_events(service(), current_owner(), job_id, last_event_id()))


@streams_bp.get("/events")
@query_token_allowed
@document_querystring(StreamQuery)
async def owner_event_stream() -> Response:
    """Server-Sent Events of all the caller's jobs; never ends by itself."""
    return sse_response(service().owner_events(current_owner(), last_event_id=last_event_id()))


async def pump_websocket(
    events: AsyncIterator[Event],
    frame: Callable[[Event], dict[str, Any] | None] = Event.to_ws_frame,
) -> None:
    """Accept, send one JSON frame per event, close normally when the events end.

    A client that goes away cancels this handler; ``finally`` releases the iterator.
    """
    counter = server_metrics().streams
    counter.opened("websocket")
    messages = ws_messages(events, frame)
    try:
        await websocket.accept()
        async for message in messages:
            await websocket.send(message)
        await websocket.close(1000)
    finally:
        await messages.aclose()
        counter.closed("websocket")


@streams_bp.websocket("/downloads/<job_id>/ws")
async def job_websocket(job_id: str) -> None:
    """The job's events as frames ``{"event", "id", "data"}``; closes after the terminal one."""
    # an unknown job is refused with 404 here, before the upgrade
    events = await job_events(service(), current_owner(), job_id, ws_last_event_id())
    await pump_websocket(events)
