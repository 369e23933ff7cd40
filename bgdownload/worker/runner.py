"""One job's run inside a worker: from the queue message to a resting state.

:func:`run_message` turns a queue message into a leased job (retrying while Redis
is away, so the message is never acknowledged with its job stranded);
:class:`JobRunner` honours a pending control request, runs the download — one
file or a batch — retries transient failures with backoff, and leaves the job
completed, failed, cancelled, paused, or back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
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
from bgdownload.store.queue import CAPPED
from bgdownload.worker.progress import Running, Tracker, fill_totals
from bgdownload.worker.runtime import LEASE_TTL, WorkerRuntime

log = logging.getLogger(__name__)

#: files of one batch job downloaded at once
BATCH_PARALLEL = 4
#: backoff between attempts: BASE * 2**n with full jitter, capped
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
#: a message that found only jobs of owners at their cap here claims again this often
#: (and whenever one of this worker's jobs ends)
PARK_POLL = 0.5
#: ... and after this long goes to another worker, if there is one
PARK_HANDOFF = 5.0
#: a worker whose heartbeat is older than this is not counted as one to pass a message to
#: (the age /healthz counts workers by)
LIVE_WORKER_AGE = 15.0

#: what claiming a job found: lease taken?, the job (None if gone), its pending control
Claimed = tuple[bool, Job | None, str | None]


class Interrupted(Exception):
    """A control request (pause, cancel, lost, shutdown) stopped the download."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


async def run_message(runtime: WorkerRuntime, task_id: str, *, hint: str = "") -> None:
    """Handle one queue message: claim its job and run it until it rests."""
    if runtime.closing:
        await runtime.requeue(hint)  # pass the message on rather than start work now
        return
    outage = 0
    parked_at = time.monotonic()
    while True:
        try:
            token = uuid.uuid4().hex
            # pick the job, take its lease, read it and its control: one round trip
            claimed = await runtime.claim(task_id, token)
            if claimed is None:
                log.debug("message %s (for %s) found nothing waiting", task_id, hint)
                return
            if claimed == CAPPED:
                if await _stay_parked(runtime, hint, parked_at):
                    continue
                return
            job_id, taken, job, action = claimed
            try:
                await JobRunner(runtime, job_id).run(token, (taken, job, action), task_id)
            finally:
                runtime.free_slot(task_id)
            return
        except (StoreError, OSError) as exc:
            # Returning would acknowledge the message and strand the job: keep the
            # message and try again (resuming from the .part) once Redis answers.
            if runtime.closing:
                raise
            outage += 1
            log.warning("Redis unavailable (%s); retrying message %s", exc, task_id)
            await asyncio.sleep(min(30.0, 0.5 * 2**outage))


async def _stay_parked(runtime: WorkerRuntime, hint: str, parked_at: float) -> bool:
    """A message that found only jobs of owners at their cap in this worker.

    Returning would acknowledge it and could leave a waiting job with no message,
    so it stays here, unacknowledged, and claims again once one of this worker's
    jobs ends or after :data:`PARK_POLL` (another owner's job may have come).
    After :data:`PARK_HANDOFF`, when other workers are alive, it is passed on (a
    fresh message, sent before this one is acknowledged) to a worker where the
    owner may be below its cap. False: passed on, return.
    """
    handoff = time.monotonic() - parked_at >= PARK_HANDOFF
    if runtime.closing or (handoff and await runtime.store.live_workers(LIVE_WORKER_AGE) > 1):
        await runtime.requeue(hint)
        log.info("passed a message on: only owners at their cap here have waiting jobs")
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PARK_POLL):
            await runtime.slot_freed().wait()
    return True


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
                attempts=max(1, job.attempts), error=None,
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
            except JobGone:
                raise  # nothing left to record a failure on
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
        tracker = Tracker(self.store, job)
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
                await asyncio.sleep(backoff(attempt, getattr(exc, "retry_after", None)))

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
        delay = backoff(job.attempts, getattr(exc, "retry_after", None))
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
            await self.runtime.hand_back(running)
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
    name = entry.filename if entry else job.filename
    if not name or (entry is None and job.path is None) or (entry and entry.path is None):
        return False
    return runner.runtime.engine.storage(runner.settings.download_dir).has_part(name)


def _names(job: Job) -> list[str]:
    names = [f.filename for f in job.files] if job.files else [job.filename]
    return [n for n in names if n]


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when longer."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 300.0))
    return delay

