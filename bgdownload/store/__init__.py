"""The job store: the only code that talks to Redis (jobs, events, queue, leases, stats).

:class:`Store` is one object made of one part per concept: :mod:`.jobs` (job
hashes and state changes), :mod:`.events` (event streams), :mod:`.queue` (claims,
leases, control requests) and :mod:`.stats` (workers and counters). Key names come
from :mod:`bgdownload.keys`; the Lua scripts live in ``lua/*.lua``.
"""

from redis.exceptions import RedisError as StoreError

from bgdownload.store.base import open_redis
from bgdownload.store.codec import Snapshot, is_stream_id, stream_id_key
from bgdownload.store.jobs import JobStore
from bgdownload.store.queue import QueueStore
from bgdownload.store.stats import StatsStore


class Store(JobStore, QueueStore, StatsStore):
    """Every job operation on Redis, each one atomic (docs/internals.md "Redis layout").

    ``redis`` must decode responses.
    """


__all__ = ["Snapshot", "Store", "StoreError", "is_stream_id", "open_redis", "stream_id_key"]
