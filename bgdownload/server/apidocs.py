"""``/docs`` from the Swagger UI files packaged in ``swagger-ui-py``: no CDN, works offline.

quart-schema renders ``/docs`` and points its scripts at a CDN by default; this
blueprint serves the packaged copy under ``/docs/static/`` and points the page
there when it is registered. quart-schema's ``/redocs`` and ``/scalar`` pages
have no packaged bundle, so they lead to ``/docs`` instead of loading a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from quart import Blueprint, Response, redirect, send_from_directory
from quart.blueprints import BlueprintSetupState
from werkzeug.exceptions import NotFound

STATIC_PREFIX = "/docs/static"
#: the files the docs page loads (the bundle also carries an editor we do not serve)
SERVED = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png",
                    "favicon-16x16.png", "LICENSE"})

apidocs_bp = Blueprint("apidocs", __name__)


def bundle_dir() -> Path:
    return Path(str(files("swagger_ui") / "static"))


@apidocs_bp.record_once
def _point_docs_here(state: BlueprintSetupState) -> None:
    app = state.app
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = f"{STATIC_PREFIX}/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = f"{STATIC_PREFIX}/swagger-ui.css"
    for endpoint in ("redoc_ui", "scalar_ui"):
        if endpoint in app.view_functions:
            app.view_functions[endpoint] = _to_docs


async def _to_docs() -> Response:
    return redirect("/docs")  # type: ignore[return-value]


@apidocs_bp.get(f"{STATIC_PREFIX}/<name>")
async def docs_static(name: str) -> Response:
    """One file of the packaged Swagger UI (cached for a day: it changes with the package)."""
    if name not in SERVED:
        raise NotFound()
    response = await send_from_directory(bundle_dir(), name)
    response.cache_control.max_age = 86400
    return response
