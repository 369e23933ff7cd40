"""Plain typed data: job states, jobs, progress and events, JSON in and out.

The public JSON shape of a job is docs/api.md §1. Fields that must never be served
(owner, source headers, expected digests, lease bookkeeping) live on the
dataclass but are left out of :meth:`Job.to_public`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bgdownload.errors import IllegalTransition, InvalidRequest


class JobState(StrEnum):
    """The states of docs/api.md §1."""

    #: queued, or back in the queue for a retry
    WAITING = "waiting"
    #: a worker holds it and bytes are moving
    ACTIVE = "active"
    #: stopped on request; the ``.part`` file is kept
    PAUSED = "paused"
    #: every byte arrived and was verified (terminal)
    COMPLETED = "completed"
    #: gave up; ``error`` says why (terminal)
    FAILED = "failed"
    #: stopped on request; partial data deleted (terminal)
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL



TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


def parse_states(value: str | JobState | Iterable[str | JobState] | None) -> set[JobState] | None:
    """``"active,waiting"`` (any case) or a list of states → states; None or ``""`` → None.

    An unknown name is an :class:`InvalidRequest` that lists the valid ones.
    """
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    states: set[JobState] = set()
    for item in items:
        try:
            states.add(JobState(item.strip().lower() if isinstance(item, str) else item))
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise InvalidRequest(f"unknown state {item!r} (one of: {known})") from None
    return states

#: resting states: a worker holds no message for a job in one of these
RESTING = TERMINAL | {JobState.PAUSED}

#: allowed transitions; ``retry`` (failed|cancelled → waiting) is the only way out of a
#: terminal state, and pausing a queued job is allowed so "pause" works before it starts
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset(
        {JobState.ACTIVE, JobState.PAUSED, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.ACTIVE: frozenset(
        {JobState.WAITING, JobState.PAUSED, JobState.COMPLETED, JobState.FAILED,
         JobState.CANCELLED}
    ),
    JobState.PAUSED: frozenset({JobState.WAITING, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.WAITING}),
    JobState.CANCELLED: frozenset({JobState.WAITING}),
}


def check_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`IllegalTransition` unless ``current → new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a {current.value} job cannot become {new.value}")


def utcnow() -> datetime:
    """Now in UTC, at the millisecond precision that the JSON form keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def isoformat(moment: datetime | None) -> str | None:
    """``2026-11-24T20:15:03.120Z``: milliseconds, UTC, ``Z`` suffix."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Progress:
    """Bytes so far, size if known, and the speed over a short recent window."""

    loaded: int = 0
    total: int | None = None
    speed: float = 0.0

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None if self.total is None else 100.0
        return round(min(100.0, self.loaded * 100.0 / self.total), 1)

    @property
    def eta(self) -> float | None:
        if self.total is None:
            return None
        remaining = max(0, self.total - self.loaded)
        if remaining == 0:
            return 0.0
        if self.speed <= 0:
            return None
        return round(remaining / self.speed, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "total": self.total,
            "percent": self.percent,
            "speed": round(self.speed),
            "eta": self.eta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Progress:
        data = data or {}
        return cls(
            loaded=int(data.get("loaded") or 0),
            total=None if data.get("total") is None else int(data["total"]),
            speed=float(data.get("speed") or 0.0),
        )


@dataclass
class FileEntry:
    """One URL of a batch job."""

    url: str
    filename: str | None = None
    path: str | None = None
    state: JobState = JobState.WAITING
    progress: Progress = field(default_factory=Progress)
    error: dict[str, str] | None = None
    sha256: str | None = None
    #: digest the caller expects (private: it is their input, not a result)
    expected_sha256: str | None = None

    def to_public(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "filename": self.filename,
            "path": self.path,
            "state": self.state.value,
            "progress": self.progress.to_dict(),
            "error": self.error,
            "sha256": self.sha256,
        }

    def to_storage(self) -> dict[str, Any]:
        return {**self.to_public(), "expected_sha256": self.expected_sha256}

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> FileEntry:
        return cls(
            url=data["url"],
            filename=data.get("filename"),
            path=data.get("path"),
            state=JobState(data.get("state", "waiting")),
            progress=Progress.from_dict(data.get("progress")),
            error=data.get("error"),
            sha256=data.get("sha256"),
            expected_sha256=data.get("expected_sha256"),
        )


@dataclass
class Job:
    """A download job: docs/api.md §1 plus the private fields the worker needs."""

    id: str
    owner: str
    url: str | None
    state: JobState = JobState.WAITING
    filename: str | None = None
    path: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: dict[str, str] | None = None
    sha256: str | None = None
    progress: Progress = field(default_factory=Progress)
    files: list[FileEntry] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_speed: int | None = None
    connections: int | None = None
    # -- private: never served --
    #: the filename the caller asked for (``filename`` is the one chosen on disk)
    wished_filename: str | None = None
    expected_sha256: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: id of the queue message that first queued it (the seed API's ``queueJobId``)
    queue_id: str | None = None

    @property
    def is_batch(self) -> bool:
        return bool(self.files)

    def to_public(self) -> dict[str, Any]:
        """The job object of docs/api.md §1 (what every API surface serves)."""
        return {
            "id": self.id,
            "state": self.state.value,
            "url": self.url,
            "filename": self.filename,
            "path": self.path,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "attempts": self.attempts,
            "error": self.error,
            "sha256": self.sha256,
            "progress": self.progress.to_dict(),
            "files": [f.to_public() for f in self.files],
            "metadata": self.metadata,
            "priority": self.priority,
            "max_speed": self.max_speed,
            "connections": self.connections,
        }

    def progress_event_data(self) -> dict[str, Any]:
        """Data of a ``progress`` event (docs/api.md §3)."""
        data: dict[str, Any] = {"id": self.id, "state": self.state.value, **self.progress.to_dict()}
        if self.files:
            data["files"] = [
                {"state": f.state.value, **f.progress.to_dict()} for f in self.files
            ]
        return data

    # -- storage: one flat Redis hash of strings --
    def to_storage(self) -> dict[str, str]:
        return {
            "id": self.id,
            "owner": self.owner,
            "url": _dump(self.url),
            "state": self.state.value,
            "filename": _dump(self.filename),
            "path": _dump(self.path),
            "created_at": _dump(isoformat(self.created_at)),
            "started_at": _dump(isoformat(self.started_at)),
            "finished_at": _dump(isoformat(self.finished_at)),
            "attempts": str(self.attempts),
            "error": _dump(self.error),
            "sha256": _dump(self.sha256),
            "loaded": str(self.progress.loaded),
            "total": _dump(self.progress.total),
            "speed": repr(float(self.progress.speed)),
            "files": _dump([f.to_storage() for f in self.files]),
            "metadata": _dump(self.metadata),
            "priority": str(self.priority),
            "max_speed": _dump(self.max_speed),
            "connections": _dump(self.connections),
            "wished_filename": _dump(self.wished_filename),
            "expected_sha256": _dump(self.expected_sha256),
            "headers": _dump(self.headers),
            "queue_id": _dump(self.queue_id),
        }

    @classmethod
    def from_storage(cls, raw: dict[str, str]) -> Job:
        def load(key: str) -> Any:
            value = raw.get(key)
            return None if value in (None, "") else json.loads(value)

        return cls(
            id=raw["id"],
            owner=raw["owner"],
            url=load("url"),
            state=JobState(raw["state"]),
            filename=load("filename"),
            path=load("path"),
            created_at=parse_time(load("created_at")) or utcnow(),
            started_at=parse_time(load("started_at")),
            finished_at=parse_time(load("finished_at")),
            attempts=int(raw.get("attempts") or 0),
            error=load("error"),
            sha256=load("sha256"),
            progress=Progress(
                loaded=int(raw.get("loaded") or 0),
                total=load("total"),
                speed=float(raw.get("speed") or 0.0),
            ),
            files=[FileEntry.from_storage(f) for f in load("files") or []],
            metadata=load("metadata") or {},
            priority=int(raw.get("priority") or 0),
            max_speed=load("max_speed"),
            connections=load("connections"),
            wished_filename=load("wished_filename"),
            expected_sha256=load("expected_sha256"),
            headers=load("headers") or {},
            queue_id=load("queue_id"),
        )


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Event:
    """One event of a job's stream (docs/api.md §3); ``id`` is the Redis stream id."""

    id: str
    event: str  # "snapshot" | "progress" | "state"
    data: dict[str, Any]

    def to_ws_frame(self) -> dict[str, Any]:
        return {"event": self.event, "id": self.id, "data": self.data}

    def sse(self) -> str:
        """The event as Server-Sent Events text, ending with its blank line."""
        return f"id: {self.id}\nevent: {self.event}\ndata: {json.dumps(self.data)}\n\n"
