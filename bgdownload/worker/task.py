"""The broker built from the environment and the download task: ``bgdownload.worker:broker``.

A queue message carries only a job id (as a hint); the job to run is taken
from the store's priority queue when the message is first received, and
remembered under the message's task id so a redelivered message resumes the
same job. The message is acknowledged only when the task returns, which
:class:`~bgdownload.worker.runner.JobRunner` does only once the job rests
(completed, failed, cancelled, paused) — or when it already rests.

Importing this module reads the settings and builds the broker: only the worker
process (through ``bgdownload.worker:broker``) does; the API sends with
:class:`~bgdownload.worker.sender.QueueSender`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from bgdownload.config import Settings
from bgdownload.worker.delivery import TASK_NAME, make_broker
from bgdownload.worker.messages import run_message
from bgdownload.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

settings = Settings.from_env()
broker = make_broker(settings)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _start_worker(state: TaskiqState) -> None:
    async def requeue(job_id: str) -> None:
        await download.kiq(job_id)

    runtime = await WorkerRuntime.start(
        settings.replace(redis_url=settings.resolve_redis_url()), requeue,
        worker_id=broker.consumer_name,
    )
    state.runtime = runtime
    _hand_back_on_sigterm(runtime)


def _hand_back_on_sigterm(runtime: WorkerRuntime) -> None:
    """Chain onto taskiq's SIGTERM/SIGINT handler: hand running jobs back at once.

    taskiq stops fetching and then waits for running tasks (forever, by default);
    a download can take hours, so the worker requeues its jobs (keeping the
    ``.part`` files) and their tasks return, instead of leaving them to the
    redelivery timeout.
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(num: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(runtime.begin_shutdown)
            if callable(previous):
                previous(num, frame)

        signal.signal(signum, handler)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _stop_worker(state: TaskiqState) -> None:
    runtime = getattr(state, "runtime", None)
    if runtime is not None:
        await runtime.close()


@broker.task(task_name=TASK_NAME)
async def download(job_id: str, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    """Run the best waiting job (``job_id`` is only a hint for logs) until it rests."""
    await run_message(context.state.runtime, context.message.task_id, hint=job_id)
