"""The job store: the only code that talks to Redis (jobs, events, queue, leases, stats)."""

from redis.exceptions import RedisError as StoreError

from bgdownload.store.jobs import Snapshot, Store, is_stream_id, open_redis, stream_id_key

__all__ = ["Snapshot", "Store", "StoreError", "is_stream_id", "open_redis", "stream_id_key"]
