"""One job's run inside a worker: from its lease to a resting state.

:class:`JobRunner` honours a pending control request, runs the download — one
file or a batch — retries transient failures with backoff, and leaves the job
completed, failed, cancelled, paused, or back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable
from typing import Any

from bgdownload.engine.fetch import FetchResult, FetchSpec
from bgdownload.errors import (
    BgdownloadError,
    BlockedDestination,
    DownloadError,
    IllegalTransition,
    JobGone,
    PartialFailure,
)
from bgdownload.models import RESTING, FileEntry, Job, JobState, Progress
from bgdownload.store import StoreError
from bgdownload.store.base import outlast
from bgdownload.worker.progress import Running, Tracker, fill_totals
from bgdownload.worker.retrying import backoff, describe
from bgdownload.worker.runtime import LEASE_TTL, WorkerRuntime

log = logging.getLogger(__name__)

#: files of one batch job downloaded at once
BATCH_PARALLEL = 4
#: how long a worker's state change waits for Redis to come back before it gives up
#: (then the message keeps its job and is tried again); downloads go on meanwhile
REDIS_PATIENCE = 600.0

#: what claiming a job found: lease taken?, the job (None if gone), its pending control
Claimed = tuple[bool, Job | None, str | None]


class Interrupted(Exception):
    """A control request (pause, cancel, lost, shutdown) stopped the download."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


class JobRunner:
    """Takes one job from the queue to a resting state, retrying transient failures."""

    def __init__(self, runtime: WorkerRuntime, job_id: str) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.job_id = job_id

    async def run(self, token: str, first: Claimed, task_id: str) -> None:
        """Run the job until it rests.

        ``first`` is what :meth:`Store.claim_and_lease` did with ``token``. The
        message's run key (``task_id``) is released with the lease once the job
        rests, so the next delivery of that message picks nothing.
        """
        taken, job, action = first
        if not taken:
            if job is None or job.state in RESTING or not await self._acquire_lease(token):
                await self.store.release_run(task_id)
                return
            job, action = None, None  # read them again, now that the lease is ours
        running = Running(Job(id=self.job_id, owner="", url=None), token)
        escaped = False
        try:
            await self._start(running, job, action)
        except IllegalTransition as exc:
            log.info("job %s changed under us: %s", self.job_id, exc)
        except JobGone:
            log.info("job %s was deleted while it ran", self.job_id)
        except BaseException:
            escaped = True  # Redis gone, worker stopping: the message keeps its job
            raise
        finally:
            self.runtime.running.pop(self.job_id, None)
            if not escaped:
                # The message is done with: its run key goes with the lease. A Redis
                # error here is the caller's to retry, as for any step of the message.
                await self.store.release_lease_and_run(self.job_id, token, task_id)
            else:
                with contextlib.suppress(StoreError, OSError):
                    await self.store.release_lease(self.job_id, token)

    async def _start(self, running: Running, job: Job | None, action: str | None) -> None:
        """Honour a pending control request, or make the job active and run its attempts."""
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
                wait_for_redis=REDIS_PATIENCE, attempts=max(1, job.attempts), error=None,
            )
        await self._attempts(running)

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
            except (JobGone, StoreError):
                raise  # nothing left to record a failure on; Redis gone for too long
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
                await self._fail(running, BgdownloadError(f"internal error: {describe(exc)}"))
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
        tracker = Tracker(self.store, job)
        running.trackers = [tracker]
        result = await self._fetch(job.url or "", job, None, tracker)
        # the last progress (bytes counter, final event) goes in the transition's round trip
        running.job, _ = await self.store.transition(
            job.id, JobState.COMPLETED, allowed_from={JobState.ACTIVE}, current=running.job,
            progress_first=self.runtime.progress_due(force=running),
            wait_for_redis=REDIS_PATIENCE,
            filename=result.filename, path=result.path, sha256=result.sha256,
            progress=Progress(result.size, result.size, 0.0), error=None,
        )

    async def _download_batch(self, running: Running) -> None:
        job = running.job
        gate = asyncio.Semaphore(BATCH_PARALLEL)

        async def one(index: int, entry: FileEntry) -> None:
            async with gate:
                tracker = Tracker(self.store, job, entry, index)
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
        fill_totals(job)
        failed = [f for f in job.files if f.state is JobState.FAILED]
        changes: dict[str, Any] = {"files": job.files, "progress": job.progress}
        if failed:
            error = PartialFailure(
                f"{len(failed)} of {len(job.files)} files failed; "
                f"first: {failed[0].url}: {failed[0].error['message'] if failed[0].error else ''}"
            )
            running.job, _ = await self.store.transition(
                job.id, JobState.FAILED, allowed_from={JobState.ACTIVE},
                wait_for_redis=REDIS_PATIENCE, error=error.to_dict(), **changes,
            )
            return
        running.job, _ = await self.store.transition(
            job.id, JobState.COMPLETED, allowed_from={JobState.ACTIVE},
            wait_for_redis=REDIS_PATIENCE, error=None, **changes,
        )

    async def _fetch_with_retries(self, entry: FileEntry, tracker: Tracker) -> FetchResult:
        """A batch file retries by itself: the job's state belongs to the whole batch."""
        attempt = 0
        while True:
            try:
                return await self._fetch(entry.url, tracker.job, entry, tracker)
            except DownloadError as exc:
                attempt += 1
                if not exc.transient or attempt > self.settings.retries:
                    raise
                await asyncio.sleep(backoff(attempt, getattr(exc, "retry_after", None)))

    async def _fetch(
        self, url: str, job: Job, entry: FileEntry | None, tracker: Tracker
    ) -> FetchResult:
        """One engine attempt; Redis away while the file's name is recorded is waited out.

        The name is reserved on disk (its ``.part``) before it is recorded, and the
        tracker keeps it in ``job``/``entry``: the attempt made again once Redis is
        back reuses that name and its ``.part``, never reserving a second one.
        """
        while True:
            try:
                return await self.runtime.engine.fetch(self._spec(url, job, entry), tracker)
            except StoreError as exc:
                name = entry.filename if entry else job.filename
                if name is None:
                    raise
                log.warning("job %s: Redis unavailable while naming %s (%s)", job.id, name, exc)
                path = (entry.path if entry else job.path) or name
                await outlast(functools.partial(tracker.name_chosen, name, path),
                              limit=REDIS_PATIENCE, what=f"recording the name of job {job.id}")

    def _spec(self, url: str, job: Job, entry: FileEntry | None) -> FetchSpec:
        # A name reserved once stays the job's: retries, resumes and takeovers reuse it.
        path = entry.path if entry else job.path
        storage = self.runtime.engine.storage(self.settings.download_dir, job.owner)
        return FetchSpec(
            url=url,
            root=self.settings.download_dir,
            filename=storage.name_at(path) if path else None,
            wished_filename=entry.filename if entry else job.wished_filename,
            headers=job.headers,
            expected_sha256=entry.expected_sha256 if entry else job.expected_sha256,
            max_bytes=self.settings.max_bytes,
            max_speed=job.max_speed,
            connections=job.connections or self.settings.connections,
            owner=job.owner,
        )

    async def _wait_to_retry(self, running: Running, exc: DownloadError) -> bool:
        """Go back to ``waiting`` (a visible retry), sleep with backoff, become active again."""
        job = running.job
        running.job, _ = await self.store.transition(
            job.id, JobState.WAITING, allowed_from={JobState.ACTIVE}, queue=False,
            wait_for_redis=REDIS_PATIENCE, attempts=job.attempts + 1, error=exc.to_dict(),
        )
        delay = backoff(job.attempts, getattr(exc, "retry_after", None))
        try:
            await self._run_cancellable(running, asyncio.sleep(delay))
        except Interrupted as stop:
            await self._rest_interrupted(running, stop.action)
            return False
        running.job, _ = await self.store.transition(
            job.id, JobState.ACTIVE, allowed_from={JobState.WAITING},
            wait_for_redis=REDIS_PATIENCE,
        )
        return True

    async def _rest_interrupted(self, running: Running, action: str) -> None:
        job = running.job
        if action == "lost":
            return  # another worker holds the job now; it decides
        if action == "shutdown":
            await self.runtime.hand_back(running)
            return
        with contextlib.suppress(StoreError, OSError):  # progress is not worth waiting for
            await self.runtime.publish_progress(force=running)
        target = JobState.PAUSED if action == "pause" else JobState.CANCELLED
        if target is JobState.CANCELLED:
            await self._discard_owned()
        for entry in job.files:
            if entry.state is JobState.ACTIVE:
                entry.state = JobState.WAITING if action == "pause" else JobState.CANCELLED
                entry.progress.speed = 0.0
        current = await outlast(lambda: self.store.get(job.id), limit=REDIS_PATIENCE,
                                what=f"reading job {job.id}")
        if current is not None and current.state not in RESTING:
            changes: dict[str, Any] = {"files": job.files} if job.files else {}
            if target is JobState.CANCELLED:
                changes["error"] = {"code": "cancelled", "message": "cancelled on request"}
            running.job, _ = await self.store.transition(
                job.id, target, wait_for_redis=REDIS_PATIENCE, **changes
            )
        await outlast(lambda: self.store.clear_control(job.id), limit=REDIS_PATIENCE,
                      what=f"clearing the control request of job {job.id}")

    async def _discard_owned(self) -> None:
        """Drop the partial data of the names this job reserved, and of nothing else."""
        job = await self.store.get(self.job_id)
        if job is None:
            return
        storage = self.runtime.engine.storage(self.settings.download_dir, job.owner)
        for path in await self.store.owned_paths(job):
            name = storage.name_at(path)
            if name is not None:
                storage.discard(name)

    async def _fail(self, running: Running, exc: BgdownloadError) -> None:
        log.info("job %s failed: %s", self.job_id, exc)
        if isinstance(exc, BlockedDestination):
            await self._discard_owned()
        running.job, _ = await self.store.transition(
            running.job.id, JobState.FAILED, allowed_from={JobState.ACTIVE},
            wait_for_redis=REDIS_PATIENCE, error=exc.to_dict(),
        )
