"""What every bgdownload handler shares: the Service, the owner, replies and error bodies.

Authentication, authorization and XSRF are Jupyter's (``@web.authenticated``,
``@authorized``, tornado's XSRF check on mutating requests, skipped by Jupyter
for token-authenticated calls); their refusals keep Jupyter's own format.
Everything else that goes wrong leaves as docs/api.md's ``{"error": {"code",
"message"}}``, mapped by :func:`bgdownload.web.errors.error_reply`.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from bgdownload.service import Service
from bgdownload.web import LOCAL_OWNER
from bgdownload.web.errors import error_reply, log_failure
from bgdownload.web.requests import Query
from bgdownload.web.rest import Reply
from bgdownload_jupyter.runtime import Runtime

#: key of the :class:`Runtime` in the tornado application settings
RUNTIME_KEY = "bgdownload_runtime"
#: the resource name given to Jupyter authorizers
AUTH_RESOURCE = "bgdownload"


class BgdownloadMixin:
    """Mixed into Jupyter handlers; expects a ``JupyterHandler`` alongside."""

    settings: dict[str, Any]
    current_user: Any

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.settings[RUNTIME_KEY]
        return runtime

    async def service(self) -> Service:
        return await self.runtime.service()

    @property
    def owner(self) -> str:
        """The job owner: the Jupyter user when tokens are configured, else ``local``."""
        if self.runtime.single_user:
            return LOCAL_OWNER
        return str(self.current_user.username)

    @property
    def api_root(self) -> str:
        """The absolute path of ``{base_url}bgdownload/api/v1``."""
        base = str(self.settings.get("base_url", "/"))
        return base.rstrip("/") + "/bgdownload/api/v1"


class BgdownloadAPIHandler(BgdownloadMixin, APIHandler):
    """JSON handler: Jupyter auth, docs/api.md error bodies."""

    auth_resource = AUTH_RESOURCE

    def query(self) -> Query:
        """The query string, every value of each name (what :mod:`bgdownload.web` reads)."""
        return {name: [value.decode("utf-8", "replace") for value in values]
                for name, values in self.request.query_arguments.items()}

    def reply(self, reply: Reply) -> None:
        self.set_status(reply.status)
        for name, value in reply.headers.items():
            self.set_header(name, value)
        if reply.body is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply.body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if exc is None or isinstance(exc, web.HTTPError):
            super().write_error(status_code, **kwargs)  # Jupyter's own refusals (403, …)
            return
        error = error_reply(exc)
        self.clear_header("Content-Disposition")
        self.reply(Reply(error.status, error.body, error.headers))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if value is None or isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)
            return
        where = f"{self.request.method} {self.request.path}"
        log_failure(self.log, value, error_reply(value), where)


__all__ = ["AUTH_RESOURCE", "RUNTIME_KEY", "BgdownloadAPIHandler", "BgdownloadMixin"]
