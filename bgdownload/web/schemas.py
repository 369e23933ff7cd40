"""Request models shared by both adapters: the shape of a create body and of the query strings.

Requests are checked here for shape (types, unknown fields); the meaning
(URL schemes, blocked destinations, sizes) is checked by the Service, the one
place every surface shares. The Quart server also shows these models in
``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError


class Strict(BaseModel):
    """A model that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


class FileSpec(Strict):
    url: StrictStr
    filename: StrictStr | None = None
    sha256: StrictStr | None = None


class CreateDownload(Strict):
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
    """Query of ``DELETE /api/v1/downloads/{id}``."""

    delete_file: bool = False


def describe(error: ValidationError | Exception) -> str:
    """One readable line for a validation error: ``limit: Input should be ≤ 500``."""
    if not isinstance(error, ValidationError):
        return str(error) or "invalid request"
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)
