"""Every error the Quart app answers leaves as ``{"error": {"code", "message"}}`` with its status.

Ours and the service's through :func:`bgdownload.web.errors.error_reply` (the
mapping the Jupyter extension shares), werkzeug's HTTP errors (404, 405, 413,
416) here. The seed-compatible routes add ``"success": false``. Requests that
Hypercorn refuses before the app sees them (``431`` headers too large, ``400``
unparsable) get the same body from :func:`give_protocol_errors_a_body`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

from quart import Quart, Response, has_request_context, has_websocket_context, request, websocket
from werkzeug.exceptions import HTTPException

from bgdownload.web.errors import ErrorReply, error_reply, log_failure

log = logging.getLogger(__name__)

#: werkzeug's HTTP errors → our codes (docs/api.md §6; 405 and 416 are extensions)
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    431: "headers_too_large",
}


def error_response(reply: ErrorReply) -> Response:
    body = reply.body
    if _blueprint() == "compat":
        body = {"success": False, **body}  # the seed's clients test `success`
    return Response(
        json.dumps(body), status=reply.status, content_type="application/json",
        headers=reply.headers,
    )


#: Hypercorn's own refusals (the app never sees these requests) → our codes and messages
_PROTOCOL_ERRORS = {
    400: ("invalid_request", "the request is not valid HTTP/1.1"),
    431: ("headers_too_large", "the request's headers are too large"),
}


def protocol_error_body(status: int) -> bytes:
    code, message = _PROTOCOL_ERRORS.get(status, ("invalid_request", "the request was refused"))
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def give_protocol_errors_a_body() -> None:
    """Make Hypercorn's HTTP/1.1 refusals carry the §6 JSON body (they are empty otherwise).

    Hypercorn answers them from its protocol layer, below any app hook, so the one
    way is to wrap that method; done once, and skipped if a Hypercorn release moved it.
    """
    try:
        import h11
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:
        return
    original = getattr(H11Protocol, "_send_error_response", None)
    if original is None or getattr(original, "_bgdownload", False):
        return

    async def send_error_response(self: Any, status_code: int) -> None:
        body = protocol_error_body(status_code)
        send: Callable[[Any], Awaitable[None]] = self._send_h11_event
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        extra = self.config.response_headers("h11")
        await send(h11.Response(status_code=status_code, headers=list(chain(headers, extra))))
        await send(h11.Data(data=body))
        await send(h11.EndOfMessage())

    send_error_response._bgdownload = True  # type: ignore[attr-defined]
    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]


def register_error_handlers(app: Quart) -> None:
    give_protocol_errors_a_body()

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        return error_response(http_error_reply(error))

    @app.errorhandler(Exception)
    async def on_error(error: Exception) -> Response:
        reply = error_reply(error)
        log_failure(log, error, reply, f"{_method()} {_path()}")
        return error_response(reply)


def http_error_reply(error: HTTPException) -> ErrorReply:
    status = error.code or 500
    code = _HTTP_CODES.get(status, "internal" if status >= 500 else "invalid_request")
    # keep headers that carry meaning (Allow on 405, Content-Range on 416)
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type",)}
    message = error.description or error.name
    if status == 404:
        message = f"no such route: {_method()} {_path()}"
    elif status == 405:
        message = f"{_method()} is not allowed here"
    elif status == 413:
        message = "request body is too large"
    return ErrorReply(status, code, message, headers)


def _blueprint() -> str | None:
    if has_request_context():
        return request.blueprint
    if has_websocket_context():
        return websocket.blueprint
    return None


def _method() -> str:
    return request.method if has_request_context() else "GET"


def _path() -> str:
    if has_request_context():
        return request.path
    return websocket.path if has_websocket_context() else "?"
