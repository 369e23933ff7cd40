"""Server-Sent Events: an incremental parser and a reconnecting event source.

The parser follows the HTML standard's event-stream interpretation (fields
``event``, ``data``, ``id``, ``retry``; comments; CR, LF or CRLF line ends, even
split across chunks). :class:`EventSource` reconnects by itself the way a
browser's ``EventSource`` does: it sends ``Last-Event-ID`` so the server
replays what was missed (docs/api.md §3) and waits the server's ``retry:`` advice.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx

from bgdownload import errors
from bgdownload.models import Event

log = logging.getLogger(__name__)

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event, before its data is interpreted."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed it text as it arrives; it returns the events completed by that text."""

    def __init__(self) -> None:
        self._pending = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._seen_first_line = False
        #: the last event id the stream set (kept across events, as the standard says)
        self.last_event_id: str | None = None
        #: reconnection delay the server advised, in milliseconds
        self.retry: int | None = None

    def feed(self, text: str) -> list[ServerSentEvent]:
        buffer = self._pending + text
        # a CR at the very end may be the first half of a CRLF: decide with the next chunk
        held = "\r" if buffer.endswith("\r") else ""
        lines = _LINE_END.split(buffer[: len(buffer) - len(held)])
        self._pending = lines.pop() + held
        return [e for e in map(self._line, lines) if e is not None]

    def _line(self, line: str) -> ServerSentEvent | None:
        if not self._seen_first_line:
            self._seen_first_line = True
            line = line.removeprefix("\ufeff")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, event_id = self._data, self._event or "message", self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return ServerSentEvent(data="\n".join(data), event=event, id=event_id or self.last_event_id)


class _ByteDecoder:
    """Bytes → text for :class:`SSEDecoder`; a character split over two chunks stays whole."""

    def __init__(self, decoder: SSEDecoder) -> None:
        self._decoder = decoder
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        return self._decoder.feed(self._text.decode(chunk))


def to_event(sse: ServerSentEvent) -> Event | None:
    """Our events carry JSON objects; anything else is logged and skipped."""
    try:
        data = json.loads(sse.data)
    except ValueError:
        log.warning("skipping an event whose data is not JSON: %.100r", sse.data)
        return None
    if not isinstance(data, dict):
        log.warning("skipping an event whose data is not an object: %.100r", sse.data)
        return None
    return Event(id=sse.id or "", event=sse.event, data=data)


Opener = Callable[[str | None], AbstractAsyncContextManager[httpx.Response]]


class EventSource:
    """Async iterator of :class:`Event` that survives dropped connections.

    ``open_stream(last_event_id)`` opens the HTTP stream and raises a
    :class:`~bgdownload.errors.BgdownloadError` for a non-200 answer. Connection
    failures and 5xx answers are retried (waiting the server's ``retry:``
    advice, growing on repeated failures); other errors end the iteration.
    A stream that ends cleanly is reopened too: only the consumer decides when
    it has seen enough (a job stream's terminal state event).
    """

    def __init__(
        self,
        open_stream: Opener,
        *,
        last_event_id: str | None = None,
        retry: float = 2.0,
        max_failures: int | None = 30,
        max_delay: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._open = open_stream
        self.last_event_id = last_event_id
        #: seconds to wait before reconnecting (the server's ``retry:`` wins)
        self.retry = retry
        self._max_failures = max_failures
        self._max_delay = max_delay
        self._sleep = sleep
        #: how many times a connection was (re)opened, for diagnostics and tests
        self.connections = 0

    async def __aiter__(self) -> AsyncGenerator[Event, None]:
        failures = 0
        while True:
            try:
                async with self._open(self.last_event_id) as response:
                    self.connections += 1
                    failures = 0
                    decoder = SSEDecoder()
                    splitter = _ByteDecoder(decoder)
                    async for chunk in response.aiter_bytes():
                        for sse in splitter.feed(chunk):
                            if sse.id:
                                self.last_event_id = sse.id
                            event = to_event(sse)
                            if event is not None:
                                yield event
                        if decoder.retry is not None:
                            self.retry = decoder.retry / 1000
            except (httpx.TransportError, errors.ServerUnavailable) as exc:
                failures += 1
                if self._max_failures is not None and failures > self._max_failures:
                    if isinstance(exc, errors.ServerUnavailable):
                        raise
                    raise errors.ServerUnavailable(
                        f"the event stream kept failing ({failures} times): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                delay = min(self._max_delay, max(self.retry, 0.25 * 2 ** (failures - 1)))
                log.info("event stream interrupted (%s); reconnecting in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            # the server closed the stream without the consumer stopping: reconnect
            await self._sleep(self.retry)
