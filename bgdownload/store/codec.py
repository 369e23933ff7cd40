"""How jobs and events look in Redis: hash and stream entries in and out, stream ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bgdownload.models import Event, Job

#: hash field prefix of a batch file's chosen name, kept apart from the ``files`` JSON so
#: that recording one name costs O(1) instead of rewriting the whole list (see name_file)
FILE_NAME = "file_name:"


def dumps(data: Any) -> str:
    """Compact JSON, as every JSON value in the store is written."""
    return json.dumps(data, separators=(",", ":"))


def load_job(raw: dict[str, str]) -> Job:
    """A job from its hash, with the batch file names recorded by ``Store.name_file``."""
    job = Job.from_storage(raw)
    if job.files:
        for key, value in raw.items():
            if key.startswith(FILE_NAME):
                index = int(key[len(FILE_NAME):])
                if index < len(job.files):
                    job.files[index].filename, job.files[index].path = json.loads(value)
    return job


def load_flat_job(flat: list[str]) -> Job | None:
    """A job from a Lua ``HGETALL`` reply (``[field, value, ...]``); None when empty."""
    raw = dict(zip(flat[::2], flat[1::2], strict=True))
    return load_job(raw) if raw else None


def flat_job(job: Job) -> str:
    """The job's hash as one JSON array ``[field, value, ...]`` (a script unpacks it)."""
    return json.dumps(
        [part for item in job.to_storage().items() for part in item],
        ensure_ascii=False, separators=(",", ":"),
    )


def load_event(entry_id: str, fields: dict[str, str]) -> Event:
    """An event from its stream entry."""
    return Event(id=entry_id, event=fields["event"], data=json.loads(fields["data"]))


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id such as ``1732479303301-0``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> tuple[int, int]:
    """Sort key of the smallest id after ``entry_id``."""
    ms, seq = stream_id_key(entry_id)
    return ms, seq + 1


def is_stream_id(text: str) -> bool:
    """Whether ``text`` is a stream id (``<ms>`` or ``<ms>-<seq>``)."""
    ms, sep, seq = text.partition("-")
    return ms.isdigit() and (not sep or seq.isdigit())


@dataclass(frozen=True)
class Snapshot:
    """A job and the id of the last event already reflected in it."""

    job: Job
    last_event_id: str
