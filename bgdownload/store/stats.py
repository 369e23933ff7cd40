"""Worker heartbeats and the counters behind ``/stats``: live workers, states, bytes."""

from __future__ import annotations

import time
from typing import Any

from bgdownload import keys
from bgdownload.models import JobState
from bgdownload.store.base import StoreBase
from bgdownload.store.codec import dumps


class StatsStore(StoreBase):
    """Which workers are alive and how many jobs and bytes went through."""

    async def heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        """Record that ``worker_id`` is alive: the beat other workers watch (its score
        changes each time) and its info; a worker wrongly judged dead is so no longer."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.WORKERS, {worker_id: time.time()})
            pipe.set(keys.worker(worker_id), dumps(info), ex=max(1, int(ttl)))
            pipe.delete(keys.dead_worker(worker_id))
            await pipe.execute()

    async def forget_worker(self, worker_id: str) -> None:
        await self.redis.zrem(keys.WORKERS, worker_id)
        await self.redis.delete(keys.worker(worker_id))

    async def live_workers(self, max_age: float) -> int:
        cutoff = time.time() - max_age
        await self.redis.zremrangebyscore(keys.WORKERS, "-inf", f"({cutoff}")
        return int(await self.redis.zcard(keys.WORKERS))

    async def state_counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.STATS_STATES)
        counts = {state.value: 0 for state in JobState}
        counts.update({name: max(0, int(value)) for name, value in raw.items()})
        return counts

    async def bytes_downloaded(self) -> int:
        return int(await self.redis.get(keys.STATS_BYTES) or 0)
