"""The Quart app: a thin HTTP face (docs/api.md §2 to §7) over :mod:`bgdownload.web`.

>>> app = create_app(Settings.from_env())       # connects in before_serving
>>> app = create_app(settings, service=svc)     # tests: a Service they own

Every error leaves as ``{"error": {"code", "message"}}`` with its status
(:mod:`bgdownload.server.errors`). ``Host`` and ``Origin`` are checked before
anything else (:mod:`bgdownload.server.origin`).
"""

from __future__ import annotations

from quart import Quart, Response, request, send_from_directory
from quart_schema import QuartSchema

from bgdownload.config import Settings
from bgdownload.server.apidocs import apidocs_bp
from bgdownload.server.auth import TokenAuth
from bgdownload.server.compat import compat
from bgdownload.server.errors import register_error_handlers
from bgdownload.server.metrics import METRICS_KEY, ServerMetrics, metrics_bp
from bgdownload.server.origin import HostPolicy, install_origin_checks
from bgdownload.server.routes import api, ops
from bgdownload.server.state import SERVICE_KEY, SETTINGS_KEY
from bgdownload.server.streams import streams_bp
from bgdownload.service import Service
from bgdownload.web import STATIC
from bgdownload.web.requests import check_body_size


def create_app(
    settings: Settings, service: Service | None = None, *, host: str | None = None
) -> Quart:
    """Build the app. Without ``service`` one is connected in ``before_serving``
    and closed in ``after_serving``; a given one is left to its owner to close.

    ``host`` is the address the server was started with: besides loopback names,
    the only ``Host`` it answers to without ``BGDOWNLOAD_ALLOWED_HOSTS``.
    """
    app = Quart(__name__, static_folder=str(STATIC), static_url_path="/static")
    # first of all hooks: a request for another name or from another origin goes no further
    install_origin_checks(app, HostPolicy.build(host, settings.allowed_hosts))
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
    for blueprint in (api, streams_bp, compat, ops, metrics_bp, apidocs_bp):
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
        check_body_size(request.content_length, settings.max_body)

    @app.get("/")
    async def index() -> Response:
        """The Active Downloads page."""
        response = await send_from_directory(STATIC, "index.html")
        response.cache_control.no_cache = True
        return response

    register_error_handlers(app)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bgdownload")
    except PackageNotFoundError:
        return "0"


__all__ = ["create_app"]
