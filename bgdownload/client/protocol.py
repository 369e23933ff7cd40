"""The HTTP protocol of docs/api.md §2 and §3, written once for the sync and async clients.

Sans-I/O: this module builds requests (:class:`Call`), turns response bodies
into typed objects (:class:`JobInfo`) and errors (:func:`error_from_response`),
folds events into jobs (:meth:`JobInfo.apply`) and decides what is worth
retrying (:class:`RetryPolicy`). The clients only move bytes.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Unpack
from urllib.parse import quote

import httpx

from bgdownload import errors
from bgdownload.client.options import DownloadOptions, check_options
from bgdownload.models import Event, FileEntry, JobState, Progress, parse_time
from bgdownload.retry_after import parse_retry_after

API_PREFIX = "/api/v1"

#: states in which a job may still change by itself (what "still running" means)
LIVE_STATES = frozenset({JobState.WAITING, JobState.ACTIVE, JobState.PAUSED})

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class ErrorInfo:
    """``job.error``: why a job failed (codes in docs/api.md §6)."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def from_dict(cls, data: Any) -> ErrorInfo | None:
        if not isinstance(data, Mapping):
            return None
        return cls(code=str(data.get("code") or "internal"), message=str(data.get("message") or ""))


@dataclass(frozen=True)
class JobInfo:
    """An immutable snapshot of one job as the API serves it (docs/api.md §1)."""

    id: str
    state: JobState
    url: str | None = None
    filename: str | None = None
    path: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: ErrorInfo | None = None
    sha256: str | None = None
    progress: Progress = field(default_factory=Progress)
    files: tuple[FileEntry, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobInfo:
        try:
            return cls(
                id=str(data["id"]),
                state=JobState(data["state"]),
                url=data.get("url"),
                filename=data.get("filename"),
                path=data.get("path"),
                created_at=parse_time(data.get("created_at")),
                started_at=parse_time(data.get("started_at")),
                finished_at=parse_time(data.get("finished_at")),
                attempts=int(data.get("attempts") or 0),
                error=ErrorInfo.from_dict(data.get("error")),
                sha256=data.get("sha256"),
                progress=Progress.from_dict(data.get("progress")),
                files=tuple(FileEntry.from_storage(f) for f in data.get("files") or ()),
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.BgdownloadError(f"the API sent a malformed job object: {exc!r}") from None

    def apply(self, event: Event) -> JobInfo:
        """The job after ``event`` (a §3 ``snapshot``, ``progress`` or ``state`` event)."""
        data = event.data
        if event.event == "snapshot":
            return JobInfo.from_dict(data)
        changes: dict[str, Any] = {}
        if data.get("state") in JobState._value2member_map_:
            changes["state"] = JobState(data["state"])
        if event.event == "progress":
            changes["progress"] = Progress.from_dict(data)
            if isinstance(data.get("files"), list):
                changes["files"] = _apply_file_progress(self.files, data["files"])
        elif event.event == "state":
            for key in ("path", "filename", "sha256"):
                if key in data:
                    changes[key] = data[key]
            if "error" in data:
                changes["error"] = ErrorInfo.from_dict(data["error"])
            if "attempts" in data:
                changes["attempts"] = int(data["attempts"] or 0)
            if "progress" in data and isinstance(data["progress"], Mapping):
                changes["progress"] = Progress.from_dict(dict(data["progress"]))
            if changes.get("state") is JobState.COMPLETED and self.progress.total is not None:
                # the last progress event may predate the final bytes
                changes.setdefault(
                    "progress", dataclasses.replace(self.progress, loaded=self.progress.total)
                )
        return dataclasses.replace(self, **changes) if changes else self


def _apply_file_progress(
    files: tuple[FileEntry, ...], updates: list[Any]
) -> tuple[FileEntry, ...]:
    merged = list(files)
    for index, update in enumerate(updates):
        if index >= len(merged) or not isinstance(update, Mapping):
            break
        entry = dataclasses.replace(merged[index], progress=Progress.from_dict(dict(update)))
        if update.get("state") in JobState._value2member_map_:
            entry.state = JobState(str(update["state"]))
        merged[index] = entry
    return tuple(merged)


def is_terminal_event(event: Event) -> bool:
    """Whether the job's stream is over after ``event`` (docs/api.md §3)."""
    if event.event not in ("state", "snapshot"):
        return False
    state = event.data.get("state")
    return isinstance(state, str) and state in JobState._value2member_map_ and (
        JobState(state).terminal
    )


def event_order(event_id: str) -> tuple[int, int] | None:
    """Redis stream ids (``"1732479303301-0"``) in comparable form; None if not one."""
    millis, sep, seq = event_id.partition("-")
    if not sep or not millis.isdigit() or not seq.isdigit():
        return None
    return int(millis), int(seq)


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API request, independent of the client that sends it."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: safe to send again after a failure the server may have seen
    idempotent: bool = False


def job_path(job_id: str, suffix: str = "") -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise errors.InvalidRequest(f"{job_id!r} is not a job id (expected a UUID string)")
    return f"{API_PREFIX}/downloads/{quote(job_id, safe='')}{suffix}"


def create_call(
    url: str | None = None, *, idempotency_key: str | None = None,
    **options: Unpack[DownloadOptions],
) -> Call:
    """``POST /downloads``; a fresh Idempotency-Key makes retrying it safe."""
    check_options(options)
    files = options.get("files")
    if url is None and files is None:
        raise errors.InvalidRequest("download() needs a url (or files=[...] for a batch)")
    if url is not None and not isinstance(url, str):
        raise errors.InvalidRequest(f"url must be a string, not {type(url).__name__}")
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if files is not None:
        body["files"] = [{"url": f} if isinstance(f, str) else dict(f) for f in files]
    for name in ("filename", "sha256", "priority", "max_speed", "connections"):
        value = options.get(name)
        if value is not None:
            body[name] = value
    headers = options.get("headers")
    if headers:
        body["headers"] = dict(headers)
    metadata = options.get("metadata")
    if metadata is not None:
        body["metadata"] = dict(metadata)
    key = idempotency_key or str(uuid.uuid4())
    return Call("POST", f"{API_PREFIX}/downloads", json=body,
                headers={"Idempotency-Key": key}, idempotent=True)


def get_call(job_id: str) -> Call:
    return Call("GET", job_path(job_id), idempotent=True)


def list_call(
    states: Iterable[JobState | str] | None = None, *, limit: int = 100, cursor: str | None = None
) -> Call:
    params: dict[str, str] = {"limit": str(limit)}
    if states:
        params["state"] = ",".join(sorted(JobState(s).value for s in states))
    if cursor:
        params["cursor"] = cursor
    return Call("GET", f"{API_PREFIX}/downloads", params=params, idempotent=True)


def control_call(job_id: str, action: str) -> Call:
    """``pause``/``resume``/``cancel``/``retry``: not retried, a repeat would answer 409."""
    if action not in ("pause", "resume", "cancel", "retry"):
        raise ValueError(f"unknown action {action!r}")
    return Call("POST", job_path(job_id, f"/{action}"))


def delete_call(job_id: str, *, delete_file: bool = False) -> Call:
    params = {"delete_file": "true"} if delete_file else {}
    return Call("DELETE", job_path(job_id), params=params, idempotent=True)


def events_path(job_id: str | None = None) -> str:
    return job_path(job_id, "/events") if job_id is not None else f"{API_PREFIX}/events"


# -- responses --------------------------------------------------------------------------------

_BY_CODE: dict[str, type[errors.BgdownloadError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidRequest, errors.Unauthorized, errors.NotFound, errors.InvalidState,
        errors.PayloadTooLarge, errors.InvalidURL, errors.BlockedDestination,
        errors.RateLimited, errors.ServerUnavailable,
    )
}
_BY_STATUS: dict[int, type[errors.BgdownloadError]] = {
    400: errors.InvalidRequest, 401: errors.Unauthorized, 404: errors.NotFound,
    409: errors.InvalidState, 413: errors.PayloadTooLarge, 422: errors.InvalidRequest,
    429: errors.RateLimited, 502: errors.ServerUnavailable, 503: errors.ServerUnavailable,
    504: errors.ServerUnavailable,
}


def _retry_after(response: httpx.Response) -> float:
    """Seconds the server asks us to wait; 1 s when it does not say (or says it unreadably)."""
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if seconds is None else seconds


def error_from_response(response: httpx.Response) -> errors.BgdownloadError:
    """The errors.py exception for a non-2xx answer, carrying the server's code and message."""
    status = response.status_code
    code: str | None = None
    message: str | None = None
    try:
        body = json.loads(response.content)
        detail = body["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or errors.BgdownloadError
    if message is None:
        snippet = response.text[:200].strip() if response.content else ""
        message = f"HTTP {status} {response.reason_phrase} from {response.request.url}"
        if snippet:
            message += f": {snippet}"
    if cls is errors.RateLimited:
        return errors.RateLimited(
            message, retry_after=_retry_after(response)
        )
    exc = cls(message)
    if code and code != exc.code:
        exc.code = code  # type: ignore[misc]  # an unknown server code: keep it verbatim
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


def raise_for_response(response: httpx.Response) -> None:
    if not response.is_success:
        raise error_from_response(response)


def transport_error(exc: httpx.TransportError, base_url: str) -> errors.ServerUnavailable:
    """A clear message for a request that never got an answer."""
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection refused"
        return errors.ServerUnavailable(
            f"cannot connect to the bgdownload API at {base_url} ({reason}); is it running? "
            "`bgdownload up` starts a local one, BGDOWNLOAD_URL points to another"
        )
    if isinstance(exc, httpx.TimeoutException):
        return errors.ServerUnavailable(
            f"the bgdownload API at {base_url} did not answer in time ({type(exc).__name__})"
        )
    return errors.ServerUnavailable(
        f"the connection to the bgdownload API at {base_url} failed: {type(exc).__name__}: {exc}"
    )


# -- retries ----------------------------------------------------------------------------------

#: answers that mean "not now" from a proxy or a restarting server
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for calls that are safe to repeat."""

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff, self.backoff * 2.0**attempt)
        return ceiling * random.uniform(0.5, 1.0)

    def retry_exception(self, call: Call, exc: httpx.TransportError, attempt: int) -> bool:
        if attempt >= self.retries:
            return False
        # a refused connection never reached the server, so any call may go again
        return call.idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)

    def retry_response(self, call: Call, response: httpx.Response, attempt: int) -> bool:
        return (
            attempt < self.retries and call.idempotent and response.status_code in RETRY_STATUSES
        )
