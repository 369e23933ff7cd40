"""REST routes of docs/api.md §2: each one request → one :mod:`bgdownload.web.rest` call."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, request, send_file
from quart_schema import document_querystring, document_request, document_response

from bgdownload.server.auth import authenticate_request, current_owner
from bgdownload.server.schemas import ErrorBody, Health, JobList, JobModel
from bgdownload.server.state import service
from bgdownload.web import requests, rest
from bgdownload.web.schemas import CreateDownload, DeleteQuery, ListQuery

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.before_request(authenticate_request)

ops = Blueprint("ops", __name__)


def to_response(reply: rest.Reply) -> Response:
    """A :class:`~bgdownload.web.rest.Reply` as a Quart response (key order kept)."""
    if reply.body is None:
        return Response(b"", status=reply.status, headers=reply.headers)
    body = current_app.json.dumps(reply.body)
    return Response(body, status=reply.status, headers=reply.headers,
                    content_type="application/json")


def query() -> requests.Query:
    return request.args.to_dict(flat=False)


async def raw_body() -> bytes:
    return await request.get_data(cache=True, as_text=False, parse_form_data=False)


async def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON is a 400, not a 500."""
    return requests.json_object(await raw_body())


async def read_create_body() -> dict[str, Any]:
    """JSON, urlencoded or multipart bodies with the same field names (docs/api.md §2)."""
    if requests.is_form(request.mimetype):
        return requests.form_create_body((await request.form).to_dict())
    return requests.json_create_body(request.mimetype, await raw_body())


@api.post("/downloads")
@document_request(CreateDownload)
@document_response(JobModel, 202)
@document_response(JobModel, 200)
@document_response(ErrorBody, 400)
async def create_download() -> Response:
    """Create a download job (202), or replay an Idempotency-Key (200)."""
    data = await read_create_body()
    key = request.headers.get(requests.IDEMPOTENCY_HEADER)
    return to_response(await rest.create(service(), current_owner(), data,
                                          idempotency_key=key, api_root=api.url_prefix or ""))


@api.get("/downloads")
@document_querystring(ListQuery)
@document_response(JobList)
async def list_downloads() -> Response:
    """The caller's jobs, newest first; `state` filters, `cursor` pages.

    The `X-Last-Event-ID` header is the caller's event-stream position taken just
    before the list was read: `GET /api/v1/events?last_event_id=` with it misses nothing.
    """
    return to_response(await rest.list_jobs(service(), current_owner(), query()))


@api.get("/downloads/<job_id>")
@document_response(JobModel)
async def get_download(job_id: str) -> Response:
    """One job."""
    return to_response(await rest.get(service(), current_owner(), job_id))


@api.post("/downloads/<job_id>/cancel")
@document_response(JobModel)
async def cancel_download(job_id: str) -> Response:
    """Stop it and delete the partial file."""
    return to_response(await rest.control(service(), current_owner(), job_id, "cancel"))


@api.post("/downloads/<job_id>/pause")
@document_response(JobModel)
async def pause_download(job_id: str) -> Response:
    """Stop moving bytes; keep the partial file."""
    return to_response(await rest.control(service(), current_owner(), job_id, "pause"))


@api.post("/downloads/<job_id>/resume")
@document_response(JobModel, 202)
async def resume_download(job_id: str) -> Response:
    """Queue a paused job again; it continues from the partial file."""
    return to_response(await rest.control(service(), current_owner(), job_id, "resume"))


@api.post("/downloads/<job_id>/retry")
@document_response(JobModel, 202)
async def retry_download(job_id: str) -> Response:
    """Queue a failed or cancelled job again."""
    return to_response(await rest.control(service(), current_owner(), job_id, "retry"))


@api.delete("/downloads/<job_id>")
@document_querystring(DeleteQuery)
async def delete_download(job_id: str) -> Response:
    """Forget the job (cancelling it first); `delete_file=true` removes the file too."""
    return to_response(await rest.delete(service(), current_owner(), job_id, query()))


@api.get("/downloads/<job_id>/file")
async def download_file(job_id: str) -> Response:
    """The finished file; honours Range (206) and conditional requests."""
    path = await service().file_path(current_owner(), job_id)
    response = await send_file(path, conditional=True)
    response.headers["Content-Disposition"] = rest.content_disposition(path.name)
    response.headers.setdefault("Accept-Ranges", "bytes")  # werkzeug says so on 206 only
    # Quart reads 8 KiB at a time by default: far too small for multi-GB files.
    body = response.response
    if hasattr(body, "buffer_size"):
        body.buffer_size = 256 * 1024
    return response


@ops.get("/healthz")
@document_response(Health)
@document_response(ErrorBody, 503)
async def healthz() -> Response:
    """200 when Redis answers and a worker was seen recently, else 503 saying which."""
    return to_response(await rest.health(service()))
