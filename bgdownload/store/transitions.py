"""The state-change decision, without I/O: what a transition writes, or why it may not happen.

The store applies the result with one Lua script that first checks that the job is
still in :attr:`Transition.expected` state, so deciding here from a read never races
with another writer: a changed state makes the script refuse, and the store decides
again from a fresh read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bgdownload.errors import IllegalTransition
from bgdownload.models import Job, JobState, check_transition

#: fields a transition does not write unless it changes progress on purpose:
#: progress belongs to the worker's progress ticks
PROGRESS_FIELDS = frozenset({"loaded", "total", "speed"})


@dataclass(frozen=True)
class Transition:
    """A decided transition: the job as it will be and the hash fields to write."""

    #: the state the job must still be in when the change is applied
    expected: JobState
    #: the job after the transition
    job: Job
    #: the hash fields to set (progress fields only when the transition owns progress)
    fields: dict[str, str]


def apply_transition(
    job: Job,
    new_state: JobState,
    *,
    now: datetime,
    allowed_from: Iterable[JobState] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Transition:
    """Move ``job`` (left untouched) to ``new_state`` with ``changes`` (Job attributes).

    Raises :class:`IllegalTransition` when ``allowed_from`` does not hold the job's
    state or the state machine (``models.TRANSITIONS``) forbids the move. Becoming
    active stamps ``started_at`` once; a terminal state stamps ``finished_at``;
    going back to waiting clears it; any state but active reports no speed.
    """
    changes = changes or {}
    if allowed_from is not None and job.state not in set(allowed_from):
        raise IllegalTransition(f"a {job.state.value} job cannot become {new_state.value}")
    check_transition(job.state, new_state)
    new = dataclasses.replace(job, **{**changes, "state": new_state})
    if new_state is JobState.ACTIVE and new.started_at is None:
        new.started_at = now
    if new_state.terminal:
        new.finished_at = now
    elif new_state is JobState.WAITING:
        new.finished_at = None
    # a copy, so the caller's Progress (in ``job`` or in ``changes``) is never changed
    new.progress = dataclasses.replace(
        new.progress, speed=new.progress.speed if new_state is JobState.ACTIVE else 0.0
    )
    owns_progress = "progress" in changes or new_state is not JobState.ACTIVE
    fields = {
        name: value
        for name, value in new.to_storage().items()
        if owns_progress or name not in PROGRESS_FIELDS
    }
    return Transition(expected=job.state, job=new, fields=fields)
