"""The REST calls of docs/api.md §2 and the health probe: Service results → :class:`Reply`.

Each call takes what the adapter read from its request (the owner, a parsed
body, a query string) and returns the status, JSON body and headers to send.
Errors are raised, for :func:`bgdownload.web.errors.error_reply` to answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bgdownload.errors import NotFound
from bgdownload.models import Job
from bgdownload.service import Service
from bgdownload.web import requests

#: action → success status (docs/api.md §2: queueing answers 202)
ACTION_STATUS: dict[str, int] = {"cancel": 200, "pause": 200, "resume": 202, "retry": 202}

NO_WORKER = "no worker has been seen recently (start one: bgdownload worker)"


@dataclass(frozen=True)
class Reply:
    """A JSON answer; ``body`` None is an empty body (204)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def job_reply(job: Job, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, job.to_public(), headers or {})


async def create(
    service: Service, owner: str, data: dict[str, Any], *,
    idempotency_key: str | None, api_root: str,
) -> Reply:
    """``POST /downloads``: 202 and the new job, or 200 and the one an Idempotency-Key names.

    ``api_root`` is where ``/api/v1`` is served, for the ``Location`` header.
    """
    job, created = await service.create(owner, data, idempotency_key=idempotency_key)
    location = f"{api_root.rstrip('/')}/downloads/{job.id}"
    return job_reply(job, 202 if created else 200, {"Location": location})


async def list_jobs(service: Service, owner: str, query: requests.Query) -> Reply:
    """``GET /downloads``: the owner's jobs, newest first, filtered and paged.

    ``X-Last-Event-ID`` is the owner's event-stream position taken just before
    the list was read: ``GET /events?last_event_id=`` with it misses nothing.
    """
    states, limit, cursor = requests.list_arguments(query)
    position = await service.owner_position(owner)
    jobs, next_cursor = await service.list(owner, states=states, limit=limit, cursor=cursor)
    body = {"items": [job.to_public() for job in jobs], "next": next_cursor}
    return Reply(200, body, {"X-Last-Event-ID": position})


async def get(service: Service, owner: str, job_id: str) -> Reply:
    """``GET /downloads/{id}``."""
    return job_reply(await service.get(owner, job_id))


async def control(service: Service, owner: str, job_id: str, action: str) -> Reply:
    """``POST /downloads/{id}/{cancel|pause|resume|retry}``."""
    calls = {"cancel": service.cancel, "pause": service.pause,
             "resume": service.resume, "retry": service.retry}
    if action not in calls:
        raise NotFound(f"no such action: {action}")
    return job_reply(await calls[action](owner, job_id), ACTION_STATUS[action])


async def delete(service: Service, owner: str, job_id: str, query: requests.Query) -> Reply:
    """``DELETE /downloads/{id}[?delete_file=true]``: 204."""
    await service.delete(owner, job_id, delete_file=requests.delete_file(query))
    return Reply(204, None)


_NOT_QUOTABLE = re.compile(r'[^\x20-\x7e]|["\\%]')


def content_disposition(name: str) -> str:
    """``Content-Disposition`` of ``GET …/file`` (RFC 6266): the name as ``filename*`` in
    UTF-8, and an ASCII ``filename`` for clients that do not read it."""
    fallback = _NOT_QUOTABLE.sub("_", name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def health(service: Service, extra: Mapping[str, Any] | None = None) -> Reply:
    """``/healthz``: 200 when Redis answers and a worker was seen recently, else 503 saying which.

    ``extra`` fields (the Jupyter extension says where its stack runs) go before ``error``.
    """
    try:
        found = await service.health()
    except Exception as exc:  # any failure to reach Redis is "unhealthy", not a 500
        return unhealthy(f"redis unreachable: {exc}", extra=extra)
    body = {**found, **(extra or {})}
    if not found.get("workers"):
        return Reply(503, {**body, "error": {"code": "unavailable", "message": NO_WORKER}})
    return Reply(200, body)


def unhealthy(message: str, *, redis: str = "error",
              extra: Mapping[str, Any] | None = None) -> Reply:
    """A 503 health answer when the Service cannot be asked (``redis`` says why)."""
    body = {"redis": redis, "workers": 0, **(extra or {}),
            "error": {"code": "unavailable", "message": message}}
    return Reply(503, body)
