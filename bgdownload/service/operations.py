"""The operations behind every API surface, scoped to an owner: create, read, control, delete.

The web layer (both HTTP adapters), the CLI's local calls and anything else
that serves the API call :class:`Service` and nothing below it. It checks
requests with :mod:`~bgdownload.service.validation`, streams events with
:mod:`~bgdownload.service.streams`, and reaches Redis only through the
:class:`~bgdownload.store.Store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.errors import IllegalTransition, InvalidRequest, InvalidState, NotFound
from bgdownload.models import TERMINAL, Event, Job, JobState
from bgdownload.service import streams, validation
from bgdownload.storage import Storage, storage_at
from bgdownload.store import Store, open_redis
from bgdownload.store.hub import EventHub

log = logging.getLogger(__name__)

#: puts a job id on the work queue under the given message id
Enqueue = Callable[[str, str], Awaitable[object]]
#: the queue message for a job id under the given message id, as the broker would send it
QueueMessage = Callable[[str, str], bytes]

#: how long pause/cancel of a running job waits for its worker to confirm
CONTROL_WAIT = 10.0
#: a worker that has not beaten for this long is not counted as live
WORKER_MAX_AGE = 15.0


@dataclass(frozen=True)
class Stats:
    """Figures for ``/metrics``."""

    jobs_by_state: dict[str, int]
    bytes_downloaded: int
    queue_depth: int
    workers: int


class Service:
    """Create, read, control and stream jobs of one owner at a time."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        enqueue: Enqueue,
        *,
        hub: EventHub | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        queue_message: tuple[str, QueueMessage] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        #: where each owner's finished files and partial data live (docs/api.md §17)
        self._storages: dict[str, Storage] = {}
        self._enqueue = enqueue
        # (task stream, message builder): create writes the message in its own script
        # instead of a separate kick, so it costs one round trip and stays atomic
        self._queue_message = queue_message
        self.hub = hub or store.event_hub()
        self._on_close = on_close
        self.stream_slots = streams.StreamSlots(settings.max_streams_per_owner)

    @classmethod
    async def connect(cls, settings: Settings) -> Service:
        """Open Redis and the queue broker (for sending work) described by ``settings``."""
        from bgdownload.worker.sender import QueueSender

        sender = await QueueSender.open(settings)
        store = Store(open_redis(settings.resolve_redis_url()), retention=settings.retention)
        hub = store.event_hub()
        inline = (sender.queue_name, sender.message) if sender.inline else None

        async def close() -> None:
            await hub.close()
            await sender.close()
            await store.aclose()

        return cls(store, settings, sender.send, hub=hub, on_close=close, queue_message=inline)

    async def close(self) -> None:
        await self.hub.close()
        if self._on_close is not None:
            await self._on_close()

    # -- create -----------------------------------------------------------------------

    async def create(
        self, owner: str, data: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Validate a create request (docs/api.md §2), store the job and queue it.

        Returns ``(job, created)``; ``created`` is False when ``idempotency_key``
        named a job this owner created in the last 24 h, which is returned instead.
        """
        if idempotency_key is not None:
            if not idempotency_key or len(idempotency_key) > 200:
                raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
            existing_id = await self.store.idempotent_job_id(owner, idempotency_key)
            if existing_id and (existing := await self.store.get(existing_id)) is not None:
                return existing, False
        job = await validation.build_job(owner, data, self.settings)
        message_id = job.queue_id = uuid.uuid4().hex
        task = None
        if self._queue_message is not None:
            stream, build = self._queue_message
            task = (stream, build(job.id, message_id))
        job, created = await self.store.create(
            job, idempotency_key=idempotency_key, rate=self.settings.rate_limit, task=task
        )
        if created and task is None:
            await self._enqueue(job.id, message_id)
        return job, created

    async def create_from_file_ids(self, owner: str, file_ids: Any) -> Job:
        """The seed demo's ``{"file_ids": [...]}``: a batch job over the URL template."""
        files = validation.files_from_ids(self.settings.file_url_template, file_ids)
        job, _ = await self.create(owner, {"files": files})
        return job

    # -- read -------------------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> Job:
        job = await self.store.get(job_id) if validation.is_uuid(job_id) else None
        if job is None or job.owner != owner:
            raise NotFound(f"no download {job_id}")
        return job

    async def list(
        self,
        owner: str,
        *,
        states: set[JobState] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        if not 1 <= limit <= 500:
            raise InvalidRequest("limit must be between 1 and 500")
        if cursor is not None and not re.fullmatch(r"\d+:[0-9a-f-]{36}", cursor):
            raise InvalidRequest("cursor is not one this server gave out")
        return await self.store.list_jobs(owner, states=states, limit=limit, cursor=cursor)

    async def file_path(self, owner: str, job_id: str) -> Path:
        job = await self.get(owner, job_id)
        if job.state is not JobState.COMPLETED or not job.path:
            raise InvalidState(f"download {job_id} is {job.state.value}, not a finished file")
        storage = self.storage(job.owner)
        name = storage.name_at(job.path)
        path = storage.file_path(name) if name is not None else None
        if path is None or not path.is_file():
            raise NotFound(f"the file of download {job_id} is no longer on disk")
        return path

    # -- control ----------------------------------------------------------------------

    async def cancel(self, owner: str, job_id: str) -> Job:
        return await self._stop(owner, job_id, JobState.CANCELLED, "cancel")

    async def pause(self, owner: str, job_id: str) -> Job:
        return await self._stop(owner, job_id, JobState.PAUSED, "pause")

    async def resume(self, owner: str, job_id: str) -> Job:
        return await self._requeue(owner, job_id, {JobState.PAUSED}, reset=False)

    async def retry(self, owner: str, job_id: str) -> Job:
        return await self._requeue(
            owner, job_id, {JobState.FAILED, JobState.CANCELLED}, reset=True
        )

    async def delete(self, owner: str, job_id: str, *, delete_file: bool = False) -> None:
        job = await self.get(owner, job_id)
        if not job.state.terminal:
            job = await self.cancel(owner, job_id)
        # Only files this job reserved itself; its partial data goes with it either way.
        storage = self.storage(job.owner)
        for name in await _owned_names(self.store, job, storage):
            if delete_file:
                storage.delete(name)
            else:
                storage.discard(name)
        await self.store.delete(job)

    def storage(self, owner: str) -> Storage:
        """Where ``owner``'s files are: their folder under the root (``local``: the root)."""
        storage = self._storages.get(owner)
        if storage is None:
            storage = self._storages[owner] = storage_at(self.settings.download_dir, owner)
        return storage

    async def _stop(self, owner: str, job_id: str, target: JobState, action: str) -> Job:
        job = await self.get(owner, job_id)
        if target not in _stoppable(job.state):
            raise InvalidState(f"download {job_id} is {job.state.value}; cannot {action} it")
        if job.state is not JobState.ACTIVE:
            try:
                job, _ = await self.store.transition(
                    job_id, target, allowed_from={JobState.WAITING, JobState.PAUSED}
                )
            except IllegalTransition:
                return await self._stop(owner, job_id, target, action)  # it just started
            if target is JobState.CANCELLED:
                await self._remove_partials(job)
            return job
        await self.store.request_control(job_id, action)
        return await self._await_worker(owner, job_id, target, action)

    async def _await_worker(self, owner: str, job_id: str, target: JobState, action: str) -> Job:
        """Wait for the worker to confirm a pause/cancel; take over if no worker holds it."""
        deadline = time.monotonic() + CONTROL_WAIT
        while time.monotonic() < deadline:
            job = await self.get(owner, job_id)
            if job.state is target or job.state in TERMINAL:
                return job
            if job.state is JobState.WAITING:
                # it went back to waiting (a retry) before the worker saw the request
                return await self._stop(owner, job_id, target, action)
            if not await self.store.has_lease(job_id):
                # Its worker died: nobody will act on the request, so do it here.
                try:
                    job, _ = await self.store.transition(
                        job_id, target, allowed_from={JobState.ACTIVE}
                    )
                except IllegalTransition:
                    continue
                if target is JobState.CANCELLED:
                    await self._remove_partials(job)
                return job
            await asyncio.sleep(0.05)
        return await self.get(owner, job_id)

    async def _requeue(
        self, owner: str, job_id: str, allowed: set[JobState], *, reset: bool
    ) -> Job:
        job = await self.get(owner, job_id)
        if job.state not in allowed:
            raise InvalidState(f"download {job_id} is {job.state.value}")
        changes: dict[str, Any] = {}
        if reset:
            changes = {"attempts": 0, "error": None, "sha256": None}
        await self.store.clear_control(job_id)
        try:
            job, _ = await self.store.transition(
                job_id, JobState.WAITING, allowed_from=allowed, **changes
            )
        except IllegalTransition as exc:
            raise InvalidState(str(exc)) from None
        await self._enqueue(job.id, uuid.uuid4().hex)
        return job

    async def _remove_partials(self, job: Job) -> None:
        storage = self.storage(job.owner)
        for name in await _owned_names(self.store, job, storage):
            storage.discard(name)

    # -- events -----------------------------------------------------------------------

    def job_events(
        self, owner: str, job_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """The job's events (docs/api.md §3): replay after ``last_event_id`` or a snapshot,
        then live. Ends after the terminal ``state`` event.

        Raises at once (before any event) for a malformed id or an owner over the stream cap.
        """
        if last_event_id is not None:
            streams.check_event_id(last_event_id)
        return self.stream_slots.hold(owner, self._job_events(owner, job_id, last_event_id))

    async def _job_events(
        self, owner: str, job_id: str, last_event_id: str | None
    ) -> AsyncGenerator[Event, None]:
        await self.get(owner, job_id)
        # closed with this generator, so its hub subscription goes when the client does
        async with contextlib.aclosing(
            streams.job_events(self.store, self.hub, job_id, last_event_id)
        ) as events:
            async for event in events:
                yield event

    async def owner_position(self, owner: str) -> str:
        """The id of the owner's latest event: replay from it to miss nothing after now."""
        return await self.store.last_event_id(keys.owner_events(owner))

    def owner_events(
        self, owner: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Events of all the owner's jobs; replays after ``last_event_id``; never ends.

        Raises at once (before any event) for a malformed id or an owner over the stream cap.
        """
        if last_event_id is not None:
            streams.check_event_id(last_event_id)
        return self.stream_slots.hold(
            owner, streams.owner_events(self.store, self.hub, owner, last_event_id)
        )

    # -- health -----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``{"redis": "ok", "workers": N}``; raises when Redis cannot be reached."""
        await self.store.ping()
        return {"redis": "ok", "workers": await self.store.live_workers(WORKER_MAX_AGE)}

    async def stats(self) -> Stats:
        return Stats(
            jobs_by_state=await self.store.state_counts(),
            bytes_downloaded=await self.store.bytes_downloaded(),
            queue_depth=await self.store.queue_depth(),
            workers=await self.store.live_workers(WORKER_MAX_AGE),
        )


# -- helpers ------------------------------------------------------------------------------


def _stoppable(state: JobState) -> set[JobState]:
    """Targets reachable by pause/cancel from ``state``."""
    return {
        JobState.WAITING: {JobState.PAUSED, JobState.CANCELLED},
        JobState.ACTIVE: {JobState.PAUSED, JobState.CANCELLED},
        JobState.PAUSED: {JobState.CANCELLED},
    }.get(state, set())


async def _owned_names(store: Store, job: Job, storage: Storage) -> list[str]:
    """The names of ``job``'s files that the job reserved itself: all it may delete."""
    names = [storage.name_at(path) for path in await store.owned_paths(job)]
    return [name for name in names if name is not None]


__all__ = ["Enqueue", "Service", "Stats"]
