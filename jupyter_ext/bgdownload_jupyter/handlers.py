"""REST routes of API.md §2 under ``{base_url}bgdownload/api/v1``: thin calls into the Service.

The twin of ``bgdownload/server/routes.py``: every decision (validation,
scoping, state checks) is the Service's; these only translate HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from pydantic import ValidationError
from tornado import web

from bgdownload.errors import InvalidRequest, PayloadTooLarge
from bgdownload.models import Job, parse_states
from bgdownload.server.schemas import CreateDownload, describe
from bgdownload_jupyter.base import BgdownloadAPIHandler, parse_bool

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class DownloadsHandler(BgdownloadAPIHandler):
    """``/downloads``: list (GET) and create (POST)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        service = await self.service()
        states = parse_states(self.get_query_argument("state", None))
        limit = _int_argument("limit", self.get_query_argument("limit", None), default=50)
        cursor = self.get_query_argument("cursor", None) or None
        # the stream position before the read: replaying from it leaves no gap
        self.set_header("X-Last-Event-ID", await service.owner_position(self.owner))
        jobs, next_cursor = await service.list(self.owner, states=states, limit=limit,
                                               cursor=cursor)
        self.write_json({"items": [job.to_public() for job in jobs], "next": next_cursor})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        service = await self.service()
        data = self._create_body()
        key = self.request.headers.get("Idempotency-Key")
        job, created = await service.create(self.owner, data, idempotency_key=key)
        self.set_header("Location", self.api_url("downloads", job.id))
        self.write_json(job.to_public(), 202 if created else 200)

    def _create_body(self) -> dict[str, Any]:
        """JSON, urlencoded or multipart bodies with the same field names (API.md §2)."""
        limit = self.runtime.settings.max_body
        if len(self.request.body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        mimetype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if mimetype in _FORM_TYPES:
            form = self.request.body_arguments
            unknown = sorted(set(form) - set(CreateDownload.model_fields))
            if unknown:
                raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
            # the Service reads JSON text in files/headers/metadata, as a form sends them
            return {name: values[-1].decode("utf-8", "replace") for name, values in form.items()}
        if mimetype not in ("application/json", "") and not mimetype.endswith("+json"):
            raise InvalidRequest(f"unsupported Content-Type {mimetype!r}: send JSON or a form")
        if not self.request.body.strip():
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the request body must be a JSON object")
        try:
            CreateDownload.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(describe(exc)) from None
        return data


class DownloadHandler(BgdownloadAPIHandler):
    """``/downloads/{id}``: read (GET) and forget (DELETE)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        service = await self.service()
        self.write_json((await service.get(self.owner, job_id)).to_public())

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        service = await self.service()
        delete_file = parse_bool("delete_file", self.get_query_argument("delete_file", None))
        await service.delete(self.owner, job_id, delete_file=delete_file)
        self.set_status(204)
        self.finish()


class ControlHandler(BgdownloadAPIHandler):
    """``/downloads/{id}/{cancel|pause|resume|retry}`` (POST)."""

    #: action → success status (API.md §2: queueing answers 202)
    ACTIONS = {"cancel": 200, "pause": 200, "resume": 202, "retry": 202}

    @web.authenticated
    @authorized
    async def post(self, job_id: str, action: str) -> None:
        service = await self.service()
        operation = getattr(service, action)  # the route pattern admits only ACTIONS
        job: Job = await operation(self.owner, job_id)
        self.write_json(job.to_public(), self.ACTIONS[action])


class FileHandler(BgdownloadAPIHandler, web.StaticFileHandler):
    """``/downloads/{id}/file``: the finished file with Range support (tornado's own)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str, include_body: bool = True) -> None:  # type: ignore[override]
        service = await self.service()
        path = await service.file_path(self.owner, job_id)
        self.set_header("Content-Disposition", _attachment(path.name))
        # files sit directly in the (resolved) download root, tornado's root here;
        # tornado checks again that the path stays inside it
        await web.StaticFileHandler.get(
            self, path.name, include_body=include_body
        )

    @web.authenticated
    @authorized
    async def head(self, job_id: str) -> None:  # type: ignore[override]
        await self.get(job_id, include_body=False)  # type: ignore[misc]

    def compute_etag(self) -> str | None:
        return None  # tornado would hash the whole file: Last-Modified suffices


class HealthHandler(BgdownloadAPIHandler):
    """``{base_url}bgdownload/healthz``: the Quart body, or 503 with what went wrong."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status, body = await self.runtime.health()
        self.write_json(body, status)


def _int_argument(name: str, text: str | None, *, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None


def _attachment(name: str) -> str:
    from urllib.parse import quote

    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
