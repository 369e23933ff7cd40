"""Event streams of docs/api.md §3 as both adapters serve them: SSE text and WebSocket frames.

Each open stream holds one Service iterator (a hub subscription). Whatever
ends the stream — the terminal event, the client going away, the server
shutting down — closes that iterator in ``finally`` at once, so a dropped
browser tab costs nothing after its TCP connection is gone. The adapters only
write what these generators yield, and close them when their client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

from bgdownload.errors import NotFound
from bgdownload.models import Event
from bgdownload.service import Service

T = TypeVar("T")

#: seconds of silence after which an SSE stream gets a ``: keep-alive`` comment (docs/api.md §3)
KEEPALIVE_INTERVAL = 15.0

#: browsers wait this long before reconnecting a dropped EventSource
RETRY_MS = 2000

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}

KEEPALIVE_COMMENT = ": keep-alive\n\n"


async def job_events(
    service: Service, owner: str, job_id: str, last_event_id: str | None
) -> AsyncIterator[Event]:
    """The job's events, once it is known to exist: a 404 must come before the stream's 200."""
    await service.get(owner, job_id)
    return service.job_events(owner, job_id, last_event_id=last_event_id)


async def sse_text(
    events: AsyncIterator[Event],
    render: Callable[[Event], str | None] = Event.sse,
    *,
    keepalive: float = KEEPALIVE_INTERVAL,
) -> AsyncGenerator[str, None]:
    """The body of a ``text/event-stream`` over ``events``; ``render`` may skip one (None).

    A ``retry:`` line first, then each event, and a keep-alive comment after each
    ``keepalive`` seconds of silence. A job deleted mid-stream ends it like a finished one.
    """
    paced = with_keepalive(events, keepalive)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        async for item in paced:
            if item is None:
                yield KEEPALIVE_COMMENT
                continue
            text = render(item)
            if text is not None:
                yield text
    except NotFound:
        return
    finally:
        # async for does not close what it iterates: do it now, not at GC time
        await aclose(paced)
        await aclose(events)


async def ws_messages(
    events: AsyncIterator[Event],
    frame: Callable[[Event], dict[str, Any] | None] = Event.to_ws_frame,
) -> AsyncGenerator[str, None]:
    """One JSON text message per event (``frame`` may skip one); the adapter closes with 1000
    when this ends — after the terminal event, or when the job was deleted mid-stream."""
    try:
        async for event in events:
            data = frame(event)
            if data is not None:
                yield json.dumps(data)
    except NotFound:
        return
    finally:
        await aclose(events)


async def with_keepalive(
    events: AsyncIterator[T], interval: float = KEEPALIVE_INTERVAL
) -> AsyncIterator[T | None]:
    """Yield every item of ``events``, and ``None`` after each ``interval`` of silence.

    ``None`` means "time for a keep-alive". The pending read is a task that a
    timeout never cancels: cancelling ``anext()`` on a timer would throw into
    the source generator and end it. When this generator is closed (the client
    went away) the pending read is cancelled and ``events`` closed at once, so
    the subscription behind it is released without waiting for another event.
    """
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await aclose(events)


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator if it can be closed (async generators can)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):
            await close()
