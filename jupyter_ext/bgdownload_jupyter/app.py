"""The extension app: settings, routes, and the background start of bgdownload."""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float

from bgdownload.config import Settings
from bgdownload.errors import ConfigError
from bgdownload.web import STATIC
from bgdownload_jupyter.base import RUNTIME_KEY
from bgdownload_jupyter.handlers import (
    ControlHandler,
    DownloadHandler,
    DownloadsHandler,
    FileHandler,
    HealthHandler,
)
from bgdownload_jupyter.page import PageHandler, RedirectToPage, StaticHandler
from bgdownload_jupyter.runtime import Runtime
from bgdownload_jupyter.streams import (
    KEEPALIVE_KEY,
    JobEventsHandler,
    JobWebSocketHandler,
    OwnerEventsHandler,
)

_ID = r"([^/]+)"
_API = "bgdownload/api/v1"


class BgdownloadJupyterApp(ExtensionApp):
    """bgdownload inside Jupyter: the API under ``{base_url}bgdownload/api/v1`` and the page."""

    name = "bgdownload_jupyter"
    description = "Background downloads with live progress, served by Jupyter"

    keepalive_interval = Float(
        15.0, config=True, help="Seconds of silence before an event stream gets a keep-alive."
    )
    start_local_stack = Bool(
        True,
        config=True,
        help="With no BGDOWNLOAD_REDIS_URL, start the local bgdownload stack in the background.",
    )

    runtime: Runtime

    def initialize_settings(self) -> None:
        log = self.log
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            self.runtime = Runtime(Settings(), log)
            self.runtime.error = str(exc)
            log.error("bgdownload: bad setting, the API will answer 503: %s", exc)
        else:
            self.runtime = Runtime(settings, log)
            if settings.redis_url is None and not self.start_local_stack:
                self.runtime.error = (
                    "BGDOWNLOAD_REDIS_URL is not set and starting the local stack is disabled"
                )
            else:
                # scheduled, not awaited: Jupyter's start never waits for Redis or the stack.
                # The server's io_loop exists from initialize() on, running or not yet.
                assert self.serverapp is not None
                self.serverapp.io_loop.add_callback(self.runtime.schedule)
        self.settings[RUNTIME_KEY] = self.runtime
        self.settings[KEEPALIVE_KEY] = self.keepalive_interval

    def initialize_handlers(self) -> None:
        root = os.path.realpath(self.runtime.settings.download_dir)
        handlers: list[tuple[str, Any] | tuple[str, Any, dict[str, Any]]] = [
            (f"{_API}/downloads", DownloadsHandler),
            (f"{_API}/downloads/{_ID}", DownloadHandler),
            (f"{_API}/downloads/{_ID}/(cancel|pause|resume|retry)", ControlHandler),
            (f"{_API}/downloads/{_ID}/events", JobEventsHandler),
            (f"{_API}/downloads/{_ID}/ws", JobWebSocketHandler),
            (f"{_API}/downloads/{_ID}/file", FileHandler, {"path": root}),
            (f"{_API}/events", OwnerEventsHandler),
            ("bgdownload/healthz", HealthHandler),
            ("bgdownload/static/(.*)", StaticHandler, {"path": str(STATIC)}),
            ("bgdownload/", PageHandler),
            ("bgdownload", RedirectToPage),
        ]
        self.handlers.extend(handlers)

    async def stop_extension(self) -> None:
        # the local stack is left running: like for the client, it outlives its starter
        await self.runtime.close()
