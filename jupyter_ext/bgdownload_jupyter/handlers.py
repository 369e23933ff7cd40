"""REST routes of docs/api.md §2 under ``{base_url}bgdownload/api/v1``: Tornado glue over
:mod:`bgdownload.web.rest`, where the Quart server's routes go too."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from bgdownload.web import requests, rest
from bgdownload_jupyter.base import BgdownloadAPIHandler


class DownloadsHandler(BgdownloadAPIHandler):
    """``/downloads``: list (GET) and create (POST)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await rest.list_jobs(await self.service(), self.owner, self.query()))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        service = await self.service()
        key = self.request.headers.get(requests.IDEMPOTENCY_HEADER)
        self.reply(await rest.create(service, self.owner, self._create_body(),
                                     idempotency_key=key, api_root=self.api_root))

    def _create_body(self) -> dict[str, Any]:
        """JSON, urlencoded or multipart bodies with the same field names (docs/api.md §2)."""
        requests.check_body_size(len(self.request.body), self.runtime.settings.max_body)
        mimetype = requests.mimetype(self.request.headers.get("Content-Type"))
        if requests.is_form(mimetype):
            form = self.request.body_arguments
            return requests.form_create_body(
                {name: values[0].decode("utf-8", "replace") for name, values in form.items()}
            )
        return requests.json_create_body(mimetype, self.request.body)


class DownloadHandler(BgdownloadAPIHandler):
    """``/downloads/{id}``: read (GET) and forget (DELETE)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.reply(await rest.get(await self.service(), self.owner, job_id))

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        self.reply(await rest.delete(await self.service(), self.owner, job_id, self.query()))


class ControlHandler(BgdownloadAPIHandler):
    """``/downloads/{id}/{cancel|pause|resume|retry}`` (POST)."""

    @web.authenticated
    @authorized
    async def post(self, job_id: str, action: str) -> None:
        self.reply(await rest.control(await self.service(), self.owner, job_id, action))


class FileHandler(BgdownloadAPIHandler, web.StaticFileHandler):
    """``/downloads/{id}/file``: the finished file with Range support (tornado's own)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str, include_body: bool = True) -> None:  # type: ignore[override]
        service = await self.service()
        path = await service.file_path(self.owner, job_id)
        self.set_header("Content-Disposition", rest.content_disposition(path.name))
        # files sit in the owner's folder of the (resolved) download root, tornado's
        # root here; tornado checks again that the path stays inside it
        relative = path.relative_to(self.root).as_posix()
        await web.StaticFileHandler.get(self, relative, include_body=include_body)

    @web.authenticated
    @authorized
    async def head(self, job_id: str) -> None:  # type: ignore[override]
        await self.get(job_id, include_body=False)  # type: ignore[misc]

    def compute_etag(self) -> str | None:
        return None  # tornado would hash the whole file: Last-Modified suffices


class HealthHandler(BgdownloadAPIHandler):
    """``{base_url}bgdownload/healthz``: the Quart body plus where the stack runs, or 503."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.runtime.health())
