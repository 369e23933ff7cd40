"""The waiting queue, leases and control requests: how a worker claims and holds a job."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Final, Literal

from bgdownload import keys
from bgdownload.models import Job
from bgdownload.store.base import StoreBase
from bgdownload.store.codec import load_flat_job

#: how long a control request waits for the worker that runs the job
_CONTROL_TTL = 86400
#: jobs of the legacy single queue moved to their owners' queues per claim
_MIGRATE_BATCH = 500

#: what :meth:`QueueStore.claim_and_lease` answers when jobs wait only for capped owners
CAPPED: Final = "capped"
#: a claimed job: its id, whether the lease was taken, the job (None if gone), its control
Claim = tuple[str, bool, Job | None, str | None]


class QueueStore(StoreBase):
    """Claims, leases and control requests of the jobs in the queue.

    A lease's value names the worker that holds it (``lease_holder``, set by the
    worker) and a token: another worker may break it once the holder was judged
    dead (:func:`bgdownload.keys.dead_worker`), rather than wait out its TTL.
    """

    #: the worker id written into the leases this store takes; empty: none named
    lease_holder: str = ""

    def _lease_value(self, token: str) -> str:
        return f"{self.lease_holder} {token}" if self.lease_holder else token

    async def claim_and_lease(
        self, task_id: str, token: str, ttl: float, *, capped: Collection[str] = ()
    ) -> Claim | Literal["capped"] | None:
        """The job a queue message runs, its lease and its state, in one round trip.

        The job is the one the message picked before (a redelivery resumes it), else
        the best waiting job of the next owner in the rotation that is not in
        ``capped`` (owners served round robin, docs/api.md §17). None when nothing is
        waiting, :data:`CAPPED` when only owners in ``capped`` have waiting jobs.
        Jobs left in the single queue of an older version move to their owners'
        queues first, a batch per claim.
        """
        found = await self._scripts.claim_and_lease(
            keys=[keys.run(task_id), keys.OWNER_ROTATION, keys.TURN, keys.LEGACY_QUEUE],
            args=[int(self.retention) + 86400, self._lease_value(token), int(ttl * 1000),
                  keys.job(""), keys.lease(""), keys.control(""), keys.dead_worker(""),
                  *keys.OWNER_WAITING, _MIGRATE_BATCH, *capped],
        )
        if not found:
            return None
        if found == CAPPED:
            return CAPPED
        picked, taken, control, flat = found
        return str(picked), bool(int(taken)), load_flat_job(flat), control or None

    async def release_lease_and_run(self, job_id: str, token: str, task_id: str) -> None:
        """:meth:`release_lease` and :meth:`release_run` at once, only while the lease
        is ours: a worker that lost the job keeps its hands off the message's run key."""
        await self._scripts.lease_release(
            keys=[keys.lease(job_id), keys.run(task_id)], args=[self._lease_value(token)]
        )

    async def release_run(self, task_id: str) -> None:
        await self.redis.delete(keys.run(task_id))

    async def requeue(self, job: Job) -> None:
        """Put a waiting job back in its owner's queue (e.g. handed back between retries)."""
        score = keys.queue_score(job.priority, int(job.created_at.timestamp() * 1000))
        await self._scripts.enqueue(
            keys=[keys.owner_waiting(job.owner), keys.OWNER_ROTATION, keys.TURN],
            args=[job.id, score, job.owner],
        )

    async def queue_depth(self) -> int:
        """Jobs waiting for a worker, all owners together."""
        return int(await self._scripts.queue_depth(
            keys=[keys.OWNER_ROTATION, keys.LEGACY_QUEUE], args=[*keys.OWNER_WAITING]
        ))

    async def acquire_lease(self, job_id: str, token: str, ttl: float) -> bool:
        """Take the lease of ``job_id`` if it is free or its holder was judged dead."""
        return bool(await self._scripts.lease_take(
            keys=[keys.lease(job_id)],
            args=[self._lease_value(token), int(ttl * 1000), keys.dead_worker("")],
        ))

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        """Renew many ``(job id, token)`` leases in one round trip; which are still ours."""
        if not leases:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, token in leases:
                await self._scripts.lease_renew(
                    keys=[keys.lease(job_id), keys.job(job_id)],
                    args=[self._lease_value(token), int(ttl * 1000)],
                    client=pipe,
                )
            results = await pipe.execute()
        return [bool(r) for r in results]

    async def release_lease(self, job_id: str, token: str) -> None:
        await self._scripts.lease_release(
            keys=[keys.lease(job_id)], args=[self._lease_value(token)]
        )

    async def has_lease(self, job_id: str) -> bool:
        """Whether a live worker holds ``job_id`` (its lease has not expired)."""
        return bool(await self.redis.exists(keys.lease(job_id)))

    async def request_control(self, job_id: str, action: str) -> None:
        """Ask the worker running ``job_id`` to ``cancel`` or ``pause`` it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.control(job_id), action, ex=_CONTROL_TTL)
            pipe.publish(keys.CONTROL_CHANNEL, f"{job_id} {action}")
            await pipe.execute()

    async def pending_controls(self, job_ids: Sequence[str]) -> list[str | None]:
        """The control request (``pause``/``cancel``) waiting for each job, if any."""
        if not job_ids:
            return []
        values = await self.redis.mget([keys.control(i) for i in job_ids])
        return [str(v) if v else None for v in values]

    @contextlib.asynccontextmanager
    async def control_requests(self) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """Subscribe to control requests; yields ``(job_id, action)`` for each one published
        from the moment the ``async with`` is entered (never ends by itself)."""
        pubsub = self.redis.pubsub()

        async def requests() -> AsyncIterator[tuple[str, str]]:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    job_id, _, action = str(message["data"]).partition(" ")
                    yield job_id, action

        try:
            await pubsub.subscribe(keys.CONTROL_CHANNEL)
            yield requests()
        finally:
            await pubsub.aclose()

    async def get_control(self, job_id: str) -> str | None:
        value = await self.redis.get(keys.control(job_id))
        return str(value) if value else None

    async def clear_control(self, job_id: str) -> None:
        await self.redis.delete(keys.control(job_id))
