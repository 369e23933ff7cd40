"""Helpers for serving event streams, shared by the Quart and Tornado adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")

#: seconds of silence after which an SSE stream gets a ``: keep-alive`` comment (API.md §3)
KEEPALIVE_INTERVAL = 15.0


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
