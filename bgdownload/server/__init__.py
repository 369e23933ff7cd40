"""The Quart app: a thin HTTP face (API.md §2 to §7) over :class:`bgdownload.service.Service`.

>>> app = create_app(Settings.from_env())       # connects in before_serving
>>> app = create_app(settings, service=svc)     # tests: a Service they own

Every error leaves as ``{"error": {"code", "message"}}`` with its status —
ours, werkzeug's (404, 405, 413, 416) and quart-schema's validation errors.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from quart import (
    Quart,
    Response,
    has_request_context,
    has_websocket_context,
    request,
    send_from_directory,
    websocket,
)
from quart_schema import QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from bgdownload.config import Settings
from bgdownload.errors import (
    BgdownloadError,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    Unauthorized,
)
from bgdownload.server.auth import TokenAuth
from bgdownload.server.compat import compat
from bgdownload.server.metrics import METRICS_KEY, ServerMetrics, metrics_bp
from bgdownload.server.routes import api, ops
from bgdownload.server.schemas import describe
from bgdownload.server.state import SERVICE_KEY, SETTINGS_KEY
from bgdownload.server.streams import streams_bp
from bgdownload.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

#: werkzeug's HTTP errors → our codes (API.md §6; 405 and 416 are extensions)
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
}


def create_app(settings: Settings, service: Service | None = None) -> Quart:
    """Build the app. Without ``service`` one is connected in ``before_serving``
    and closed in ``after_serving``; a given one is left to its owner to close."""
    app = Quart(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.extensions[SETTINGS_KEY] = settings
    app.extensions["bgdownload.auth"] = TokenAuth(settings.tokens)
    app.extensions[METRICS_KEY] = ServerMetrics()
    if service is not None:
        app.extensions[SERVICE_KEY] = service

    QuartSchema(
        app,
        info={"title": "bgdownload", "version": _version()},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    # after QuartSchema, which installs its own JSON provider: keep the contract's key order
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for blueprint in (api, streams_bp, compat, ops, metrics_bp):
        app.register_blueprint(blueprint)

    @app.before_serving
    async def connect() -> None:
        if SERVICE_KEY not in app.extensions:
            app.extensions[SERVICE_KEY] = await Service.connect(settings)
            app.extensions["bgdownload.owns_service"] = True

    @app.after_serving
    async def close() -> None:
        if app.extensions.pop("bgdownload.owns_service", False):
            await app.extensions.pop(SERVICE_KEY).close()

    @app.before_request
    async def refuse_large_bodies() -> None:
        # MAX_CONTENT_LENGTH alone fires only once the body is read; a declared
        # length over the cap is refused before anything else runs.
        length = request.content_length
        if length is not None and length > settings.max_body:
            raise PayloadTooLarge(f"request body is larger than {settings.max_body} bytes")

    @app.get("/")
    async def index() -> Response:
        """The Active Downloads page."""
        response = await send_from_directory(STATIC, "index.html")
        response.cache_control.no_cache = True
        return response

    register_error_handlers(app)
    return app


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if _blueprint() == "compat":
        body = {"success": False, **body}  # the seed's clients test `success`
    response = Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers or {}
    )
    return response


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


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(BgdownloadError)
    async def on_bgdownload_error(error: BgdownloadError) -> Response:
        if not isinstance(error, RequestError):
            log.exception("internal error", exc_info=error)
            return error_response(500, "internal", "internal server error")
        headers: dict[str, str] = {}
        if isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="bgdownload"'
        if isinstance(error, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return error_response(error.status, error.code, error.message, headers)

    @app.errorhandler(RequestSchemaValidationError)
    async def on_validation_error(error: RequestSchemaValidationError) -> Response:
        return error_response(400, "invalid_request", describe(error.validation_error))

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "internal" if status >= 500 else "invalid_request")
        # keep headers that carry meaning (Allow on 405, Content-Range on 416)
        headers = {
            k: v for k, v in error.get_headers() if k.lower() not in ("content-type",)
        }
        message = error.description or error.name
        if status == 404:
            message = f"no such route: {_method()} {_path()}"
        elif status == 405:
            message = f"{_method()} is not allowed here"
        elif status == 413:
            message = "request body is too large"
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return error_response(500, "internal", "internal server error")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bgdownload")
    except PackageNotFoundError:
        return "0"


__all__ = ["create_app"]
