"""Any exception a call raises → the ``(status, body, headers)`` both adapters answer with.

The one mapping of docs/api.md §6: the caller's mistakes keep their code and
status; Redis or storage out of reach (:class:`ServerUnavailable`, a
:class:`~bgdownload.store.StoreError` or an :class:`OSError` escaping from the
Service) is ``503 unavailable`` with ``Retry-After``; anything else is a bug,
``500 internal``, whose details stay in the server log.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bgdownload.errors import RateLimited, RequestError, ServerUnavailable, Unauthorized
from bgdownload.store import StoreError
from bgdownload.web.schemas import describe

#: seconds a client is told to wait before retrying after a 503 (Redis restarts in a few)
UNAVAILABLE_RETRY_AFTER = 5


@dataclass(frozen=True)
class ErrorReply:
    """What to answer for a failure: ``body`` is ``{"error": {"code", "message"}}``."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    @property
    def internal(self) -> bool:
        """A fault of this server (worth a traceback in its log), not of the caller or Redis."""
        return self.status == 500


def error_reply(exc: BaseException) -> ErrorReply:
    """The answer for ``exc`` (docs/api.md §6)."""
    if isinstance(exc, RequestError):
        headers: dict[str, str] = {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="bgdownload"'
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return ErrorReply(exc.status, exc.code, exc.message, headers)
    if isinstance(exc, ValidationError):
        return ErrorReply(400, "invalid_request", describe(exc))
    if isinstance(exc, ServerUnavailable):
        return unavailable(exc.message)
    if isinstance(exc, StoreError):
        return unavailable(f"Redis cannot be reached right now: {exc}")
    if isinstance(exc, OSError):
        # str(OSError) carries the file name: an absolute server path (docs/api.md §17)
        reason = exc.strerror or type(exc).__name__
        return unavailable(f"Redis or storage cannot be reached right now: {reason}")
    return ErrorReply(500, "internal", "internal server error")


def unavailable(message: str) -> ErrorReply:
    """``503 unavailable`` with ``Retry-After``."""
    return ErrorReply(503, "unavailable", message,
                      {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})


def log_failure(log: logging.Logger, exc: BaseException, reply: ErrorReply, where: str) -> None:
    """Log ``exc`` as both adapters do: bugs with a traceback, outages as a warning,
    the caller's mistakes only at debug level (they are answers, not faults)."""
    if reply.internal:
        log.error("internal error in %s", where, exc_info=exc)
    elif reply.status == 503:
        log.warning("%s → 503: %s", where, reply.message)
    else:
        log.debug("%s → %d: %s", where, reply.status, reply.message)
