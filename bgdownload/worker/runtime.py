"""What a worker process shares between its downloads, and its background duties.

One Redis client, one engine (one HTTP connection pool), one worker-wide speed
bucket, one progress ticker, one control listener, one heartbeat that also
keeps the leases — so the cost per download stays small and constant. The
heartbeat is what other workers watch to take over this one's downloads if it
dies (:mod:`.takeover`); on shutdown the runtime hands its running jobs back to
the queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal

from bgdownload.config import Settings
from bgdownload.engine.fetch import Engine
from bgdownload.engine.limiter import TokenBucket
from bgdownload.models import Job, JobState
from bgdownload.store import Store, StoreError, open_redis
from bgdownload.store.queue import Claim
from bgdownload.worker.progress import Running, progress_due
from bgdownload.worker.takeover import DEAD_AFTER, HEARTBEAT_PERIOD

log = logging.getLogger(__name__)

#: a lease outlives its holder by at most this long (another worker breaks it sooner
#: once the holder is judged dead); renewed with every heartbeat
LEASE_TTL = 15.0
#: Redis connections per worker process; jobs beyond it wait for a free one
REDIS_CONNECTIONS = 50
#: the control requests that stop a running job
INTERRUPTS = ("pause", "cancel", "lost", "shutdown")


class WorkerRuntime:
    """Per-process resources shared by all downloads of one worker."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        requeue: Callable[[str], Awaitable[object]],
        worker_id: str,
    ) -> None:
        self.settings = settings
        #: sends a fresh queue message for a job handed back at shutdown
        self.requeue = requeue
        self.closing = False
        self.store = store
        self.engine = engine
        #: the broker's consumer name: whoever watches the heartbeats maps one to the other
        self.worker_id = worker_id
        store.lease_holder = worker_id
        self.running: dict[str, Running] = {}
        #: the owner of the job each queue message (by task id) claimed, from the claim
        #: until the message is done: what ``BGDOWNLOAD_OWNER_CONCURRENCY`` counts
        self.slots: dict[str, str] = {}
        self._claiming = asyncio.Lock()
        self._slot_freed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls, settings: Settings, requeue: Callable[[str], Awaitable[object]], worker_id: str
    ) -> WorkerRuntime:
        assert settings.redis_url
        redis = open_redis(settings.redis_url, max_connections=REDIS_CONNECTIONS)
        store = Store(redis, retention=settings.retention)
        limiter = TokenBucket(settings.max_speed) if settings.max_speed else None
        engine = Engine(settings, worker_limiter=limiter)
        runtime = cls(settings, store, engine, requeue, worker_id)
        runtime._tasks = [
            asyncio.create_task(runtime._tick_progress(), name="bgd-progress"),
            asyncio.create_task(runtime._listen_control(), name="bgd-control"),
            asyncio.create_task(runtime._keep_alive(), name="bgd-heartbeat"),
        ]
        await runtime._beat()
        return runtime

    # -- slots per owner (docs/api.md §17) ---------------------------------------------

    async def claim(self, task_id: str, token: str) -> Claim | Literal["capped"] | None:
        """Claim the job for a queue message, passing over owners at their cap here.

        One claim at a time per worker: two messages deciding from the same counts
        could both take an owner's last place.
        """
        async with self._claiming:
            counts = Counter(self.slots.values())
            capped = [owner for owner, n in counts.items() if n >= self.settings.owner_cap]
            found = await self.store.claim_and_lease(task_id, token, LEASE_TTL, capped=capped)
            if isinstance(found, tuple) and found[2] is not None:
                self.slots[task_id] = found[2].owner
        return found

    def free_slot(self, task_id: str) -> None:
        """The message ``task_id`` is done with its job: its owner's place is free again."""
        if self.slots.pop(task_id, None) is not None:
            self._slot_freed.set()
            self._slot_freed = asyncio.Event()

    def slot_freed(self) -> asyncio.Event:
        """Set the next time one of this worker's jobs lets go of its place."""
        return self._slot_freed

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

    def interrupt(self, job_id: str, action: str) -> None:
        """Stop a running job for ``action``; the first request wins."""
        running = self.running.get(job_id)
        if running is None or action not in INTERRUPTS:
            return
        if running.interrupt is None:
            running.interrupt = action
            if running.task is not None:
                running.task.cancel()

    async def hand_back(self, running: Running) -> None:
        """Put the job back in the queue with a fresh message; the ``.part`` stays for resume."""
        await self.publish_progress(force=running)
        job = await self.store.get(running.job.id)
        if job is None:
            return
        if job.state is JobState.ACTIVE:
            running.job, _ = await self.store.transition(
                job.id, JobState.WAITING, allowed_from={JobState.ACTIVE}
            )
        elif job.state is JobState.WAITING:  # between retries
            await self.store.requeue(job)
        else:
            return
        await self.requeue(job.id)
        log.info("handed job %s back to the queue", job.id)

    # -- progress ---------------------------------------------------------------------

    async def publish_progress(self, *, force: Running | None = None) -> None:
        await self.store.publish_progress(self.progress_due(force=force))

    def progress_due(self, *, force: Running | None = None) -> list[tuple[Job, int]]:
        """The progress writes due now (all of ``force``'s), marked as published."""
        running = [force] if force else list(self.running.values())
        return progress_due(running, time.monotonic(), force=force is not None)

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

    # -- liveness and control ---------------------------------------------------------

    async def _beat(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "running": len(self.running)}
        await self.store.heartbeat(self.worker_id, info, ttl=3 * DEAD_AFTER)

    async def _keep_alive(self) -> None:
        """Worker heartbeat (for /healthz and for takeover) and lease renewal of every
        running job, together: a worker that beats also holds its leases."""
        while True:
            await asyncio.sleep(HEARTBEAT_PERIOD)
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
