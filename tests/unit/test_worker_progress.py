"""Worker progress: the speed window, what the ticker publishes, batch totals, retry backoff."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bgdownload.models import FileEntry, Job, JobState, Progress
from bgdownload.store import Store
from bgdownload.worker.progress import (
    SPEED_WINDOW,
    STALL_INTERVAL,
    Running,
    Tracker,
    fill_progress,
    fill_totals,
    progress_due,
)
from bgdownload.worker.retrying import BACKOFF_CAP, backoff


class FakeStore:
    """Records the name reservations a tracker makes; ``held`` names belong to other jobs."""

    def __init__(self, held: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.held = held

    async def name_file(self, job_id: str, index: int | None, filename: str, path: str) -> bool:
        self.calls.append(("name_file", job_id, index, filename, path))
        return path not in self.held


def store() -> Store:
    return cast(Store, FakeStore())


def active_job(**fields: Any) -> Job:
    return Job(id="j1", owner="local", url="https://example.org/f", state=JobState.ACTIVE,
               **fields)


def running_single(loaded: int, total: int | None = 1000) -> tuple[Running, Tracker]:
    job = active_job()
    tracker = Tracker(store(), job)
    tracker.update(loaded, total)
    return Running(job, "token", trackers=[tracker]), tracker


def test_speed_is_measured_over_the_recent_window() -> None:
    tracker = Tracker(store(), active_job())
    assert tracker.speed(100.0) == 0.0  # one sample: no rate yet
    tracker.update(1000, None)
    assert tracker.speed(101.0) == 1000.0
    # a burst long ago leaves the window: only the last SPEED_WINDOW seconds count
    tracker.update(1000, None)
    assert tracker.speed(101.0 + SPEED_WINDOW + 1) == 0.0


def test_speed_never_goes_negative() -> None:
    tracker = Tracker(store(), active_job())
    tracker.update(500, None)
    tracker.speed(1.0)
    tracker.update(100, None)  # a restarted download reports fewer bytes
    assert tracker.speed(2.0) == 0.0


async def test_the_chosen_name_goes_to_the_job_or_to_its_batch_entry() -> None:
    fake = FakeStore()
    job = active_job(files=[FileEntry("https://example.org/a"), FileEntry("https://example.org/b")])
    assert await Tracker(cast(Store, fake), job, job.files[1], 1).name_chosen("b.bin", "b.bin")
    assert await Tracker(cast(Store, fake), job).name_chosen("j.bin", "sub/j.bin")
    assert job.files[1].filename == "b.bin" and (job.filename, job.path) == ("j.bin", "sub/j.bin")
    assert fake.calls == [
        ("name_file", "j1", 1, "b.bin", "b.bin"),
        ("name_file", "j1", None, "j.bin", "sub/j.bin"),
    ]


async def test_a_name_held_by_another_job_is_refused_and_not_recorded() -> None:
    job = active_job(filename="wish.bin")
    tracker = Tracker(cast(Store, FakeStore(held=("alice/wish.bin",))), job)
    assert await tracker.name_chosen("wish.bin", "alice/wish.bin") is False
    assert (job.filename, job.path) == ("wish.bin", None)


def test_progress_is_published_when_it_moves_or_has_stalled_long_enough() -> None:
    running, tracker = running_single(100)
    [(job, delta)] = progress_due([running], 10.0)
    assert job is running.job and delta == 100 and job.progress.loaded == 100
    assert progress_due([running], 10.5) == []  # nothing new, not stalled yet
    tracker.update(250, 1000)
    assert [d for _, d in progress_due([running], 11.0)] == [150]
    [(_, delta)] = progress_due([running], 11.0 + STALL_INTERVAL)  # stalled: a heartbeat
    assert delta == 0


def test_forced_progress_is_always_written() -> None:
    running, _ = running_single(100)
    progress_due([running], 10.0)
    assert [d for _, d in progress_due([running], 10.1, force=True)] == [0]


def test_only_active_jobs_with_trackers_publish() -> None:
    waiting, _ = running_single(100)
    waiting.job.state = JobState.WAITING
    untracked = Running(active_job(), "token")
    assert progress_due([waiting, untracked], 10.0) == []


def test_a_batch_sums_its_files_and_the_speed_of_the_active_ones() -> None:
    job = active_job(files=[
        FileEntry("https://example.org/a", state=JobState.COMPLETED,
                  progress=Progress(400, 400, 0.0)),
        FileEntry("https://example.org/b", state=JobState.ACTIVE),
        FileEntry("https://example.org/c", state=JobState.WAITING),
    ])
    tracker = Tracker(store(), job, job.files[1], 1)
    running = Running(job, "token", trackers=[tracker])
    tracker.update(0, 600)
    tracker.speed(1.0)
    tracker.update(300, 600)
    assert fill_progress(running, 2.0) == 700
    assert job.files[1].progress == Progress(300, 600, 300.0)
    # file c's size is unknown, so the batch's is too
    assert job.progress == Progress(700, None, 300.0)
    job.files[2].progress = Progress(0, 100, 0.0)
    fill_progress(running, 3.0)
    assert job.progress.total == 1100


def test_a_finished_batch_rests_with_its_totals() -> None:
    job = active_job(files=[
        FileEntry("https://example.org/a", progress=Progress(400, 400, 9.0)),
        FileEntry("https://example.org/b", progress=Progress(100, None, 9.0)),
    ])
    fill_totals(job)
    assert job.progress == Progress(500, None, 0.0)
    job.files[1].progress = Progress(100, 100, 0.0)
    fill_totals(job)
    assert job.progress == Progress(500, 500, 0.0)


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_backoff_has_jitter_under_a_cap(attempt: int) -> None:
    ceiling = min(BACKOFF_CAP, 2.0 ** (attempt - 1))
    for _ in range(50):
        assert ceiling / 2 <= backoff(attempt, None) <= ceiling


def test_a_longer_retry_after_wins_up_to_five_minutes() -> None:
    assert backoff(1, 42.0) == 42.0
    assert backoff(1, 10_000.0) == 300.0
    assert backoff(1, 0.0) <= 1.0
