"""A queue message inside a worker: which job it runs, and what happens when none may run.

:func:`run_message` turns a queue message into a leased job (retrying while Redis
is away, so the message is never acknowledged with its job stranded) and hands it
to :class:`~bgdownload.worker.runner.JobRunner`; a message that finds only jobs of
owners at their cap here stays parked, or is passed on to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from bgdownload.store import StoreError
from bgdownload.store.queue import CAPPED
from bgdownload.worker.runner import JobRunner
from bgdownload.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: a message that found only jobs of owners at their cap here claims again this often
#: (and whenever one of this worker's jobs ends)
PARK_POLL = 0.5
#: ... and after this long goes to another worker, if there is one
PARK_HANDOFF = 5.0
#: a worker whose heartbeat is older than this is not counted as one to pass a message to
#: (the age /healthz counts workers by)
LIVE_WORKER_AGE = 15.0


async def run_message(runtime: WorkerRuntime, task_id: str, *, hint: str = "") -> None:
    """Handle one queue message: claim its job and run it until it rests."""
    if runtime.closing:
        await runtime.requeue(hint)  # pass the message on rather than start work now
        return
    outage = 0
    # One token for every try: a claim repeated after Redis lost its reply finds the
    # lease holding this token and has it, instead of waiting for it to expire.
    token = uuid.uuid4().hex
    parked_at = time.monotonic()
    while True:
        try:
            # pick the job, take its lease, read it and its control: one round trip
            claimed = await runtime.claim(task_id, token)
            if claimed is None:
                log.debug("message %s (for %s) found nothing waiting", task_id, hint)
                return
            if claimed == CAPPED:
                if await _stay_parked(runtime, hint, parked_at):
                    continue
                return
            job_id, taken, job, action = claimed
            try:
                await JobRunner(runtime, job_id).run(token, (taken, job, action), task_id)
            finally:
                runtime.free_slot(task_id)
            return
        except (StoreError, OSError) as exc:
            # Returning would acknowledge the message and strand the job: keep the
            # message and try again (resuming from the .part) once Redis answers.
            if runtime.closing:
                raise
            outage += 1
            log.warning("Redis unavailable (%s); retrying message %s", exc, task_id)
            await asyncio.sleep(min(30.0, 0.5 * 2**outage))


async def _stay_parked(runtime: WorkerRuntime, hint: str, parked_at: float) -> bool:
    """A message that found only jobs of owners at their cap in this worker.

    Returning would acknowledge it and could leave a waiting job with no message,
    so it stays here, unacknowledged, and claims again once one of this worker's
    jobs ends or after :data:`PARK_POLL` (another owner's job may have come).
    After :data:`PARK_HANDOFF`, when other workers are alive, it is passed on (a
    fresh message, sent before this one is acknowledged) to a worker where the
    owner may be below its cap. False: passed on, return.
    """
    handoff = time.monotonic() - parked_at >= PARK_HANDOFF
    if runtime.closing or (handoff and await runtime.store.live_workers(LIVE_WORKER_AGE) > 1):
        await runtime.requeue(hint)
        log.info("passed a message on: only owners at their cap here have waiting jobs")
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PARK_POLL):
            await runtime.slot_freed().wait()
    return True
