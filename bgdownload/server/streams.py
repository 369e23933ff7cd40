"""Event streams of API.md §3 over SSE and WebSocket.

Each open stream holds one Service iterator (a hub subscription). Whatever
ends the stream — the terminal event, the client going away, the server
shutting down — closes that iterator in ``finally`` at once, so a dropped
browser tab costs nothing after its TCP connection is gone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from quart import Blueprint, Response, request, websocket
from quart_schema import document_querystring

from bgdownload.errors import NotFound
from bgdownload.models import Event
from bgdownload.server.auth import (
    authenticate_request,
    authenticate_websocket,
    current_owner,
    query_token_allowed,
)
from bgdownload.server.metrics import server_metrics
from bgdownload.server.schemas import StreamQuery
from bgdownload.server.state import service
from bgdownload.web.streams import KEEPALIVE_INTERVAL, aclose, with_keepalive

#: browsers wait this long before reconnecting a dropped EventSource
RETRY_MS = 2000

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}

streams_bp = Blueprint("streams", __name__, url_prefix="/api/v1")
streams_bp.before_request(authenticate_request)
streams_bp.before_websocket(authenticate_websocket)


def last_event_id() -> str | None:
    """``Last-Event-ID`` header (EventSource reconnects) or ``?last_event_id=``."""
    value = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    return value.strip() or None if value else None


def sse_response(
    events: AsyncIterator[Event],
    render: Callable[[Event], str | None] = Event.sse,
    *,
    keepalive: float = KEEPALIVE_INTERVAL,
) -> Response:
    """A ``text/event-stream`` response over ``events``; ``render`` may skip one (None)."""
    counter = server_metrics().streams

    async def body() -> AsyncIterator[bytes]:
        counter.opened("sse")
        paced = with_keepalive(events, keepalive)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            async for item in paced:
                if item is None:
                    yield b": keep-alive\n\n"
                    continue
                text = render(item)
                if text is not None:
                    yield text.encode()
        except NotFound:
            return  # the job was deleted mid-stream: end it like a finished one
        finally:
            # async for does not close what it iterates: do it now, not at GC time
            await aclose(paced)
            await aclose(events)
            counter.closed("sse")

    response = Response(body(), status=200, headers=SSE_HEADERS)
    response.timeout = None  # an event stream may stay open for days
    return response


@streams_bp.get("/downloads/<job_id>/events")
@query_token_allowed
@document_querystring(StreamQuery)
async def job_event_stream(job_id: str) -> Response:
    """Server-Sent Events of one job; ends after its terminal state."""
    owner = current_owner()
    svc = service()
    await svc.get(owner, job_id)  # a 404 must come before the 200 of the stream
    return sse_response(svc.job_events(owner, job_id, last_event_id=last_event_id()))


@streams_bp.get("/events")
@query_token_allowed
@document_querystring(StreamQuery)
async def owner_event_stream() -> Response:
    """Server-Sent Events of all the caller's jobs; never ends by itself."""
    return sse_response(service().owner_events(current_owner(), last_event_id=last_event_id()))


async def pump_websocket(
    events: AsyncIterator[Event], frame: Callable[[Event], dict[str, Any] | None]
) -> None:
    """Accept, send one JSON frame per event, close normally when the events end.

    A client that goes away cancels this handler; ``finally`` releases the iterator.
    """
    counter = server_metrics().streams
    counter.opened("websocket")
    try:
        await websocket.accept()
        async for event in events:
            data = frame(event)
            if data is not None:
                await websocket.send(json.dumps(data))
        await websocket.close(1000)
    except NotFound:
        await websocket.close(1000)
    finally:
        await aclose(events)
        counter.closed("websocket")


@streams_bp.websocket("/downloads/<job_id>/ws")
async def job_websocket(job_id: str) -> None:
    """The job's events as frames ``{"event", "id", "data"}``; closes after the terminal one."""
    owner = current_owner()
    svc = service()
    await svc.get(owner, job_id)  # refused with 404 before the upgrade
    last = websocket.args.get("last_event_id") or websocket.headers.get("Last-Event-ID")
    await pump_websocket(svc.job_events(owner, job_id, last_event_id=last), Event.to_ws_frame)
