"""Running jobs inside a worker process.

:class:`WorkerRuntime` holds what a worker process shares between its
downloads — one Redis client, one engine (one HTTP connection pool), one
worker-wide speed bucket, one progress ticker, one control listener, one lease
keeper — so the cost per download stays small and constant.
:class:`JobRunner` takes one job from ``waiting`` to a resting state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bgdownload.config import Settings
from bgdownload.engine.fetch import Engine, FetchResult, FetchSpec
from bgdownload.engine.limiter import TokenBucket
from bgdownload.errors import (
    BgdownloadError,
    BlockedDestination,
    DownloadError,
    IllegalTransition,
    PartialFailure,
)
from bgdownload.models import RESTING, FileEntry, Job, JobState, Progress
from bgdownload.store import Store, StoreError, open_redis

log = logging.getLogger(__name__)

#: a lease outlives its holder by at most this long; renewed every third of it
LEASE_TTL = 15.0
#: progress is published at least this often while a job is active, even stalled
STALL_INTERVAL = 5.0
#: the speed is measured over this recent window
SPEED_WINDOW = 3.0
#: Redis connections per worker process; jobs beyond it wait for a free one
REDIS_CONNECTIONS = 50
#: files of one batch job downloaded at once
BATCH_PARALLEL = 4
#: backoff between attempts: BASE * 2**n with full jitter, capped
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


class Interrupted(Exception):
    """A control request (pause or cancel) stopped the download."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


@dataclass(eq=False)
class Tracker:
    """Progress of one file as the engine reports it; read by the ticker (the ProgressSink)."""

    runtime: WorkerRuntime
    job: Job
    entry: FileEntry | None = None
    #: the entry's place in ``job.files`` (batch jobs)
    index: int = 0
    loaded: int = 0
    total: int | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def update(self, loaded: int, total: int | None) -> None:
        self.loaded = loaded
        self.total = total

    async def name_chosen(self, filename: str, path: str) -> None:
        if self.entry is not None:
            self.entry.filename, self.entry.path = filename, path
            await self.runtime.store.name_file(self.job.id, self.index, filename, path)
        else:
            self.job.filename, self.job.path = filename, path
            await self.runtime.store.update_fields(self.job.id, filename=filename, path=path)

    def speed(self, now: float) -> float:
        self.samples.append((now, self.loaded))
        while len(self.samples) > 2 and now - self.samples[1][0] >= SPEED_WINDOW:
            self.samples.popleft()
        first_t, first_loaded = self.samples[0]
        if now - first_t <= 0:
            return 0.0
        return max(0.0, (self.loaded - first_loaded) / (now - first_t))


@dataclass(eq=False)
class Running:
    """A job this worker is running now."""

    job: Job
    token: str
    task: asyncio.Task[Any] | None = None
    trackers: list[Tracker] = field(default_factory=list)
    interrupt: str | None = None
    reported: int = 0
    last_publish: float = 0.0


class WorkerRuntime:
    """Per-process resources shared by all downloads of one worker."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        requeue: Callable[[str], Awaitable[object]],
    ) -> None:
        self.settings = settings
        #: sends a fresh queue message for a job handed back at shutdown
        self.requeue = requeue
        self.closing = False
        self.store = store
        self.engine = engine
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, Running] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls, settings: Settings, requeue: Callable[[str], Awaitable[object]]
    ) -> WorkerRuntime:
        assert settings.redis_url
        redis = open_redis(settings.redis_url, max_connections=REDIS_CONNECTIONS)
        store = Store(redis, retention=settings.retention)
        limiter = TokenBucket(settings.max_speed) if settings.max_speed else None
        runtime = cls(settings, store, Engine(settings, worker_limiter=limiter), requeue)
        runtime._tasks = [
            asyncio.create_task(runtime._tick_progress(), name="bgd-progress"),
            asyncio.create_task(runtime._listen_control(), name="bgd-control"),
            asyncio.create_task(runtime._keep_alive(), name="bgd-heartbeat"),
        ]
        await runtime._beat()
        return runtime

    def begin_shutdown(self) -> None:
        """Hand every running job back to the queue (called on SIGTERM)."""
        self.closing = True
        for job_id in list(self.running):
            self.interrupt(job_id, "shutdown")

    async def close(self) -> None:
        self.begin_shutdown()
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded wait
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError, OSError):
            await self.store.forget_worker(self.worker_id)
        await self.engine.aclose()
        await self.store.aclose()

    async def run_message(self, task_id: str, *, hint: str = "") -> None:
        """Handle one queue message: claim its job and run it until it rests."""
        if self.closing:
            await self.requeue(hint)  # pass the message on rather than start work now
            return
        outage = 0
        while True:
            try:
                token = uuid.uuid4().hex
                # pick the job, take its lease, read it and its control: one round trip
                claimed = await self.store.claim_and_lease(task_id, token, LEASE_TTL)
                if claimed is None:
                    log.debug("message %s (for %s) found nothing waiting", task_id, hint)
                    return
                job_id, taken, job, action = claimed
                await JobRunner(self, job_id).run(
                    token=token, first=(taken, job, action), task_id=task_id
                )
                return
            except (StoreError, OSError) as exc:
                # Returning would acknowledge the message and strand the job: keep the
                # message and try again (resuming from the .part) once Redis answers.
                if self.closing:
                    raise
                outage += 1
                log.warning("Redis unavailable (%s); retrying message %s", exc, task_id)
                await asyncio.sleep(min(30.0, 0.5 * 2**outage))

    # -- background duties ----------------------------------------------------------------

    async def _beat(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "running": len(self.running)}
        await self.store.heartbeat(self.worker_id, info, ttl=30)

    async def _keep_alive(self) -> None:
        """Worker heartbeat (for /healthz) and lease renewal of every running job."""
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            try:
                await self._beat()
                running = list(self.running.values())
                renewed = await self.store.renew_leases(
                    [(r.job.id, r.token) for r in running], LEASE_TTL
                )
                for job, still_ours in zip(running, renewed, strict=True):
                    if not still_ours:
                        log.warning("lost the lease of %s; stopping it", job.job.id)
                        self.interrupt(job.job.id, "lost")
            except (StoreError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _listen_control(self) -> None:
        """Deliver pause/cancel requests to running jobs within a fraction of a second."""
        while True:
            try:
                async with self.store.control_requests() as requests:
                    # Requests published before we subscribed: read the control keys once.
                    await self._poll_control()
                    async for job_id, action in requests:
                        self.interrupt(job_id, action)
            except (StoreError, OSError) as exc:
                log.warning("control channel lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _poll_control(self) -> None:
        ids = list(self.running)
        if not ids:
            return
        for job_id, action in zip(ids, await self.store.pending_controls(ids), strict=True):
            if action:
                self.interrupt(job_id, action)

    def interrupt(self, job_id: str, action: str) -> None:
        running = self.running.get(job_id)
        if running is None or action not in ("pause", "cancel", "lost", "shutdown"):
            return
        if running.interrupt is None:
            running.interrupt = action
            if running.task is not None:
                running.task.cancel()

    async def _tick_progress(self) -> None:
        """Publish every running job's progress in one pipeline per interval."""
        interval = self.settings.progress_interval
        polls = 0
        while True:
            await asyncio.sleep(interval)
            polls += 1
            try:
                await self.publish_progress()
                if polls % max(1, int(2 / interval)) == 0:
                    await self._poll_control()
            except (StoreError, OSError) as exc:
                log.warning("progress tick failed: %s", exc)

    async def publish_progress(self, *, force: Running | None = None) -> None:
        await self.store.publish_progress(self.progress_due(force=force))

    def progress_due(self, *, force: Running | None = None) -> list[tuple[Job, int]]:
        """The progress writes due now (all of ``force``'s), marked as published."""
        now = time.monotonic()
        batch: list[tuple[Job, int]] = []
        for running in [force] if force else list(self.running.values()):
            if running.job.state is not JobState.ACTIVE or not running.trackers:
                continue
            loaded = _fill_progress(running, now)
            if force is None and loaded == running.reported and (
                now - running.last_publish < STALL_INTERVAL
            ):
                continue
            batch.append((running.job, loaded - running.reported))
            running.reported = loaded
            running.last_publish = now
        return batch


def _fill_progress(running: Running, now: float) -> int:
    """Copy the trackers' figures into the job (and its files); return total loaded."""
    job = running.job
    if job.files:
        for tracker in running.trackers:
            if tracker.entry is not None and tracker.entry.state is JobState.ACTIVE:
                tracker.entry.progress = Progress(
                    tracker.loaded, tracker.total, tracker.speed(now)
                )
        loaded = sum(f.progress.loaded for f in job.files)
        totals = [f.progress.total for f in job.files]
        total = None if any(t is None for t in totals) else sum(t for t in totals if t)
        speed = sum(f.progress.speed for f in job.files if f.state is JobState.ACTIVE)
        job.progress = Progress(loaded, total, speed)
        return loaded
    tracker = running.trackers[0]
    job.progress = Progress(tracker.loaded, tracker.total, tracker.speed(now))
    return tracker.loaded


class JobRunner:
    """Takes one job from the queue to a resting state, retrying transient failures."""

    def __init__(self, runtime: WorkerRuntime, job_id: str) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.job_id = job_id

    async def run(
        self,
        *,
        token: str | None = None,
        first: tuple[bool, Job | None, str | None],
        task_id: str | None = None,
    ) -> None:
        """Run the job until it rests.

        ``first`` is what :meth:`Store.claim_and_lease` already did with ``token``
        (lease taken?, the job, its pending control). With ``task_id`` the message's run
        key is released with the lease once the job rests, so the next delivery of that
        message picks nothing.
        """
        token = token or uuid.uuid4().hex
        taken, job, action = first
        if not taken:
            if job is None or job.state in RESTING or not await self._acquire_lease(token):
                if task_id is not None:
                    await self.store.release_run(task_id)
                return
            job, action = None, None
        running = Running(Job(id=self.job_id, owner="", url=None), token)
        escaped = False
        try:
            if job is None:
                job = await self.store.get(self.job_id)
                action = await self.store.get_control(self.job_id)
            if job is None or job.state in RESTING:
                return
            running.job = job
            self.runtime.running[job.id] = running
            if await self._honour_pending_control(running, action):
                return
            if job.state is JobState.WAITING:
                running.job, _ = await self.store.transition(
                    job.id, JobState.ACTIVE, allowed_from={JobState.WAITING}, current=job,
                    attempts=max(1, job.attempts), error=None,
                )
            await self._attempts(running)
        except IllegalTransition as exc:
            log.info("job %s changed under us: %s", self.job_id, exc)
        except KeyError:
            log.info("job %s was deleted while it ran", self.job_id)
        except BaseException:
            escaped = True  # Redis gone, worker stopping: the message keeps its job
            raise
        finally:
            self.runtime.running.pop(self.job_id, None)
            if task_id is not None and not escaped:
                # The message is done with: its run key goes with the lease. A Redis
                # error here is the caller's to retry, as for any step of the message.
                await self.store.release_lease_and_run(self.job_id, token, task_id)
            else:
                with contextlib.suppress(StoreError, OSError):
                    await self.store.release_lease(self.job_id, token)

    async def _acquire_lease(self, token: str) -> bool:
        """Take the job's lease; while another worker holds it, stand by.

        A duplicate delivery waits instead of returning, so its message is not
        acknowledged while the holder might still die and need it.
        """
        while not await self.store.acquire_lease(self.job_id, token, LEASE_TTL):
            job = await self.store.get(self.job_id)
            if job is None or job.state in RESTING:
                return False
            await asyncio.sleep(LEASE_TTL / 3)
        return True

    async def _honour_pending_control(self, running: Running, action: str | None) -> bool:
        """A pause/cancel sent while the job was queued or between deliveries."""
        if action not in ("pause", "cancel"):
            return False
        await self._rest_interrupted(running, action)
        return True

    async def _attempts(self, running: Running) -> None:
        while True:
            try:
                await self._run_cancellable(running, self._download(running))
            except Interrupted as stop:
                await self._rest_interrupted(running, stop.action)
                return
            except DownloadError as exc:
                if not exc.transient or running.job.attempts > self.settings.retries:
                    await self._fail(running, exc)
                    return
                if not await self._wait_to_retry(running, exc):
                    return
                continue
            except BgdownloadError as exc:
                await self._fail(running, exc)
                return
            except Exception as exc:
                log.exception("job %s failed unexpectedly", self.job_id)
                await self._fail(running, BgdownloadError(f"internal error: {exc}"))
                return
            return

    async def _run_cancellable(self, running: Running, work: Awaitable[None]) -> None:
        """Run ``work`` as a task that a control request can cancel."""
        running.task = asyncio.ensure_future(work)
        try:
            await running.task
        except asyncio.CancelledError:
            if running.interrupt is None:
                raise  # the worker itself is shutting down
            raise Interrupted(running.interrupt) from None
        finally:
            running.task = None
        if running.interrupt is not None:
            raise Interrupted(running.interrupt)

    async def _download(self, running: Running) -> None:
        job = running.job
        if job.files:
            await self._download_batch(running)
            return
        tracker = Tracker(self.runtime, job)
        running.trackers = [tracker]
        result = await self.runtime.engine.fetch(self._spec(job.url or "", job, None), tracker)
        # the last progress (bytes counter, final event) goes in the transition's round trip
        running.job, _ = await self.store.transition(
            job.id, JobState.COMPLETED, allowed_from={JobState.ACTIVE}, current=running.job,
            progress_first=self.runtime.progress_due(force=running),
            filename=result.filename, path=result.path, sha256=result.sha256,
            progress=Progress(result.size, result.size, 0.0), error=None,
        )

    async def _download_batch(self, running: Running) -> None:
        job = running.job
        gate = asyncio.Semaphore(BATCH_PARALLEL)

        async def one(index: int, entry: FileEntry) -> None:
            async with gate:
                tracker = Tracker(self.runtime, job, entry, index)
                running.trackers.append(tracker)
                entry.state, entry.error = JobState.ACTIVE, None
                try:
                    result = await self._fetch_with_retries(entry, tracker)
                except DownloadError as exc:
                    entry.state, entry.error = JobState.FAILED, exc.to_dict()
                    entry.progress.speed = 0.0
                    return
                finally:
                    running.trackers.remove(tracker)
                entry.state, entry.sha256 = JobState.COMPLETED, result.sha256
                entry.filename, entry.path = result.filename, result.path
                entry.progress = Progress(result.size, result.size, 0.0)

        await asyncio.gather(*(
            one(i, e) for i, e in enumerate(job.files) if e.state is not JobState.COMPLETED
        ))
        _fill_totals(job)
        failed = [f for f in job.files if f.state is JobState.FAILED]
        changes: dict[str, Any] = {"files": job.files, "progress": job.progress}
        if failed:
            error = PartialFailure(
                f"{len(failed)} of {len(job.files)} files failed; "
                f"first: {failed[0].url}: {failed[0].error['message'] if failed[0].error else ''}"
            )
            running.job, _ = await self.store.transition(
                job.id, JobState.FAILED, allowed_from={JobState.ACTIVE},
                error=error.to_dict(), **changes,
            )
            return
        running.job, _ = await self.store.transition(
            job.id, JobState.COMPLETED, allowed_from={JobState.ACTIVE}, error=None, **changes
        )

    async def _fetch_with_retries(self, entry: FileEntry, tracker: Tracker) -> FetchResult:
        """A batch file retries by itself: the job's state belongs to the whole batch."""
        attempt = 0
        while True:
            try:
                return await self.runtime.engine.fetch(
                    self._spec(entry.url, tracker.job, entry), tracker
                )
            except DownloadError as exc:
                attempt += 1
                if not exc.transient or attempt > self.settings.retries:
                    raise
                await asyncio.sleep(_backoff(attempt, getattr(exc, "retry_after", None)))

    def _spec(self, url: str, job: Job, entry: FileEntry | None) -> FetchSpec:
        return FetchSpec(
            url=url,
            root=self.settings.download_dir,
            filename=(entry.filename if entry else job.filename) if _has_part(self, entry, job)
            else None,
            wished_filename=entry.filename if entry else job.wished_filename,
            headers=job.headers,
            expected_sha256=entry.expected_sha256 if entry else job.expected_sha256,
            max_bytes=self.settings.max_bytes,
            max_speed=job.max_speed,
            connections=job.connections or self.settings.connections,
        )

    async def _wait_to_retry(self, running: Running, exc: DownloadError) -> bool:
        """Go back to ``waiting`` (a visible retry), sleep with backoff, become active again."""
        job = running.job
        running.job, _ = await self.store.transition(
            job.id, JobState.WAITING, allowed_from={JobState.ACTIVE}, queue=False,
            attempts=job.attempts + 1, error=exc.to_dict(),
        )
        delay = _backoff(job.attempts, getattr(exc, "retry_after", None))
        try:
            await self._run_cancellable(running, asyncio.sleep(delay))
        except Interrupted as stop:
            await self._rest_interrupted(running, stop.action)
            return False
        running.job, _ = await self.store.transition(
            job.id, JobState.ACTIVE, allowed_from={JobState.WAITING}
        )
        return True

    async def _rest_interrupted(self, running: Running, action: str) -> None:
        job = running.job
        if action == "lost":
            return  # another worker holds the job now; it decides
        if action == "shutdown":
            await self._hand_back(running)
            return
        await self.runtime.publish_progress(force=running)
        target = JobState.PAUSED if action == "pause" else JobState.CANCELLED
        if target is JobState.CANCELLED:
            for name in _names(job):
                self.runtime.engine.discard(self.settings.download_dir, name)
        for entry in job.files:
            if entry.state is JobState.ACTIVE:
                entry.state = JobState.WAITING if action == "pause" else JobState.CANCELLED
                entry.progress.speed = 0.0
        current = await self.store.get(job.id)
        if current is not None and current.state not in RESTING:
            changes: dict[str, Any] = {"files": job.files} if job.files else {}
            if target is JobState.CANCELLED:
                changes["error"] = {"code": "cancelled", "message": "cancelled on request"}
            running.job, _ = await self.store.transition(job.id, target, **changes)
        await self.store.clear_control(job.id)

    async def _hand_back(self, running: Running) -> None:
        """Put the job back in the queue with a fresh message; the ``.part`` stays for resume."""
        await self.runtime.publish_progress(force=running)
        job = await self.store.get(self.job_id)
        if job is None:
            return
        if job.state is JobState.ACTIVE:
            running.job, _ = await self.store.transition(
                job.id, JobState.WAITING, allowed_from={JobState.ACTIVE}
            )
        elif job.state is JobState.WAITING:  # between retries
            await self.store.requeue(job.id, job.priority, int(job.created_at.timestamp() * 1000))
        else:
            return
        await self.runtime.requeue(job.id)
        log.info("handed job %s back to the queue", job.id)

    async def _fail(self, running: Running, exc: BgdownloadError) -> None:
        log.info("job %s failed: %s", self.job_id, exc)
        if isinstance(exc, BlockedDestination):
            for name in _names(running.job):
                self.runtime.engine.discard(self.settings.download_dir, name)
        running.job, _ = await self.store.transition(
            running.job.id, JobState.FAILED, allowed_from={JobState.ACTIVE},
            error=exc.to_dict(),
        )


def _has_part(runner: JobRunner, entry: FileEntry | None, job: Job) -> bool:
    """Reuse the chosen name only when its ``.part`` is still there to resume."""
    from bgdownload.engine.safety import part_path

    name = entry.filename if entry else job.filename
    if not name or (entry is None and job.path is None) or (entry and entry.path is None):
        return False
    try:
        return part_path(runner.settings.download_dir, name).exists()
    except BgdownloadError:
        return False


def _fill_totals(job: Job) -> None:
    loaded = sum(f.progress.loaded for f in job.files)
    totals = [f.progress.total for f in job.files]
    job.progress = Progress(
        loaded, None if any(t is None for t in totals) else sum(t or 0 for t in totals), 0.0
    )


def _names(job: Job) -> list[str]:
    names = [f.filename for f in job.files] if job.files else [job.filename]
    return [n for n in names if n]


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when longer."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 300.0))
    return delay

