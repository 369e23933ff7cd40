"""The extension's connection to bgdownload, made in the background.

Jupyter must start at once, so nothing here runs in the load hook: the load
hook schedules :meth:`Runtime.start` on the server's event loop. With no
``BGDOWNLOAD_REDIS_URL`` it first makes sure the local stack runs
(:func:`bgdownload.local.ensure_up`, in a thread: it spawns processes and
waits for them), then tells the server's environment where the API is so
every kernel started afterwards inherits it. Failures are logged and kept
for ``/bgdownload/healthz`` and the API's 503 answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from bgdownload import local
from bgdownload.config import Settings
from bgdownload.errors import ServerUnavailable
from bgdownload.service import Service
from bgdownload.web import rest

#: how long a request waits for a start that is still under way before a 503
READY_WAIT = 90.0
#: the same for ``/bgdownload/healthz``, which should answer a probe promptly
HEALTH_WAIT = 5.0


class Runtime:
    """Owns the extension's :class:`Service`; created at load, started on the loop."""

    def __init__(self, settings: Settings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        #: the local stack's runtime info when this extension started or found it
        self.stack: dict[str, Any] | None = None
        self.error: str | None = None
        self._service: Service | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def single_user(self) -> bool:
        return self.settings.single_user

    @property
    def starting(self) -> bool:
        return self._task is not None and not self._task.done()

    def schedule(self) -> None:
        """Start connecting in the background on the running (or about to run) loop."""
        self._task = asyncio.ensure_future(self.start())

    async def start(self) -> None:
        try:
            settings = self.settings
            if settings.redis_url is None:
                self.log.info("bgdownload: no BGDOWNLOAD_REDIS_URL; starting the local stack")
                loop = asyncio.get_running_loop()
                info = await loop.run_in_executor(None, local.ensure_up, settings)
                self.stack = info
                settings = settings.replace(redis_url=info["redis_url"])
                self._export_for_kernels(info)
                started = ", ".join(info.get("started") or []) or "nothing (already running)"
                self.log.info("bgdownload: local stack at %s; started %s",
                              info.get("api_url"), started)
            self._service = await Service.connect(settings)
            self.settings = settings
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure is reported, never fatal to Jupyter
            self.error = f"{type(exc).__name__}: {exc}"
            self.log.error("bgdownload: could not connect: %s", self.error, exc_info=exc)

    def _export_for_kernels(self, info: dict[str, Any]) -> None:
        """Kernels inherit the server's environment: tell them where the API is.

        Values the user set are left alone. ``BGDOWNLOAD_TOKEN`` is only filled
        in for a JupyterHub user who has a token of their own in ``BGDOWNLOAD_TOKENS``.
        """
        api_url = info.get("api_url")
        if api_url and not os.environ.get("BGDOWNLOAD_URL"):
            os.environ["BGDOWNLOAD_URL"] = str(api_url)
        if self.settings.tokens and not os.environ.get("BGDOWNLOAD_TOKEN"):
            user = os.environ.get("JUPYTERHUB_USER")
            mine = [t for t, owner in self.settings.tokens.items() if user and owner == user]
            if mine:
                os.environ["BGDOWNLOAD_TOKEN"] = mine[0]

    async def service(self, wait: float = READY_WAIT) -> Service:
        """The connected Service; waits for a start under way, else :class:`ServerUnavailable`."""
        await self._settle(wait)
        if self._service is None:
            reason = self.error or "bgdownload is still starting"
            raise ServerUnavailable(f"bgdownload is not available: {reason}")
        return self._service

    async def _settle(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for a start under way to finish (or fail)."""
        if self._service is None and self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), wait)

    async def health(self, wait: float = HEALTH_WAIT) -> rest.Reply:
        """``/bgdownload/healthz``: the Quart answer plus where things run.

        A start under way is waited for briefly, then reported as ``"starting"``.
        """
        await self._settle(wait)
        where: dict[str, Any] = {}
        if self.stack:
            where = {"api_url": self.stack.get("api_url"), "logs": self.stack.get("logs")}
        if self._service is None:
            message = self.error or "bgdownload is still starting"
            return rest.unhealthy(message, redis="error" if self.error else "starting", extra=where)
        return await rest.health(self._service, extra=where)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._service is not None:
            service, self._service = self._service, None
            await service.close()
