"""Event streams: progress publishing, replay after an id, trimming checks, the hub.

Every state change and every progress update is one Lua script that updates the
job hash and appends the event, so what ``GET /downloads/{id}`` says and what the
event stream says never disagree. An event is appended to the owner's stream first
and then to the job's stream *with the same id*: ids of one owner's stream only
grow, so they are valid ids for each of its jobs' streams too, and a client can use
one id space everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from bgdownload import keys
from bgdownload.models import Event, Job
from bgdownload.store.base import StoreBase
from bgdownload.store.codec import dumps, load_event, next_id, stream_id_key
from bgdownload.store.hub import EventHub


def transition_keys(job_id: str, owner: str) -> list[str]:
    """The KEYS of ``transition.lua`` for one job of ``owner``."""
    return [
        keys.job(job_id),
        keys.job_events(job_id),
        keys.owner_events(owner),
        keys.owner_waiting(owner),
        keys.STATS_STATES,
        keys.OWNER_ROTATION,
        keys.TURN,
        keys.LEGACY_QUEUE,
    ]


class EventStore(StoreBase):
    """Writes ``progress`` events and reads the job and owner streams."""

    async def publish_progress(self, jobs: Sequence[tuple[Job, int]]) -> list[str | None]:
        """Write progress of many active jobs and their ``progress`` events in one round trip.

        Each item is the job (with its current ``progress``/``files``) and the bytes
        it downloaded since the last tick. Jobs no longer active are skipped. A retry
        of the pipeline after a lost reply appends and counts nothing twice.
        """
        if not jobs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._queue_progress(pipe, jobs, uuid.uuid4().hex)
            results = await pipe.execute()
        return [str(r) if r else None for r in results]

    async def _queue_progress(self, pipe: Any, jobs: Sequence[tuple[Job, int]], op: str) -> None:
        """Queue the progress scripts of ``jobs`` on ``pipe`` as operation ``op``."""
        for job, delta in jobs:
            files = dumps([f.to_storage() for f in job.files]) if job.files else ""
            await self._scripts.progress(
                keys=[
                    keys.job(job.id),
                    keys.job_events(job.id),
                    keys.owner_events(job.owner),
                    keys.STATS_BYTES,
                ],
                args=[
                    job.progress.loaded,
                    dumps(job.progress.total),
                    repr(float(job.progress.speed)),
                    files,
                    dumps(job.progress_event_data()),
                    self.job_stream_maxlen,
                    self.owner_stream_maxlen,
                    max(0, delta),
                    op,
                ],
                client=pipe,
            )

    async def note_state(self, job: Job, note: str, **extra: Any) -> str | None:
        """Append a ``state`` event with ``note`` to an active job's streams; its state stays.

        Says why something the user sees changed while the job runs on (docs/api.md §11:
        ``"source changed; restarted"``). The note lives in the event stream only, not
        in the job's hash, so ``GET`` never shows a stale one. The transition script
        does the work (active → active, no field changed), so the event gets one id in
        both streams like every other. None when the job is no longer active.
        """
        data = {"id": job.id, "state": "active", "note": note, **extra}
        ok, value = await self._scripts.transition(
            keys=transition_keys(job.id, job.owner),
            args=["active", "active", dumps(data), self.job_stream_maxlen,
                  self.owner_stream_maxlen, 0, "", job.id, uuid.uuid4().hex, job.owner],
        )
        return str(value) if int(ok) else None

    async def job_events_after(self, job_id: str, after_id: str, count: int = 1000) -> list[Event]:
        rows = await self.redis.xrange(keys.job_events(job_id), min=f"({after_id}", count=count)
        return [load_event(entry_id, fields) for entry_id, fields in rows]

    async def owner_events_after(self, owner: str, after_id: str, count: int = 1000) -> list[Event]:
        rows = await self.redis.xrange(keys.owner_events(owner), min=f"({after_id}", count=count)
        return [load_event(entry_id, fields) for entry_id, fields in rows]

    async def lost_after(self, stream: str, after_id: str) -> bool:
        """Whether events after ``after_id`` were trimmed away (so a replay would have a gap)."""
        try:
            info = await self.redis.xinfo_stream(stream)
        except ResponseError:
            return False  # no such stream: nothing to replay, nothing lost
        deleted = info.get("max-deleted-entry-id")
        if deleted is not None:
            return stream_id_key(str(deleted)) > stream_id_key(after_id)
        first = info.get("first-entry")  # Redis < 7: compare with the oldest kept entry
        return first is not None and stream_id_key(first[0]) > next_id(after_id)

    async def last_event_id(self, stream: str) -> str:
        rows = await self.redis.xrevrange(stream, count=1)
        return rows[0][0] if rows else "0-0"

    def event_hub(self, **options: Any) -> EventHub:
        """A fan-out reader of this store's event streams (one per process is enough)."""
        return EventHub(self.redis, **options)
