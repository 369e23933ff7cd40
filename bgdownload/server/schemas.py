"""Response and seed-route models: what /openapi.json and the interactive docs show.

Responses are documented, not re-validated: they are built by ``Job.to_public()``.
The request models both adapters validate with live in :mod:`bgdownload.web.schemas`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, StrictStr

from bgdownload.web.schemas import Strict

State = Literal["waiting", "active", "paused", "completed", "failed", "cancelled"]


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
    """A job (docs/api.md §1)."""

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


# -- docs/api.md §7: the original design's routes --


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


class InitiateBatch(Strict):
    file_ids: list[StrictInt | StrictStr] = Field(min_length=1)


class BatchInitiated(BaseModel):
    jobId: str
    status: str
    totalFiles: int
