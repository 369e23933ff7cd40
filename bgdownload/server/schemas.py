"""Request and response models: what /openapi.json and the interactive docs show.

Requests are validated here for shape (types, unknown fields); the meaning
(URL schemes, blocked destinations, sizes) is checked by the Service, the one
place every surface shares. Responses are documented, not re-validated: they
are built by ``Job.to_public()``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

State = Literal["waiting", "active", "paused", "completed", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileSpec(_Strict):
    url: StrictStr
    filename: StrictStr | None = None
    sha256: StrictStr | None = None


class CreateDownload(_Strict):
    """Body of ``POST /api/v1/downloads`` (JSON, or form fields of the same names)."""

    url: StrictStr | None = Field(None, description="http or https URL (unless `files`)")
    files: list[FileSpec] | None = Field(None, description="batch: one entry per URL")
    filename: StrictStr | None = Field(None, description="wished file name, sanitised")
    sha256: StrictStr | None = Field(None, description="expected hex digest")
    headers: dict[str, StrictStr] | None = Field(
        None, description="extra request headers for the source; never echoed back"
    )
    priority: StrictInt | None = Field(None, description="higher first among waiting jobs")
    max_speed: StrictInt | None = Field(None, description="bytes/s cap for this job")
    connections: StrictInt | None = Field(None, description="parallel ranged connections")
    metadata: dict[str, Any] | None = Field(None, description="free JSON object, ≤ 16 KiB")


class ListQuery(BaseModel):
    """Query of ``GET /api/v1/downloads``."""

    state: str | None = Field(None, description="comma-separated states, e.g. active,waiting")
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None


class StreamQuery(BaseModel):
    """Query of the event-stream routes (for clients that cannot set headers)."""

    last_event_id: str | None = None
    access_token: str | None = None


class DeleteQuery(BaseModel):
    delete_file: bool = False


class ProgressModel(BaseModel):
    loaded: int
    total: int | None
    percent: float | None
    speed: int
    eta: float | None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class FileModel(BaseModel):
    url: str
    filename: str | None
    path: str | None
    state: State
    progress: ProgressModel
    error: ErrorDetail | None
    sha256: str | None


class JobModel(BaseModel):
    """A job (API.md §1)."""

    id: str
    state: State
    url: str | None
    filename: str | None
    path: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: ErrorDetail | None
    sha256: str | None
    progress: ProgressModel
    files: list[FileModel]
    metadata: dict[str, Any]
    priority: int
    max_speed: int | None
    connections: int | None


class JobList(BaseModel):
    items: list[JobModel]
    next: str | None


class Health(BaseModel):
    redis: str
    workers: int


# -- API.md §7: the original design's routes --


class SeedCreate(BaseModel):
    url: str


class SeedCreated(BaseModel):
    success: bool
    message: str
    jobId: str
    queueJobId: str | int | None


class SeedProgress(BaseModel):
    loaded: int
    total: int
    percent: int
    speed: int


class SeedStatus(BaseModel):
    success: bool
    jobId: str
    state: State
    progress: SeedProgress


class InitiateBatch(_Strict):
    file_ids: list[StrictInt | StrictStr] = Field(min_length=1)


class BatchInitiated(BaseModel):
    jobId: str
    status: str
    totalFiles: int


def describe(error: ValidationError | Exception) -> str:
    """One readable line for a validation error: ``limit: Input should be ≤ 500``."""
    if not isinstance(error, ValidationError):
        return str(error) or "invalid request"
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)
