"""Event streams of API.md §3 from Tornado: Server-Sent Events and the WebSocket.

The twin of ``bgdownload/server/streams.py``: the Service does replay after
``Last-Event-ID``, snapshots and the end after a terminal state; this writes
each event, a ``: keep-alive`` comment after each silent interval, and lets go
of the Service iterator the moment the client disconnects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from bgdownload.errors import NotFound, ServerUnavailable
from bgdownload.models import Event
from bgdownload.server.streams import RETRY_MS, SSE_HEADERS
from bgdownload.web.streams import KEEPALIVE_INTERVAL, aclose, with_keepalive
from bgdownload_jupyter.base import AUTH_RESOURCE, BgdownloadAPIHandler, BgdownloadMixin

#: tornado setting holding the keep-alive interval (the extension's ``keepalive_interval``)
KEEPALIVE_KEY = "bgdownload_keepalive_interval"


class EventStreamHandler(BgdownloadAPIHandler):
    """Shared SSE plumbing; subclasses pick the Service iterator."""

    _pump: asyncio.Task[None] | None = None
    _gone = False

    def last_event_id(self) -> str | None:
        """``Last-Event-ID`` header (EventSource reconnects) or ``?last_event_id=``."""
        value = self.request.headers.get("Last-Event-ID") or self.get_query_argument(
            "last_event_id", None
        )
        return (value.strip() or None) if value else None

    async def stream(self, events: AsyncIterator[Event]) -> None:
        """Serve ``events`` until they end or the client goes away."""
        self._pump = asyncio.ensure_future(self._write_all(events))
        # asyncio.wait, not await: a pump cancelled by a disconnect is the normal end
        await asyncio.wait({self._pump})
        if not self._pump.cancelled() and self._pump.exception() is not None:
            raise self._pump.exception()  # type: ignore[misc]
        if not self._gone:
            self.finish()

    async def _write_all(self, events: AsyncIterator[Event]) -> None:
        interval = float(self.settings.get(KEEPALIVE_KEY, KEEPALIVE_INTERVAL))
        paced = with_keepalive(events, interval)
        try:
            for name, value in SSE_HEADERS.items():
                self.set_header(name, value)
            self.write(f"retry: {RETRY_MS}\n\n")
            await self.flush()
            async for item in paced:
                self.write(": keep-alive\n\n" if item is None else item.sse())
                await self.flush()
        except NotFound:
            pass  # the job was deleted mid-stream: end it like a finished one
        except StreamClosedError:
            self._gone = True
        finally:
            # async for does not close what it iterates: do it now, not at GC time
            await aclose(paced)
            await aclose(events)

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
        await service.get(self.owner, job_id)  # a 404 must come before the 200 of the stream
        await self.stream(
            service.job_events(self.owner, job_id, last_event_id=self.last_event_id())
        )


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
    _events: AsyncIterator[Event] | None = None
    _pump: asyncio.Task[None] | None = None

    def set_default_headers(self) -> None:
        pass  # JupyterHandler's page headers mean nothing to a WebSocket

    @ws_authenticated
    async def get(self, job_id: str) -> None:
        if not await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403)
        try:
            service = await self.service()
            await service.get(self.owner, job_id)  # refused before the upgrade
        except (NotFound, ServerUnavailable) as exc:
            raise web.HTTPError(exc.status, exc.message) from None
        last = self.get_query_argument("last_event_id", None) or self.request.headers.get(
            "Last-Event-ID"
        )
        self._events = service.job_events(self.owner, job_id, last_event_id=last)
        await super().get(job_id)

    def open(self, job_id: str) -> None:
        super().open()
        self._pump = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        assert self._events is not None
        try:
            async for event in self._events:
                await self.write_message(json.dumps(event.to_ws_frame()))
            self.close(1000)
        except NotFound:
            self.close(1000)
        except WebSocketClosedError:
            pass
        finally:
            await aclose(self._events)

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
