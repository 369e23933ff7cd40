"""REST routes of API.md §2: thin calls into :class:`bgdownload.service.Service`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Response, current_app, request, send_file
from quart_schema import document_request, document_response, validate_querystring

from bgdownload.errors import InvalidRequest
from bgdownload.models import Job, parse_states
from bgdownload.server.auth import authenticate_request, current_owner
from bgdownload.server.schemas import (
    CreateDownload,
    DeleteQuery,
    ErrorBody,
    Health,
    JobList,
    JobModel,
    ListQuery,
    describe,
)
from bgdownload.server.state import service

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.before_request(authenticate_request)

ops = Blueprint("ops", __name__)

#: form fields whose value is a JSON document rather than a plain string
_JSON_FORM_FIELDS = frozenset({"files", "headers", "metadata"})


def job_response(job: Job, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = current_app.json.dumps(job.to_public())
    return Response(body, status=status, headers=headers, content_type="application/json")


async def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON is a 400, not a 500."""
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


async def read_create_body() -> dict[str, Any]:
    """JSON, urlencoded or multipart bodies with the same field names (API.md §2)."""
    mimetype = request.mimetype
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form
        unknown = sorted(set(form) - set(CreateDownload.model_fields))
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
        # Strings stay strings: the Service reads JSON text in files/headers/metadata
        # and integers written as text, exactly as a form sends them.
        return {name: form[name] for name in form}
    if mimetype not in ("application/json", "") and not mimetype.endswith("+json"):
        raise InvalidRequest(
            f"unsupported Content-Type {mimetype!r}: send JSON or a form"
        )
    data = await read_json_object()
    try:
        CreateDownload.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
    return data


@api.post("/downloads")
@document_request(CreateDownload)
@document_response(JobModel, 202)
@document_response(JobModel, 200)
@document_response(ErrorBody, 400)
async def create_download() -> Response:
    """Create a download job (202), or replay an Idempotency-Key (200)."""
    data = await read_create_body()
    key = request.headers.get("Idempotency-Key")
    job, created = await service().create(current_owner(), data, idempotency_key=key)
    location = f"/api/v1/downloads/{job.id}"
    return job_response(job, 202 if created else 200, {"Location": location})


@api.get("/downloads")
@validate_querystring(ListQuery)
@document_response(JobList)
async def list_downloads(query_args: ListQuery) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The caller's jobs, newest first; `state` filters, `cursor` pages.

    The `X-Last-Event-ID` header is the caller's event-stream position taken just
    before the list was read: `GET /api/v1/events?last_event_id=` with it misses nothing.
    """
    svc = service()
    states = parse_states(query_args.state)
    position = await svc.owner_position(current_owner())
    jobs, cursor = await svc.list(
        current_owner(), states=states, limit=query_args.limit, cursor=query_args.cursor
    )
    body = {"items": [job.to_public() for job in jobs], "next": cursor}
    return body, 200, {"X-Last-Event-ID": position}


@api.get("/downloads/<job_id>")
@document_response(JobModel)
async def get_download(job_id: str) -> Response:
    """One job."""
    return job_response(await service().get(current_owner(), job_id))


@api.post("/downloads/<job_id>/cancel")
@document_response(JobModel)
async def cancel_download(job_id: str) -> Response:
    """Stop it and delete the partial file."""
    return job_response(await service().cancel(current_owner(), job_id))


@api.post("/downloads/<job_id>/pause")
@document_response(JobModel)
async def pause_download(job_id: str) -> Response:
    """Stop moving bytes; keep the partial file."""
    return job_response(await service().pause(current_owner(), job_id))


@api.post("/downloads/<job_id>/resume")
@document_response(JobModel, 202)
async def resume_download(job_id: str) -> Response:
    """Queue a paused job again; it continues from the partial file."""
    return job_response(await service().resume(current_owner(), job_id), 202)


@api.post("/downloads/<job_id>/retry")
@document_response(JobModel, 202)
async def retry_download(job_id: str) -> Response:
    """Queue a failed or cancelled job again."""
    return job_response(await service().retry(current_owner(), job_id), 202)


@api.delete("/downloads/<job_id>")
@validate_querystring(DeleteQuery)
async def delete_download(job_id: str, query_args: DeleteQuery) -> Response:
    """Forget the job (cancelling it first); `delete_file=true` removes the file too."""
    await service().delete(current_owner(), job_id, delete_file=query_args.delete_file)
    return Response(b"", status=204)


@api.get("/downloads/<job_id>/file")
async def download_file(job_id: str) -> Response:
    """The finished file; honours Range (206) and conditional requests."""
    path = await service().file_path(current_owner(), job_id)
    response = await send_file(path, as_attachment=True, conditional=True)
    response.headers.setdefault("Accept-Ranges", "bytes")  # werkzeug says so on 206 only
    # Quart reads 8 KiB at a time by default: far too small for multi-GB files.
    body = response.response
    if hasattr(body, "buffer_size"):
        body.buffer_size = 256 * 1024
    return response


@ops.get("/healthz")
@document_response(Health)
@document_response(ErrorBody, 503)
async def healthz() -> tuple[dict[str, Any], int]:
    """200 when Redis answers and a worker was seen recently, else 503 saying which."""
    try:
        health = await service().health()
    except Exception as exc:  # any failure to reach Redis is "unhealthy", not a 500
        message = f"redis unreachable: {exc}"
        return {"redis": "error", "workers": 0, "error": _unavailable(message)}, 503
    if not health.get("workers"):
        message = "no worker has been seen recently (start one: bgdownload worker)"
        return {**health, "error": _unavailable(message)}, 503
    return health, 200


def _unavailable(message: str) -> dict[str, str]:
    return {"code": "unavailable", "message": message}

