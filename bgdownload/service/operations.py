"""The operations behind every API surface, scoped to an owner.

The Quart routes, the Jupyter handlers, and anything else that serves the API
call this and nothing below it: validation, idempotency, rate limiting,
queueing, control, and event streams with replay all live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.engine import safety
from bgdownload.errors import (
    IllegalTransition,
    InvalidRequest,
    InvalidState,
    NotFound,
)
from bgdownload.models import TERMINAL, Event, FileEntry, Job, JobState
from bgdownload.store import Store, is_stream_id, open_redis, stream_id_key
from bgdownload.store.hub import EventHub, Subscription

log = logging.getLogger(__name__)

#: puts a job id on the work queue under the given message id
Enqueue = Callable[[str, str], Awaitable[object]]
#: the queue message for a job id under the given message id, as the broker would send it
QueueMessage = Callable[[str, str], bytes]

METADATA_LIMIT = 16 * 1024
MAX_BATCH_FILES = 10_000
#: how long pause/cancel of a running job waits for its worker to confirm
CONTROL_WAIT = 10.0
#: a worker that has not beaten for this long is not counted as live
WORKER_MAX_AGE = 15.0
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


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
        self._enqueue = enqueue
        # (task stream, message builder): create writes the message in its own script
        # instead of a separate kick, so it costs one round trip and stays atomic
        self._queue_message = queue_message
        self.hub = hub or store.event_hub()
        self._on_close = on_close

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
        """Validate a create request (API.md §2), store the job and queue it.

        Returns ``(job, created)``; ``created`` is False when ``idempotency_key``
        named a job this owner created in the last 24 h, which is returned instead.
        """
        if idempotency_key is not None:
            if not idempotency_key or len(idempotency_key) > 200:
                raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
            existing_id = await self.store.idempotent_job_id(owner, idempotency_key)
            if existing_id and (existing := await self.store.get(existing_id)) is not None:
                return existing, False
        job = await self._build_job(owner, data)
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
        template = self.settings.file_url_template
        if not template:
            raise InvalidRequest("this server has no BGDOWNLOAD_FILE_URL_TEMPLATE configured")
        if not isinstance(file_ids, list) or not file_ids:
            raise InvalidRequest("file_ids must be a non-empty list")
        files = []
        for file_id in file_ids:
            plain = re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", str(file_id))
            if isinstance(file_id, bool) or not plain:
                raise InvalidRequest(f"file id {file_id!r} is not a plain identifier")
            files.append({"url": template.replace("{file_id}", str(file_id))})
        job, _ = await self.create(owner, {"files": files})
        return job

    async def _build_job(self, owner: str, data: Mapping[str, Any]) -> Job:
        if not isinstance(data, Mapping):
            raise InvalidRequest("the request body must be a JSON object")
        url = data.get("url")
        files_in = data.get("files")
        if files_in in (None, "", []):
            files_in = None
        if url in (None, "") and files_in is None:
            raise InvalidRequest("url is required (or files for a batch)")
        if url not in (None, "") and files_in is not None:
            raise InvalidRequest("give either url or files, not both")
        headers = _headers(data.get("headers"))
        metadata = _json_field(data.get("metadata"), "metadata", dict) or {}
        if len(json.dumps(metadata)) > METADATA_LIMIT:
            raise InvalidRequest("metadata is larger than 16 KiB")
        job = Job(
            id=str(uuid.uuid4()),
            owner=owner,
            url=None,
            priority=_int(data.get("priority"), "priority", -keys.PRIORITY_LIMIT,
                          keys.PRIORITY_LIMIT) or 0,
            max_speed=_int(data.get("max_speed"), "max_speed", 1, None),
            connections=_int(data.get("connections"), "connections", 1, 64),
            metadata=metadata,
            headers=headers,
        )
        if files_in is None:
            if not isinstance(url, str):
                raise InvalidRequest("url must be a string")
            job.url = await self._check_url(url)
            job.wished_filename = _filename(data.get("filename"))
            job.filename = job.wished_filename
            job.expected_sha256 = _sha256(data.get("sha256"))
        else:
            entries = _json_field(files_in, "files", list)
            if not entries or len(entries) > MAX_BATCH_FILES:
                raise InvalidRequest(f"files must hold 1 to {MAX_BATCH_FILES} entries")
            for index, entry in enumerate(entries):
                if isinstance(entry, str):
                    entry = {"url": entry}
                if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
                    raise InvalidRequest(f"files[{index}] must be an object with a url")
                job.files.append(
                    FileEntry(
                        url=await self._check_url(entry["url"]),
                        filename=_filename(entry.get("filename")),
                        expected_sha256=_sha256(entry.get("sha256")),
                    )
                )
        return job

    async def _check_url(self, url: str) -> str:
        """Refuse bad URLs and blocked destinations up front (the worker checks again)."""
        url = safety.validate_url(url)
        host, port = safety.url_host_port(url)
        literal = safety.literal_host_address(host)
        if literal is not None:  # an IP literal needs no resolver: check it as is
            safety.check_address(literal, self.settings, host=host)
            return url
        # A name that does not resolve now is the worker's to report (network_error).
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(safety.resolve_and_check(host, port, self.settings), 5.0)
        return url

    # -- read -------------------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> Job:
        job = await self.store.get(job_id) if _is_uuid(job_id) else None
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
        path = safety.safe_path(self.settings.download_dir, job.path)
        if not path.is_file():
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
        if delete_file:
            for name in _job_files(job):
                root = self.settings.download_dir
                _remove_quietly(safety.safe_path(root, name))
                _remove_quietly(safety.part_path(root, name))
                _remove_quietly(safety.sidecar_path(root, name))
        await self.store.delete(job)

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
                self._remove_partials(job)
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
                    self._remove_partials(job)
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

    def _remove_partials(self, job: Job) -> None:
        root = self.settings.download_dir
        for name in _job_files(job):
            _remove_quietly(safety.part_path(root, name))
            _remove_quietly(safety.sidecar_path(root, name))

    # -- events -----------------------------------------------------------------------

    async def job_events(
        self, owner: str, job_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """The job's events (API.md §3): replay after ``last_event_id`` or a snapshot, then live.

        Ends after the terminal ``state`` event.
        """
        await self.get(owner, job_id)
        stream = keys.job_events(job_id)
        async with self.hub.listening(stream) as sub:
            last = None
            if (
                last_event_id is not None
                and is_stream_id(last_event_id)
                and not await self.store.lost_after(stream, last_event_id)
            ):
                last = last_event_id
            terminal = False
            if last is None:
                snapshot = await self._snapshot(job_id)
                yield snapshot
                last, terminal = snapshot.id, JobState(snapshot.data["state"]).terminal
            else:
                replayed = await self.store.job_events_after(job_id, last, count=10_000)
                for event in replayed:
                    yield event
                    last = event.id
                    terminal = _is_terminal_event(event)
                if not replayed:
                    # Nothing after the client's id: if the job has ended, the client
                    # already saw its last state event, so the stream is over.
                    current = await self.store.get(job_id)
                    terminal = current is None or current.state.terminal
            while not terminal:
                event = await self._next_live(sub, job_id)
                if event.event == "snapshot":
                    yield event
                    last, terminal = event.id, JobState(event.data["state"]).terminal
                    continue
                if stream_id_key(event.id) <= stream_id_key(last):
                    continue
                yield event
                last = event.id
                terminal = _is_terminal_event(event)

    async def _snapshot(self, job_id: str) -> Event:
        snap = await self.store.snapshot(job_id)
        if snap is None:
            raise NotFound(f"no download {job_id}")
        return Event(snap.last_event_id, "snapshot", snap.job.to_public())

    async def _next_live(self, sub: Subscription, job_id: str) -> Event:
        while True:
            if sub.take_overflow():
                # The listener fell behind: start over from now.
                return await self._snapshot(job_id)
            try:
                return await asyncio.wait_for(sub.get(), timeout=5.0)
            except TimeoutError:
                # A job can vanish (deleted, expired) while we wait: end instead of hanging.
                if await self.store.get(job_id) is None:
                    raise NotFound(f"download {job_id} was deleted") from None

    async def owner_position(self, owner: str) -> str:
        """The id of the owner's latest event: replay from it to miss nothing after now."""
        return await self.store.last_event_id(keys.owner_events(owner))

    async def owner_events(
        self, owner: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Events of all the owner's jobs; replays after ``last_event_id``; never ends."""
        stream = keys.owner_events(owner)
        async with self.hub.listening(stream) as sub:
            last = await self.store.last_event_id(stream)
            if last_event_id is not None and is_stream_id(last_event_id):
                if await self.store.lost_after(stream, last_event_id):
                    # Too old to replay: give a snapshot of every job still in motion.
                    jobs, _ = await self.store.list_jobs(
                        owner, states={JobState.WAITING, JobState.ACTIVE, JobState.PAUSED},
                        limit=500,
                    )
                    for job in jobs:
                        yield Event(last, "snapshot", job.to_public())
                else:
                    for event in await self.store.owner_events_after(
                        owner, last_event_id, count=10_000
                    ):
                        yield event
                        last = event.id
            while True:
                sub.take_overflow()
                event = await sub.get()
                if stream_id_key(event.id) <= stream_id_key(last):
                    continue
                yield event
                last = event.id

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


def _is_terminal_event(event: Event) -> bool:
    return event.event == "state" and JobState(event.data["state"]).terminal


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _job_files(job: Job) -> list[str]:
    names = [f.path or f.filename for f in job.files] if job.files else [job.path or job.filename]
    return [n for n in names if n]


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def _json_field(value: Any, name: str, kind: type) -> Any:
    """Form fields carry objects as JSON text; JSON bodies carry them as they are."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and kind is not str:
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidRequest(f"{name} must be a JSON {kind.__name__}") from None
    if not isinstance(value, kind):
        raise InvalidRequest(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _int(value: Any, name: str, low: int, high: int | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"{name} must be {bound}")
    return number


def _filename(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("filename must be a string")
    return safety.sanitize_filename(value)


def _sha256(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SHA256.match(value):
        raise InvalidRequest("sha256 must be 64 hexadecimal characters")
    return value.lower()


def _headers(value: Any) -> dict[str, str]:
    headers = _json_field(value, "headers", dict) or {}
    for name, text in headers.items():
        if not isinstance(text, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise InvalidRequest("headers must map header names to string values")
        if "\r" in text or "\n" in text:
            raise InvalidRequest(f"header {name} contains a line break")
    return dict(headers)


__all__ = ["Enqueue", "Service", "Stats"]
