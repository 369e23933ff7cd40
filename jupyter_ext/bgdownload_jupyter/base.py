"""What every bgdownload handler shares: the Service, the owner, error bodies.

Authentication, authorization and XSRF are Jupyter's (``@web.authenticated``,
``@authorized``, tornado's XSRF check on mutating requests, skipped by Jupyter
for token-authenticated calls); their refusals keep Jupyter's own format.
Errors raised by the Service leave as API.md's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from jupyter_server.base.handlers import APIHandler

from bgdownload.errors import (
    BgdownloadError,
    InvalidRequest,
    RateLimited,
    RequestError,
    ServerUnavailable,
)
from bgdownload.server.auth import LOCAL_OWNER
from bgdownload.service import Service
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

    def api_url(self, *parts: str) -> str:
        """An absolute path under ``{base_url}bgdownload/api/v1``."""
        base = str(self.settings.get("base_url", "/"))
        return "/".join([base.rstrip("/"), "bgdownload/api/v1", *parts])


class BgdownloadAPIHandler(BgdownloadMixin, APIHandler):
    """JSON handler: Jupyter auth, API.md error bodies."""

    auth_resource = AUTH_RESOURCE

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, BgdownloadError):
            super().write_error(status_code, **kwargs)  # Jupyter's own refusals (403, …)
            return
        if isinstance(exc, RequestError | ServerUnavailable):
            status, body = exc.status, exc.to_dict()
        else:
            status, body = 500, {"code": "internal", "message": "internal server error"}
        if isinstance(exc, RateLimited):
            self.set_header("Retry-After", str(max(1, math.ceil(exc.retry_after))))
        self.clear_header("Content-Disposition")
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": body}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # the caller's mistakes are answers, not server faults worth a traceback
        if isinstance(value, RequestError | ServerUnavailable):
            self.log.debug("bgdownload: %s %s → %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)


def parse_bool(name: str, text: str | None) -> bool:
    """``?delete_file=true`` and friends; anything unclear is a 400, not a guess."""
    if text is None or text == "":
        return False
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidRequest(f"{name} must be true or false")


__all__ = ["AUTH_RESOURCE", "RUNTIME_KEY", "BgdownloadAPIHandler", "BgdownloadMixin", "parse_bool"]
