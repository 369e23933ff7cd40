"""Event streams of docs/api.md §3 from Tornado: Tornado glue over :mod:`bgdownload.web.streams`.

The web layer frames the events (as it does for the Quart server); this writes
what it yields and lets go of it the moment the client disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from bgdownload.models import Event
from bgdownload.web import requests
from bgdownload.web.errors import error_reply
from bgdownload.web.streams import (
    KEEPALIVE_INTERVAL,
    SSE_HEADERS,
    job_events,
    sse_text,
    ws_messages,
)
from bgdownload_jupyter.base import AUTH_RESOURCE, BgdownloadAPIHandler, BgdownloadMixin

#: tornado setting holding the keep-alive interval (the extension's ``keepalive_interval``)
KEEPALIVE_KEY = "bgdownload_keepalive_interval"


class EventStreamHandler(BgdownloadAPIHandler):
    """Shared SSE plumbing; subclasses pick the Service iterator."""

    _pump: asyncio.Task[None] | None = None
    _gone = False

    def last_event_id(self) -> str | None:
        """``Last-Event-ID`` header (EventSource reconnects) or ``?last_event_id=``."""
        return requests.last_event_id(
            self.request.headers.get("Last-Event-ID"),
            self.get_query_argument("last_event_id", None),
        )

    async def stream(self, events: AsyncIterator[Event]) -> None:
        """Serve ``events`` until they end or the client goes away."""
        interval = float(self.settings.get(KEEPALIVE_KEY, KEEPALIVE_INTERVAL))
        self._pump = asyncio.ensure_future(self._write_all(sse_text(events, keepalive=interval)))
        # asyncio.wait, not await: a pump cancelled by a disconnect is the normal end
        await asyncio.wait({self._pump})
        if not self._pump.cancelled() and self._pump.exception() is not None:
            raise self._pump.exception()  # type: ignore[misc]
        if not self._gone:
            self.finish()

    async def _write_all(self, text: AsyncGenerator[str, None]) -> None:
        try:
            for name, value in SSE_HEADERS.items():
                self.set_header(name, value)
            async for chunk in text:
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            self._gone = True
        finally:
            await text.aclose()

    def on_connection_close(self) -> None:
        self._gone = True
        if self._pump is not None:
            self._pump.cancel()
        super().on_connection_close()


class JobEventsHandler(EventStreamHandler):
    """``/downloads/{id}/events``: one job's events; ends after its terminal state."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        service = await self.service()
        await self.stream(await job_events(service, self.owner, job_id, self.last_event_id()))


class OwnerEventsHandler(EventStreamHandler):
    """``/events``: events of all the caller's jobs; never ends by itself."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = await self.service()
        await self.stream(service.owner_events(self.owner, last_event_id=self.last_event_id()))


class JobWebSocketHandler(BgdownloadMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``/downloads/{id}/ws``: frames ``{"event", "id", "data"}``; closes after the terminal one."""

    auth_resource = AUTH_RESOURCE
    _messages: AsyncGenerator[str, None] | None = None
    _pump: asyncio.Task[None] | None = None

    def set_default_headers(self) -> None:
        pass  # JupyterHandler's page headers mean nothing to a WebSocket

    @ws_authenticated
    async def get(self, job_id: str) -> None:
        if not await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403)
        query, header = self.get_query_argument("last_event_id", None), "Last-Event-ID"
        try:  # refused before the upgrade, with the status the REST routes would answer
            last = requests.last_event_id(query, self.request.headers.get(header))
            events = await job_events(await self.service(), self.owner, job_id, last)
        except Exception as exc:
            error = error_reply(exc)
            if error.internal:
                raise
            raise web.HTTPError(error.status, error.message) from None
        self._messages = ws_messages(events)
        await super().get(job_id)

    def open(self, job_id: str) -> None:
        super().open()
        self._pump = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        assert self._messages is not None
        try:
            async for message in self._messages:
                await self.write_message(message)
            self.close(1000)
        except WebSocketClosedError:
            pass
        finally:
            await self._messages.aclose()

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
