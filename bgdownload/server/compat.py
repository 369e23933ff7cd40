"""The original design's routes (docs/api.md §7), so seed-era front ends keep working.

They are shapes over the same Service calls as ``/api/v1``: same owner
scoping, same safety checks, same rate limit. Errors carry the §6 body plus
``"success": false``, which the seed's clients test for.
"""

from __future__ import annotations

import json
import math
from typing import Any

from quart import Blueprint, Response, request, websocket
from quart_schema import document_request, document_response

from bgdownload.errors import InvalidRequest
from bgdownload.models import Event, JobState, Progress
from bgdownload.server.auth import (
    authenticate_request,
    authenticate_websocket,
    current_owner,
    query_token_allowed,
)
from bgdownload.server.routes import read_json_object
from bgdownload.server.schemas import (
    BatchInitiated,
    InitiateBatch,
    SeedCreate,
    SeedCreated,
    SeedStatus,
)
from bgdownload.server.state import service, settings
from bgdownload.server.streams import last_event_id, pump_websocket, sse_response
from bgdownload.web.requests import IDEMPOTENCY_HEADER
from bgdownload.web.requests import last_event_id as last_event_id_of

compat = Blueprint("compat", __name__)
compat.before_request(authenticate_request)
compat.before_websocket(authenticate_websocket)


def seed_progress(progress: Progress) -> dict[str, int]:
    """``{"loaded","total","percent","speed"}``: total 0 when unknown, percent an integer."""
    total = progress.total
    # floor of the exact ratio (Progress.percent is rounded): 99.99 % never reads as 100
    percent = min(100, math.floor(progress.loaded * 100 / total)) if total else 0
    return {
        "loaded": progress.loaded,
        "total": total or 0,
        "percent": percent,
        "speed": round(progress.speed),
    }


def _progress_of(data: dict[str, Any]) -> Progress:
    return Progress.from_dict(data.get("progress", data))


def seed_message(event: Event) -> dict[str, Any]:
    """The data of one unnamed seed SSE message for a §3 event."""
    state = JobState(event.data["state"])
    progress = seed_progress(_progress_of(event.data))
    if state is JobState.COMPLETED:
        return {"state": "completed", "percent": 100}
    if state.terminal:
        error = event.data.get("error")
        return {"state": state.value, "percent": progress["percent"], "error": error}
    if event.event == "progress":
        return progress
    return {"state": state.value, **progress}  # snapshot, or a pause/retry/start


def render_seed_sse(event: Event) -> str:
    # An id lets EventSource resume after a drop; no event name, so onmessage fires.
    return f"id: {event.id}\ndata: {json.dumps(seed_message(event))}\n\n"


@compat.post("/api/videos/download-url")
@document_request(SeedCreate)
@document_response(SeedCreated, 202)
async def seed_create() -> tuple[dict[str, Any], int]:
    """Start a download from a multipart form or JSON with field ``url``."""
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form
        fields: dict[str, Any] = {name: form[name] for name in form}
    else:
        fields = await read_json_object()
    data = {name: fields[name] for name in ("url", "filename") if fields.get(name)}
    if "url" not in data:
        raise InvalidRequest("url is required")
    key = request.headers.get(IDEMPOTENCY_HEADER)
    job, _ = await service().create(current_owner(), data, idempotency_key=key)
    return {
        "success": True,
        "message": "Download started",
        "jobId": job.id,
        "queueJobId": getattr(job, "queue_id", None) or job.id,
    }, 202


@compat.get("/api/videos/download-status/<job_id>")
@document_response(SeedStatus)
async def seed_status(job_id: str) -> dict[str, Any]:
    """The job's state and ``{"loaded","total","percent","speed"}``."""
    job = await service().get(current_owner(), job_id)
    return {
        "success": True,
        "jobId": job.id,
        "state": job.state.value,
        "progress": seed_progress(job.progress),
    }


@compat.get("/api/videos/download-progress/<job_id>")
@query_token_allowed
async def seed_progress_stream(job_id: str) -> Response:
    """Unnamed SSE messages ``data: {"loaded","total","percent","speed"}``, then the final state."""
    owner = current_owner()
    svc = service()
    job = await svc.get(owner, job_id)
    last = last_event_id()
    if last is not None and job.state.terminal:
        # A browser EventSource reconnects by itself after the stream ended; 204 is the
        # one answer that makes it stop instead of replaying the end every 2 s.
        return Response(b"", status=204)
    return sse_response(svc.job_events(owner, job_id, last_event_id=last), render_seed_sse)


# -- the file_ids demo (seed 003) --


def file_id_of(url: str) -> str | None:
    """Recover the file id from a URL made from ``BGDOWNLOAD_FILE_URL_TEMPLATE``."""
    template = settings().file_url_template
    if not template or "{file_id}" not in template:
        return None
    prefix, _, suffix = template.partition("{file_id}")
    if url.startswith(prefix) and url.endswith(suffix) and len(url) > len(prefix) + len(suffix):
        return url[len(prefix) : len(url) - len(suffix)]
    return None


def _file_id_value(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.isdigit() else text


def file_status(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "file_id": _file_id_value(file_id_of(entry["url"])),
        "url": entry["url"],
        "filename": entry.get("filename"),
        "status": entry.get("state", "waiting"),
        "progress": seed_progress(Progress.from_dict(entry.get("progress"))),
        "error": entry.get("error"),
    }


def batch_status(job: dict[str, Any]) -> dict[str, Any]:
    """Per-file status of a batch job (its public JSON), in the seed demo's camelCase."""
    files = [file_status(f) for f in job.get("files") or []]
    return {
        "jobId": job["id"],
        "status": job["state"],
        "totalFiles": len(files),
        "completedFiles": sum(f["status"] == "completed" for f in files),
        "failedFiles": sum(f["status"] == "failed" for f in files),
        "progress": seed_progress(Progress.from_dict(job.get("progress"))),
        "error": job.get("error"),
        "files": files,
    }


def fold_event(job: dict[str, Any], event: Event) -> dict[str, Any]:
    """The job's public JSON after ``event``: state events carry the whole job,
    progress events only the moving numbers, so no Redis read is needed per frame."""
    if event.event != "progress":
        return dict(event.data)
    data = event.data
    updated = {**job, "state": data.get("state", job["state"])}
    updated["progress"] = {k: data.get(k) for k in ("loaded", "total", "percent", "speed", "eta")}
    moving = data.get("files") or []
    if moving:
        updated["files"] = [
            {**entry, "state": update.get("state", entry.get("state")), "progress": update}
            for entry, update in zip(job.get("files") or [], moving, strict=False)
        ]
    return updated


@compat.post("/v1/download/initiate")
@document_request(InitiateBatch)
@document_response(BatchInitiated, 202)
async def batch_initiate() -> tuple[dict[str, Any], int]:
    """``{"file_ids": [...]}`` → one batch job over ``BGDOWNLOAD_FILE_URL_TEMPLATE``."""
    data = await read_json_object()
    job = await service().create_from_file_ids(current_owner(), data.get("file_ids"))
    return {"jobId": job.id, "status": "queued", "totalFiles": len(job.files)}, 202


@compat.get("/v1/download/status/<job_id>")
async def batch_status_route(job_id: str) -> dict[str, Any]:
    """State of the batch job and of each of its files."""
    return batch_status((await service().get(current_owner(), job_id)).to_public())


@compat.websocket("/ws/download/<job_id>")
async def batch_websocket(job_id: str) -> None:
    """The same object as ``/v1/download/status/{jobId}``, sent on every change."""
    owner = current_owner()
    svc = service()
    current = (await svc.get(owner, job_id)).to_public()  # 404 before the upgrade
    last = last_event_id_of(websocket.args.get("last_event_id"))

    def frame(event: Event) -> dict[str, Any]:
        nonlocal current
        current = fold_event(current, event)
        return {"type": event.event, **batch_status(current)}

    await pump_websocket(svc.job_events(owner, job_id, last_event_id=last), frame)
