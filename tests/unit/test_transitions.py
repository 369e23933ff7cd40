"""apply_transition: the state machine, timestamps, speed and the fields a transition writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bgdownload.errors import IllegalTransition
from bgdownload.models import TERMINAL, TRANSITIONS, Job, JobState, Progress
from bgdownload.store.transitions import PROGRESS_FIELDS, apply_transition

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STARTED = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)

PAIRS = [(a, b) for a in JobState for b in JobState]


def job_in(state: JobState, **kw: object) -> Job:
    return Job(id="j1", owner="alice", url="http://example.org/f", state=state,  # type: ignore[arg-type]
               created_at=CREATED, **kw)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_only_the_moves_of_the_state_machine_are_legal(old: JobState, new: JobState) -> None:
    if new in TRANSITIONS[old]:
        decided = apply_transition(job_in(old), new, now=NOW)
        assert decided.expected is old and decided.job.state is new
        assert decided.fields["state"] == new.value
    else:
        with pytest.raises(IllegalTransition, match=f"a {old.value} job cannot become {new.value}"):
            apply_transition(job_in(old), new, now=NOW)


def test_allowed_from_narrows_the_legal_moves() -> None:
    with pytest.raises(IllegalTransition, match="a paused job cannot become waiting"):
        apply_transition(job_in(JobState.PAUSED), JobState.WAITING, now=NOW,
                         allowed_from={JobState.FAILED, JobState.CANCELLED})
    decided = apply_transition(job_in(JobState.PAUSED), JobState.WAITING, now=NOW,
                               allowed_from=iter([JobState.PAUSED]))
    assert decided.job.state is JobState.WAITING


def test_a_completed_job_is_final_and_failed_or_cancelled_only_retry() -> None:
    for state in TERMINAL:
        for new in set(JobState) - {JobState.WAITING}:
            with pytest.raises(IllegalTransition):
                apply_transition(job_in(state), new, now=NOW)
    with pytest.raises(IllegalTransition):
        apply_transition(job_in(JobState.COMPLETED), JobState.WAITING, now=NOW)


def test_becoming_active_stamps_started_at_once() -> None:
    first = apply_transition(job_in(JobState.WAITING), JobState.ACTIVE, now=NOW)
    assert first.job.started_at == NOW
    again = apply_transition(job_in(JobState.WAITING, started_at=STARTED), JobState.ACTIVE,
                             now=NOW)
    assert again.job.started_at == STARTED


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_a_terminal_state_stamps_finished_at_and_stops_the_speed(state: JobState) -> None:
    job = job_in(JobState.ACTIVE, started_at=STARTED, progress=Progress(10, 100, 5.0))
    decided = apply_transition(job, state, now=NOW)
    assert decided.job.finished_at == NOW and decided.job.started_at == STARTED
    assert decided.job.progress == Progress(10, 100, 0.0)
    assert decided.fields["finished_at"] == '"2026-01-02T04:00:00.000Z"'


def test_a_retry_clears_finished_at_and_keeps_started_at() -> None:
    job = job_in(JobState.FAILED, started_at=STARTED, finished_at=NOW,
                 error={"code": "http_error", "message": "404"}, attempts=3)
    decided = apply_transition(job, JobState.WAITING, now=NOW,
                               changes={"attempts": 0, "error": None, "sha256": None})
    assert decided.job.finished_at is None and decided.job.started_at == STARTED
    assert decided.job.attempts == 0 and decided.job.error is None
    assert decided.fields["finished_at"] == "null" and decided.fields["error"] == "null"
    assert decided.fields["attempts"] == "0"


def test_pausing_keeps_timestamps_and_stops_the_speed() -> None:
    job = job_in(JobState.ACTIVE, started_at=STARTED, progress=Progress(10, 100, 5.0))
    decided = apply_transition(job, JobState.PAUSED, now=NOW)
    assert decided.job.started_at == STARTED and decided.job.finished_at is None
    assert decided.job.progress.speed == 0.0


def test_changes_are_applied_and_attempts_and_error_set() -> None:
    job = job_in(JobState.WAITING, attempts=0, error={"code": "x", "message": "y"})
    decided = apply_transition(job, JobState.ACTIVE, now=NOW, changes={"attempts": 1, "error": None})
    assert decided.job.attempts == 1 and decided.job.error is None
    assert decided.fields["attempts"] == "1" and decided.fields["error"] == "null"


def test_an_active_job_keeps_progress_to_the_ticks_unless_the_change_sets_it() -> None:
    job = job_in(JobState.ACTIVE, progress=Progress(10, 100, 5.0))
    retry = apply_transition(job, JobState.WAITING, now=NOW)
    assert retry.fields.keys() >= PROGRESS_FIELDS and retry.fields["speed"] == "0.0"
    back = apply_transition(retry.job, JobState.ACTIVE, now=NOW)
    assert not PROGRESS_FIELDS & back.fields.keys()
    assert back.fields.keys() == job.to_storage().keys() - PROGRESS_FIELDS
    owned = apply_transition(retry.job, JobState.ACTIVE, now=NOW,
                             changes={"progress": Progress(50, 100, 7.0)})
    assert owned.fields["loaded"] == "50" and owned.fields["speed"] == "7.0"


def test_the_job_and_the_changes_are_left_untouched() -> None:
    job = job_in(JobState.ACTIVE, progress=Progress(10, 100, 5.0))
    given = Progress(100, 100, 9.0)
    decided = apply_transition(job, JobState.COMPLETED, now=NOW,
                               changes={"progress": given, "sha256": "a" * 64})
    assert job.state is JobState.ACTIVE and job.finished_at is None and job.sha256 is None
    assert job.progress == Progress(10, 100, 5.0) and given == Progress(100, 100, 9.0)
    assert decided.job.progress == Progress(100, 100, 0.0) and decided.job.sha256 == "a" * 64


def test_the_fields_are_the_new_job_as_stored() -> None:
    job = job_in(JobState.WAITING, metadata={"k": "v"})
    decided = apply_transition(job, JobState.CANCELLED, now=NOW,
                               changes={"error": {"code": "cancelled", "message": "asked"}})
    assert decided.fields == decided.job.to_storage()
