"""Progress of the jobs a worker runs: the engine's figures, a speed window, what to publish.

A :class:`Tracker` per file receives the engine's counters (it is the engine's
progress sink); the runtime's ticker asks :func:`progress_due` which jobs have
something new to publish and writes them all in one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bgdownload.models import FileEntry, Job, JobState, Progress
from bgdownload.store import Store, StoreError

log = logging.getLogger(__name__)

#: progress is published at least this often while a job is active, even stalled
STALL_INTERVAL = 5.0
#: the speed is measured over this recent window
SPEED_WINDOW = 3.0


@dataclass(eq=False)
class Tracker:
    """Progress of one file as the engine reports it; read by the ticker (the ProgressSink)."""

    store: Store
    job: Job
    entry: FileEntry | None = None
    #: the entry's place in ``job.files`` (batch jobs)
    index: int = 0
    loaded: int = 0
    total: int | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def update(self, loaded: int, total: int | None) -> None:
        self.loaded = loaded
        self.total = total

    async def name_chosen(self, filename: str, path: str) -> bool:
        """Reserve the name for this job or batch file (False: another job holds it)."""
        index = None if self.entry is None else self.index
        if not await self.store.name_file(self.job.id, index, filename, path):
            return False
        named = self.job if self.entry is None else self.entry
        named.filename, named.path = filename, path
        return True

    async def restarted(self, note: str) -> None:
        """The engine dropped the partial data: the job's stream says why (docs/api.md §11)."""
        self.loaded = 0
        extra: dict[str, Any] = {"progress": Progress(0, self.total, 0.0).to_dict()}
        if self.entry is not None:
            extra = {"file": self.index, "url": self.entry.url}
        try:
            await self.store.note_state(self.job, note, **extra)
        except (StoreError, OSError) as exc:
            # Only the explanation is lost; the download itself goes on.
            log.warning("could not note %r on job %s: %s", note, self.job.id, exc)

    def speed(self, now: float) -> float:
        self.samples.append((now, self.loaded))
        while len(self.samples) > 2 and now - self.samples[1][0] >= SPEED_WINDOW:
            self.samples.popleft()
        first_t, first_loaded = self.samples[0]
        if now - first_t <= 0:
            return 0.0
        return max(0.0, (self.loaded - first_loaded) / (now - first_t))


@dataclass(eq=False)
class Running:
    """A job this worker is running now: its file trackers, and its running task.

    ``reported``/``last_publish`` remember what the ticker last published, so a job
    whose figures did not move is written only every :data:`STALL_INTERVAL`.
    """

    job: Job
    token: str
    task: asyncio.Task[Any] | None = None
    trackers: list[Tracker] = field(default_factory=list)
    #: the control request (pause, cancel, lost, shutdown) that stops it
    interrupt: str | None = None
    reported: int = 0
    last_publish: float = 0.0


def progress_due(
    running: Iterable[Running], now: float, *, force: bool = False
) -> list[tuple[Job, int]]:
    """The progress writes due now (all of them with ``force``), marked as published.

    Each write is the job (its ``progress``/``files`` filled in) and the bytes it
    loaded since the last one.
    """
    batch: list[tuple[Job, int]] = []
    for item in running:
        if item.job.state is not JobState.ACTIVE or not item.trackers:
            continue
        loaded = fill_progress(item, now)
        if not force and loaded == item.reported and now - item.last_publish < STALL_INTERVAL:
            continue
        batch.append((item.job, loaded - item.reported))
        item.reported = loaded
        item.last_publish = now
    return batch


def fill_progress(running: Running, now: float) -> int:
    """Copy the trackers' figures into the job (and its files); return total loaded."""
    job = running.job
    if job.files:
        for tracker in running.trackers:
            if tracker.entry is not None and tracker.entry.state is JobState.ACTIVE:
                tracker.entry.progress = Progress(
                    tracker.loaded, tracker.total, tracker.speed(now)
                )
        loaded = sum(f.progress.loaded for f in job.files)
        totals = [f.progress.total for f in job.files]
        total = None if any(t is None for t in totals) else sum(t for t in totals if t)
        speed = sum(f.progress.speed for f in job.files if f.state is JobState.ACTIVE)
        job.progress = Progress(loaded, total, speed)
        return loaded
    tracker = running.trackers[0]
    job.progress = Progress(tracker.loaded, tracker.total, tracker.speed(now))
    return tracker.loaded


def fill_totals(job: Job) -> None:
    """A finished batch's progress: the sum of its files', at rest."""
    loaded = sum(f.progress.loaded for f in job.files)
    totals = [f.progress.total for f in job.files]
    job.progress = Progress(
        loaded, None if any(t is None for t in totals) else sum(t or 0 for t in totals), 0.0
    )
