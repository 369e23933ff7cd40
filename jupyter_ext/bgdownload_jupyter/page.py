"""The Active Downloads page inside Jupyter: the Quart server's own files, re-rooted.

``index.html`` and ``app.js`` are written for ``/`` and ``/api/v1``. Served
here, the page gets two ``<meta>`` tags that ``app.js`` reads — where the API
is (``{base_url}bgdownload/api/v1``) and that mutating calls must carry Jupyter's
``X-XSRFToken`` — and its ``/static/`` links point at this extension's copy.
"""

from __future__ import annotations

import html
from pathlib import Path

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from bgdownload.web import STATIC
from bgdownload_jupyter.base import AUTH_RESOURCE, BgdownloadMixin


def render_page(index_html: str, prefix: str, xsrf_token: str) -> str:
    """``index.html`` with the page rooted at ``prefix`` (``{base_url}bgdownload/``)."""
    tags = (
        f'<meta name="bgdownload-api" content="{html.escape(prefix)}api/v1">\n'
        f'  <meta name="bgdownload-xsrf" content="{html.escape(xsrf_token)}">\n'
    )
    page = index_html.replace('"/static/', f'"{html.escape(prefix)}static/')
    head_end = page.find("</head>")
    if head_end < 0:
        return tags + page
    return f"{page[:head_end]}  {tags}{page[head_end:]}"


class PageHandler(BgdownloadMixin, JupyterHandler):
    """``{base_url}bgdownload/``: the page, behind Jupyter's login like every Jupyter page."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        index = Path(STATIC) / "index.html"
        try:
            text = index.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise web.HTTPError(500, f"the page is missing: {index}") from None
        prefix = self.base_url.rstrip("/") + "/bgdownload/"
        token = self.xsrf_token  # also sets the _xsrf cookie when it is not there yet
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(render_page(text, prefix, token.decode()))


class StaticHandler(JupyterHandler, web.StaticFileHandler):
    """The page's script and style sheet."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        await web.StaticFileHandler.get(self, path, include_body=include_body)


class RedirectToPage(JupyterHandler):
    """``{base_url}bgdownload`` → ``{base_url}bgdownload/``."""

    def get(self) -> None:
        self.redirect(self.base_url.rstrip("/") + "/bgdownload/")
