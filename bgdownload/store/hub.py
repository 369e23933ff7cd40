"""Fan-out of event streams: one Redis reader per process, however many listeners.

A listener subscribes to a stream key; one reader task runs ``XREAD BLOCK``
over every key that has listeners and pushes each entry into the listeners'
bounded queues. A listener that falls behind by more than its queue holds is
marked ``overflowed`` instead of growing memory; its consumer then resyncs
from a fresh snapshot. So 1,000 SSE clients cost one Redis connection, not
1,000 blocking reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bgdownload.models import Event
from bgdownload.store.codec import load_event

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscription:
    """One listener's view of one stream."""

    key: str
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    overflowed: bool = False

    async def get(self) -> Event:
        return await self.queue.get()

    def take_overflow(self) -> bool:
        """Whether events were dropped since the last call; if so, drop what is queued too.

        The listener then rebuilds its view from a fresh snapshot instead.
        """
        if not self.overflowed:
            return False
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False
        return True


class EventHub:
    """Tails every stream that has listeners with one blocking reader task.

    ``block_ms`` bounds how late a stream that just got its first listener joins the
    shared read (an idle hub costs ten cheap calls a second); busy streams return at once.
    """

    def __init__(self, redis: Redis, *, block_ms: int = 100, queue_size: int = 256) -> None:
        self._redis: Any = redis  # decoded replies; redis-py's reply unions do not help here
        self._block_ms = block_ms
        self._queue_size = queue_size
        self._cursors: dict[str, str] = {}
        self._listeners: dict[str, set[Subscription]] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def listener_count(self) -> int:
        return sum(len(s) for s in self._listeners.values())

    async def subscribe(self, key: str) -> Subscription:
        """Start receiving every entry appended to ``key`` from now on."""
        sub = Subscription(key, asyncio.Queue(maxsize=self._queue_size))
        if key not in self._listeners:
            # The cursor is the stream's last id *now*, so nothing appended between this
            # call and the reader's next XREAD is missed.
            last = await self._redis.xrevrange(key, count=1)
            if key not in self._listeners:  # a concurrent subscribe may have won the await
                self._cursors[key] = last[0][0] if last else "0-0"
                self._listeners[key] = set()
        self._listeners[key].add(sub)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="bgdownload-event-hub")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        listeners = self._listeners.get(sub.key)
        if listeners is None:
            return
        listeners.discard(sub)
        if not listeners:
            del self._listeners[sub.key]
            self._cursors.pop(sub.key, None)

    @contextlib.asynccontextmanager
    async def listening(self, key: str) -> AsyncIterator[Subscription]:
        sub = await self.subscribe(key)
        try:
            yield sub
        finally:
            self.unsubscribe(sub)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read_forever(self) -> None:
        lost_since: float | None = None
        while self._listeners:
            streams = dict(self._cursors)
            try:
                result = await self._redis.xread(streams, block=self._block_ms, count=500)
            except (RedisError, OSError) as exc:
                # Listeners stay subscribed and each cursor stays where it was, so once
                # Redis is back the read resumes after the last entry delivered: no gap
                # and no entry twice (the streams are in Redis's persistence).
                if lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("event hub lost Redis (%s); streams resume when it is back", exc)
                await asyncio.sleep(min(5.0, 0.5 + (time.monotonic() - lost_since) / 4))
                continue
            if lost_since is not None:
                log.warning("event hub: Redis is back after %.1f s; streams resume",
                            time.monotonic() - lost_since)
                lost_since = None
            for key, entries in result or []:
                if key not in self._cursors:
                    continue
                for entry_id, fields in entries:
                    event = load_event(entry_id, fields)
                    for sub in list(self._listeners.get(key, ())):
                        try:
                            sub.queue.put_nowait(event)
                        except asyncio.QueueFull:
                            sub.overflowed = True
                    self._cursors[key] = entry_id
