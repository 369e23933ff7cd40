"""The API side of the queue: sends download messages that ``bgdownload.worker:broker`` consumes.

Built from taskiq's public types only: a message is a :class:`taskiq.TaskiqMessage`
for the task :data:`~bgdownload.worker.delivery.TASK_NAME` with the job id as its
one argument, encoded by the broker's formatter — what a kicker sends — so the API
needs neither the task function nor the worker's broker built from the environment.
"""

from __future__ import annotations

from taskiq import TaskiqMessage, TaskiqMiddleware
from taskiq.kicker import AsyncKicker

from bgdownload.config import Settings
from bgdownload.worker.delivery import TASK_NAME, DownloadBroker, make_broker


class QueueSender:
    """Puts job ids on the work queue for the API process (it never consumes)."""

    def __init__(self, broker: DownloadBroker) -> None:
        self._broker = broker
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
        broker = make_broker(settings)
        await broker.startup()
        return cls(broker)

    async def send(self, job_id: str, message_id: str) -> None:
        """Queue ``job_id`` under the message id ``message_id`` (through any middleware)."""
        kicker: AsyncKicker[[str], None] = AsyncKicker(TASK_NAME, self._broker, labels={})
        await kicker.with_task_id(message_id).kiq(job_id)

    def message(self, job_id: str, message_id: str) -> bytes:
        """The bytes :meth:`send` would add to the stream, for writing them inline."""
        message = TaskiqMessage(
            task_id=message_id,
            task_name=TASK_NAME,
            labels={},
            labels_types={},
            args=[job_id],
            kwargs={},
        )
        return bytes(self._broker.formatter.dumps(message).message)

    async def close(self) -> None:
        await self._broker.shutdown()
