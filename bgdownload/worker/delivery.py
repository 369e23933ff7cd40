"""An at-least-once taskiq broker on a Redis stream (see shared/notes/taskiq-facts.md).

The stock ``RedisStreamBroker`` acknowledges messages but, measured here,
reclaims a dead worker's message only after a read that returned new work,
prefetches batches that another worker can reclaim and run twice, and lets a
long task be reclaimed while it still runs. This subclass:

- reads only while it has a free slot, and at most as many messages as it has
  free slots (one ``XREADGROUP`` for all of them), so concurrency per worker
  process is bounded by ``slots`` whatever the CLI says and nothing is
  prefetched that another worker could have run;
- names its consumer after its worker id (the id the worker's heartbeats carry)
  and watches those heartbeats: the messages of a consumer whose worker stopped
  beating (:class:`~bgdownload.worker.takeover.Liveness`) are taken over within
  seconds, as many as there are free slots, and the dead worker is marked so its
  job leases can be broken instead of waited out;
- reclaims messages idle for ``idle_timeout`` on a timer, even with an idle
  queue — the fallback for whatever the heartbeat watch missed;
- keeps its own in-flight messages from ever looking idle (``XCLAIM … JUSTID``
  on a heartbeat), but never claims back one another worker took over;
- deletes a message when it is acknowledged, so the stream never needs ``MAXLEN``
  (which would drop messages nobody received) — unless another worker holds it
  now, which then acknowledges it itself;
- starts its consumer group at ``0`` so messages sent before any worker existed
  are still delivered, and forgets stale consumers with nothing pending.

A per-job lease in the store is the second line of defence against a
duplicate delivery running the same download twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage
from taskiq.serializers import JSONSerializer
from taskiq_redis import RedisStreamBroker

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.store.base import CONNECT_TIMEOUT, BudgetRetry
from bgdownload.worker import takeover
from bgdownload.worker.takeover import Liveness

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
        self._duties: list[asyncio.Task[None]] = []
        self._liveness = Liveness()
        #: consumers judged dead whose messages are still to take over
        self._dead: list[str] = []
        scripting = Redis(connection_pool=self.connection_pool)
        self._take_over: AsyncScript = scripting.register_script(takeover.TAKE_OVER)
        self._keep_mine: AsyncScript = scripting.register_script(takeover.KEEP_MINE)
        self._ack_mine: AsyncScript = scripting.register_script(takeover.ACK_MINE)

    async def startup(self) -> None:
        if self.is_worker_process:
            # the worker id too (WorkerRuntime takes it): heartbeats name consumers
            self.consumer_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        await super().startup()
        if self.is_worker_process:
            await self._forget_idle_consumers()

    async def shutdown(self) -> None:
        for duty in self._duties:
            duty.cancel()
        for duty in self._duties:
            with contextlib.suppress(asyncio.CancelledError):
                await duty
        await super().shutdown()

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def _ack() -> None:
            async with Redis(connection_pool=self.connection_pool) as conn:
                await self._ack_mine(
                    keys=[queue_name], args=[self.consumer_group_name, self.consumer_name, id],
                    client=conn,
                )
            self._release(id)

        return _ack

    def _release(self, message_id: str) -> None:
        if message_id in self._in_flight:
            self._in_flight.discard(message_id)
            if self._free is not None:
                self._free.release()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        self._free = asyncio.Semaphore(self.slots)
        self._duties = [
            asyncio.create_task(self._keep_in_flight_alive(), name="bgd-keep-messages"),
            asyncio.create_task(self._watch_workers(), name="bgd-watch-workers"),
        ]
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
                    messages = await self._take_over_dead(conn, taken) if self._dead else []
                    if not messages and time.monotonic() >= next_reclaim:
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

    async def _take_over_dead(self, conn: Any, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` messages (the free slots) of consumers judged dead."""
        messages: list[tuple[str, bytes]] = []
        for dead in list(self._dead):
            want = count - len(messages)
            if want <= 0:
                break
            taken = await self._take_over(
                keys=[self.queue_name, keys.dead_worker(dead)],
                args=[self.consumer_group_name, dead, self.consumer_name, want,
                      takeover.DEAD_MARK_TTL],
                client=conn,
            )
            if len(taken) < want:  # it holds nothing more
                self._dead.remove(dead)
            for message_id, flat in taken:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                log.info("worker %s stopped beating; took over message %s",
                         dead, _text(message_id))
                messages.append((_text(message_id), fields[b"data"]))
        return messages

    async def _watch_workers(self) -> None:
        """Judge, from their heartbeats, which consumers holding messages are dead."""
        while True:
            await asyncio.sleep(takeover.WATCH_PERIOD)
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    summary = await conn.xpending(self.queue_name, self.consumer_group_name)
                    beats: list[tuple[bytes, float]] = await conn.zrange(
                        keys.WORKERS, 0, -1, withscores=True
                    )  # type: ignore[assignment]
            except (RedisError, OSError) as exc:
                self._liveness.forget()  # judging on a broken watch could kill the living
                log.debug("could not watch the workers: %s", exc)
                continue
            holders = [
                _text(c["name"]) for c in summary["consumers"]
                if c["pending"] and _text(c["name"]) != self.consumer_name
            ]
            self._dead = self._liveness.observe(
                time.monotonic(), {_text(name): score for name, score in beats}, holders
            )

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
                    await self._keep_mine(
                        keys=[self.queue_name],
                        args=[self.consumer_group_name, self.consumer_name, *ids],
                        client=conn,
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
