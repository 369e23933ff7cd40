"""An at-least-once taskiq broker on a Redis stream (see shared/notes/taskiq-facts.md).

The stock ``RedisStreamBroker`` acknowledges messages but, measured here,
reclaims a dead worker's message only after a read that returned new work,
prefetches batches that another worker can reclaim and run twice, and lets a
long task be reclaimed while it still runs. This subclass:

- reads only while it has a free slot, and at most as many messages as it has
  free slots (one ``XREADGROUP`` for all of them), so concurrency per worker
  process is bounded by ``slots`` whatever the CLI says and nothing is
  prefetched that another worker could have run;
- reclaims messages idle for ``idle_timeout`` on a timer, even with an idle queue;
- keeps its own in-flight messages from ever looking idle (``XCLAIM … JUSTID``
  on a heartbeat), so only a dead worker's messages are taken over;
- deletes a message when it is acknowledged, so the stream never needs ``MAXLEN``
  (which would drop messages nobody received);
- starts its consumer group at ``0`` so messages sent before any worker existed
  are still delivered, and forgets stale consumers with nothing pending.

A per-job lease in the store is the second line of defence against a
duplicate delivery running the same download twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage
from taskiq.serializers import JSONSerializer
from taskiq_redis import RedisStreamBroker

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.store.base import CONNECT_TIMEOUT, BudgetRetry

log = logging.getLogger(__name__)

#: the one task on the queue: a message names it, the worker runs it
TASK_NAME = "bgdownload.download"


class DownloadBroker(RedisStreamBroker):
    """``RedisStreamBroker`` with bounded slots, timer reclaim and in-flight heartbeats."""

    def __init__(
        self,
        url: str,
        *,
        slots: int,
        idle_timeout: float,
        queue_name: str,
        consumer_group_name: str = "bgdownload",
        **connection_kwargs: Any,
    ) -> None:
        super().__init__(
            url,
            queue_name=queue_name,
            consumer_group_name=consumer_group_name,
            consumer_id="0",
            xread_block=1000,
            xread_count=1,
            idle_timeout=int(idle_timeout * 1000),
            # redis-py's 5 s socket timeout meets a 3.11 asyncio bug that keeps an idle
            # stream worker from exiting on SIGTERM (taskiq-facts.md)
            socket_timeout=None,
            **connection_kwargs,
        )
        self.slots = slots
        self.idle_timeout_s = idle_timeout
        self._free: asyncio.Semaphore | None = None
        self._in_flight: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await super().startup()
        if self.is_worker_process:
            await self._forget_idle_consumers()

    async def shutdown(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await super().shutdown()

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def _ack() -> None:
            async with (
                Redis(connection_pool=self.connection_pool) as conn,
                conn.pipeline(transaction=True) as pipe,
            ):
                pipe.xack(queue_name, self.consumer_group_name, id)
                pipe.xdel(queue_name, id)
                await pipe.execute()
            self._release(id)

        return _ack

    def _release(self, message_id: str) -> None:
        if message_id in self._in_flight:
            self._in_flight.discard(message_id)
            if self._free is not None:
                self._free.release()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        self._free = asyncio.Semaphore(self.slots)
        self._keeper = asyncio.create_task(self._keep_in_flight_alive())
        reclaim_every = max(1.0, min(5.0, self.idle_timeout_s / 2))
        next_reclaim = 0.0
        async with Redis(connection_pool=self.connection_pool) as conn:
            while True:
                await self._free.acquire()
                taken = 1
                while not self._free.locked():  # the other free slots, without waiting
                    await self._free.acquire()
                    taken += 1
                try:
                    messages: list[tuple[str, bytes]] = []
                    if time.monotonic() >= next_reclaim:
                        reclaimed = await self._reclaim_one(conn)
                        if reclaimed is None:
                            next_reclaim = time.monotonic() + reclaim_every
                        else:
                            messages.append(reclaimed)
                    if not messages:
                        messages = await self._read(conn, taken)
                except (RedisError, OSError) as exc:
                    for _ in range(taken):
                        self._free.release()
                    log.warning("queue read failed (%s); retrying in 1 s", exc)
                    await asyncio.sleep(1.0)
                    continue
                for _ in range(taken - len(messages)):
                    self._free.release()
                self._in_flight.update(message_id for message_id, _ in messages)
                for message_id, data in messages:
                    yield AckableMessage(
                        data=data,
                        ack=self._ack_generator(id=message_id, queue_name=self.queue_name),
                    )

    async def _read(self, conn: Any, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` new messages (one per free slot), blocking while there are none."""
        fetched = await conn.xreadgroup(
            self.consumer_group_name,
            self.consumer_name,
            {self.queue_name: ">"},
            block=self.block,
            count=count,
        )
        return [
            (_text(message_id), fields[b"data"])
            for _stream, entries in fetched or []
            for message_id, fields in entries
        ]

    async def _reclaim_one(self, conn: Any) -> tuple[str, bytes] | None:
        """Take over one message that a dead worker held for longer than ``idle_timeout``."""
        result = await conn.xautoclaim(
            self.queue_name,
            self.consumer_group_name,
            self.consumer_name,
            min_idle_time=int(self.idle_timeout_s * 1000),
            start_id="0-0",
            count=1,
        )
        for message_id, fields in result[1]:
            if fields:  # a deleted entry comes back without fields
                log.info("took over message %s from a silent worker", _text(message_id))
                return _text(message_id), fields[b"data"]
        return None

    async def _keep_in_flight_alive(self) -> None:
        """Reset the idle time of the messages this worker holds, so none is taken over."""
        period = max(0.5, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            ids = list(self._in_flight)
            if not ids:
                continue
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    await conn.xclaim(
                        self.queue_name,
                        self.consumer_group_name,
                        self.consumer_name,
                        min_idle_time=0,
                        message_ids=list[Any](ids),
                        justid=True,
                    )
            except (RedisError, OSError) as exc:
                log.warning("could not renew in-flight messages: %s", exc)

    async def _forget_idle_consumers(self) -> None:
        """Each worker start adds a consumer; drop old ones that hold nothing."""
        try:
            async with Redis(connection_pool=self.connection_pool) as conn:
                consumers = await conn.xinfo_consumers(self.queue_name, self.consumer_group_name)
                for consumer in consumers:
                    name = _text(consumer["name"])
                    if consumer["pending"] == 0 and name != self.consumer_name:
                        await conn.xgroup_delconsumer(
                            self.queue_name, self.consumer_group_name, name
                        )
        except ResponseError as exc:
            log.debug("could not list consumers: %s", exc)


def make_broker(settings: Settings) -> DownloadBroker:
    """A broker for ``settings``: workers consume from it, the API sends into it."""
    new = DownloadBroker(
        settings.resolve_redis_url(),
        slots=settings.concurrency,
        idle_timeout=settings.redelivery_timeout,
        queue_name=keys.TASK_STREAM,
        retry=BudgetRetry(), socket_connect_timeout=CONNECT_TIMEOUT,  # the store's policy
    ).with_serializer(JSONSerializer())
    assert isinstance(new, DownloadBroker)
    return new


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
