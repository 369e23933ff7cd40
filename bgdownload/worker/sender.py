"""The API side of the queue: sends download messages that ``bgdownload.worker:broker`` consumes."""

from __future__ import annotations

from typing import Any

from taskiq import TaskiqMiddleware

from bgdownload.config import Settings


class QueueSender:
    """Puts job ids on the work queue for the API process (it never consumes)."""

    def __init__(self, broker: Any, task: Any) -> None:
        self._broker = broker
        self._task = task
        #: the Redis stream messages go to
        self.queue_name: str = broker.queue_name
        # The create script can write the message itself (one round trip, atomic with the
        # job) only when sending is a plain XADD: no stream cap, no middleware hooks.
        self.inline = broker.maxlen is None and not any(
            type(m).pre_send is not TaskiqMiddleware.pre_send
            or type(m).post_send is not TaskiqMiddleware.post_send
            for m in broker.middlewares
        )

    @classmethod
    async def open(cls, settings: Settings) -> QueueSender:
        from bgdownload.worker.task import download, make_broker

        broker = make_broker(settings)
        await broker.startup()
        return cls(broker, download)

    async def send(self, job_id: str, message_id: str) -> None:
        """Queue ``job_id`` under the message id ``message_id``."""
        await self._task.kicker().with_broker(self._broker).with_task_id(message_id).kiq(job_id)

    def message(self, job_id: str, message_id: str) -> bytes:
        """The bytes :meth:`send` would add to the stream, for writing them inline."""
        kicker = self._task.kicker().with_broker(self._broker).with_task_id(message_id)
        return bytes(self._broker.formatter.dumps(kicker._prepare_message(job_id)).message)

    async def close(self) -> None:
        await self._broker.shutdown()
