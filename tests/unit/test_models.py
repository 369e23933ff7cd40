"""Job model: the JSON shape of docs/api.md §1 and the state machine."""

from __future__ import annotations

import pytest

from bgdownload.errors import IllegalTransition
from bgdownload.models import (
    TERMINAL,
    TRANSITIONS,
    FileEntry,
    Job,
    JobState,
    Progress,
    check_transition,
)

CONTRACT_FIELDS = {
    "id", "state", "url", "filename", "path", "created_at", "started_at", "finished_at",
    "attempts", "error", "sha256", "progress", "files", "metadata",
}


def test_public_job_has_every_contract_field_and_no_secret() -> None:
    job = Job(id="i", owner="alice", url="http://x/y", headers={"Authorization": "t"},
              expected_sha256="e" * 64)
    public = job.to_public()
    assert public.keys() >= CONTRACT_FIELDS
    assert "owner" not in public and "headers" not in public and "expected_sha256" not in public
    assert set(public["progress"]) == {"loaded", "total", "percent", "speed", "eta"}
    assert public["created_at"].endswith("Z") and len(public["created_at"]) == 24


def test_storage_round_trip_keeps_everything() -> None:
    job = Job(id="i", owner="o", url=None, attempts=2, error={"code": "x", "message": "m"},
              files=[FileEntry(url="http://a/b", expected_sha256="f" * 64)],
              metadata={"k": [1, 2]}, headers={"Cookie": "c"}, priority=-3, max_speed=10)
    assert Job.from_storage(job.to_storage()) == job


@pytest.mark.parametrize(
    ("progress", "percent", "eta"),
    [
        (Progress(25, 100, 5.0), 25.0, 15.0),
        (Progress(25, None, 5.0), None, None),
        (Progress(100, 100, 0.0), 100.0, 0.0),
        (Progress(10, 100, 0.0), 10.0, None),
    ],
)
def test_percent_and_eta(progress: Progress, percent: float | None, eta: float | None) -> None:
    assert progress.percent == percent and progress.eta == eta


def test_terminal_states_only_leave_by_retry() -> None:
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    for state in TERMINAL - {JobState.COMPLETED}:
        assert TRANSITIONS[state] == {JobState.WAITING}
    check_transition(JobState.ACTIVE, JobState.PAUSED)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.COMPLETED, JobState.ACTIVE)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.PAUSED, JobState.ACTIVE)
