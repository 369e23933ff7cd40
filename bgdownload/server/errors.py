"""Every error the Quart app answers leaves as ``{"error": {"code", "message"}}`` with its status.

Ours and the service's through :func:`bgdownload.web.errors.error_reply` (the
mapping the Jupyter extension shares), werkzeug's HTTP errors (404, 405, 413,
416) here. The seed-compatible routes add ``"success": false``.
"""

from __future__ import annotations

import json
import logging

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
}


def error_response(reply: ErrorReply) -> Response:
    body = reply.body
    if _blueprint() == "compat":
        body = {"success": False, **body}  # the seed's clients test `success`
    return Response(
        json.dumps(body), status=reply.status, content_type="application/json",
        headers=reply.headers,
    )


def register_error_handlers(app: Quart) -> None:
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
