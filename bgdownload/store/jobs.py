"""Jobs: create, read, list, change fields, transition between states, delete."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from bgdownload import keys
from bgdownload.errors import IllegalTransition, JobGone, RateLimited
from bgdownload.models import Job, JobState, utcnow
from bgdownload.store.base import outlast
from bgdownload.store.codec import FILE_NAME, Snapshot, dumps, flat_job, load_job
from bgdownload.store.events import EventStore, transition_keys
from bgdownload.store.transitions import Transition, apply_transition

#: how long an ``Idempotency-Key`` remembers its job (seconds)
_IDEMPOTENCY_TTL = 86400


class JobStore(EventStore):
    """Job hashes, the owner index, and the state changes with their ``state`` events."""

    async def create(
        self,
        job: Job,
        *,
        idempotency_key: str | None = None,
        rate: tuple[int, float] | None = None,
        task: tuple[str, bytes] | None = None,
    ) -> tuple[Job, bool]:
        """Store a new waiting job and queue it; with a known idempotency key return the first.

        ``rate`` (count, period s) takes one creation from the owner's budget first
        and raises :class:`RateLimited` when it is spent; an idempotent replay takes
        nothing. ``task`` (stream, message) is XADDed to the task stream in the same
        script, so the job and its queue message are stored together or not at all.
        """
        if job.state is not JobState.WAITING:
            raise IllegalTransition("a new job starts waiting")
        idem = keys.idempotency(job.owner, idempotency_key) if idempotency_key else ""
        status, value = await self._scripts.create(
            keys=[
                keys.job(job.id),
                keys.job_events(job.id),
                keys.owner_events(job.owner),
                keys.owner_jobs(job.owner),
                keys.owner_waiting(job.owner),
                keys.STATS_STATES,
                idem,
                keys.rate(job.owner) if rate is not None else "",
                task[0] if task is not None else "",
                keys.OWNER_ROTATION,
                keys.TURN,
            ],
            args=self._create_args(job, rate, task),
        )
        status = int(status)
        if status == 1:
            return job, True
        if status == 2:
            count, period = rate or (0, 0.0)
            raise RateLimited(
                f"too many downloads created; limit is {count} per {period:g} s",
                retry_after=float(value) / 1000,
            )
        existing = await self.get(str(value))
        if existing is None:  # expired between the script and this read: treat as new
            return await self.create(job, rate=rate, task=task)
        return existing, False

    def _create_args(
        self, job: Job, rate: tuple[int, float] | None, task: tuple[str, bytes] | None
    ) -> list[Any]:
        """ARGV of ``create.lua``."""
        created_ms = int(job.created_at.timestamp() * 1000)
        interval_ms = period_ms = 0.0
        if rate is not None:
            count, period = rate
            interval_ms, period_ms = period * 1000 / count, period * 1000
        return [
            job.id,
            created_ms,
            keys.queue_score(job.priority, created_ms),
            dumps(job.to_public()),
            self.job_stream_maxlen,
            self.owner_stream_maxlen,
            _IDEMPOTENCY_TTL,
            int(time.time() * 1000),
            interval_ms,
            period_ms,
            task[1] if task is not None else "",
            flat_job(job),
            keys.job(""),
            job.owner,
        ]

    async def get(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(keys.job(job_id))
        return load_job(raw) if raw else None

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.job(job_id))
            rows = await pipe.execute()
        return [load_job(raw) if raw else None for raw in rows]

    async def snapshot(self, job_id: str) -> Snapshot | None:
        """The job and its latest event id, read in one transaction so they agree."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.job(job_id))
            pipe.xrevrange(keys.job_events(job_id), count=1)
            raw, last = await pipe.execute()
        if not raw:
            return None
        return Snapshot(load_job(raw), last[0][0] if last else "0-0")

    async def idempotent_job_id(self, owner: str, key: str) -> str | None:
        """The job an owner created with this ``Idempotency-Key`` in the last 24 h, if any."""
        value = await self.redis.get(keys.idempotency(owner, key))
        return str(value) if value else None

    async def update_fields(self, job_id: str, **changes: Any) -> None:
        """Set plain fields that carry no state change (e.g. the chosen file name)."""
        probe = Job(id=job_id, owner="", url=None)
        for name, value in changes.items():
            setattr(probe, name, value)
        flat = probe.to_storage()
        await self.redis.hset(keys.job(job_id), mapping={name: flat[name] for name in changes})

    async def name_file(
        self, job_id: str, index: int | None, filename: str, path: str
    ) -> bool:
        """Reserve ``path`` for the job (``index`` None) or for file ``index`` of a batch job.

        One script takes the name (``bgd:name:<path>``) and records ``filename`` and
        ``path`` with the job, so a job holds exactly the name its hash shows and two
        jobs never hold one name (docs/api.md §17). False when another job holds it
        (the caller picks the next name); a holder whose job is gone holds nothing.
        Raises :class:`JobGone` when the job itself is gone.

        A batch file's name lives in its own hash field: reading the job applies it, so
        a batch of N files costs N small writes instead of N rewrites of N entries.
        """
        holder = job_id if index is None else f"{job_id}:{index}"
        if index is None:
            fields = ["path", dumps(path), "filename", dumps(filename)]
        else:
            fields = [FILE_NAME + str(index), dumps([filename, path])]
        status = int(await self._scripts.reserve_name(
            keys=[keys.file_name(path), keys.job(job_id)],
            args=[holder, keys.job(""), keys.file_name(""), *fields],
        ))
        if status < 0:
            raise JobGone(job_id)
        return status == 1

    async def owned_paths(self, job: Job) -> list[str]:
        """The paths (relative to the root) of ``job``'s files that the job reserved itself.

        A job deletes nothing else: a name it only asked for, or one recorded before
        names were reserved, is not in this list.
        """
        wanted = [(job.id, job.path)] if not job.files else [
            (f"{job.id}:{i}", f.path) for i, f in enumerate(job.files)
        ]
        named = [(holder, path) for holder, path in wanted if path]
        if not named:
            return []
        holders = await self.redis.mget([keys.file_name(path) for _, path in named])
        return [path for (holder, path), held in zip(named, holders, strict=True)
                if held == holder]

    async def transition(
        self,
        job_id: str,
        new_state: JobState,
        *,
        allowed_from: Iterable[JobState] | None = None,
        queue: bool = True,
        current: Job | None = None,
        progress_first: Sequence[tuple[Job, int]] = (),
        wait_for_redis: float = 0.0,
        **changes: Any,
    ) -> tuple[Job, str]:
        """Move a job to ``new_state`` atomically with its ``state`` event.

        ``changes`` are Job attributes to set in the same step. A job that becomes
        ``waiting`` joins the queue unless ``queue`` is False (a worker that keeps
        it through a retry's backoff). Raises
        :class:`IllegalTransition` when the state machine (or ``allowed_from``)
        forbids it, and :class:`JobGone` when the job does not exist.

        ``current`` is the job as its only writer (the worker holding its lease) last
        stored it; it saves the read. The script still checks the state, so a stale
        ``current`` costs one retry with a fresh read, never a lost change.

        ``progress_first`` is written as :meth:`publish_progress` would, just before
        the transition and in the same round trip.

        The change is one operation with its own id, so repeating it after a lost
        reply (redis-py's retry, or ``wait_for_redis``) applies it once. With
        ``wait_for_redis`` > 0 a Redis outage is waited out for up to that many
        seconds (a worker's changes must land) instead of raising at once.
        """
        allowed = set(allowed_from) if allowed_from is not None else None
        known = current
        op = uuid.uuid4().hex
        for _ in range(20):
            job, known = known or await self._read(job_id, wait_for_redis), None
            if job is None:
                raise JobGone(job_id)
            decided = apply_transition(
                job, new_state, now=utcnow(), allowed_from=allowed, changes=changes
            )
            ok, value = await outlast(
                functools.partial(
                    self._write_transition, job_id, decided, queue, progress_first, op
                ),
                limit=wait_for_redis, what=f"job {job_id} becoming {new_state.value}",
            )
            progress_first = ()
            if ok:
                return decided.job, value
            if value == "":
                raise JobGone(job_id)
        raise IllegalTransition(f"job {job_id} kept changing state; giving up")

    async def _read(self, job_id: str, wait_for_redis: float) -> Job | None:
        return await outlast(lambda: self.get(job_id), limit=wait_for_redis,
                             what=f"reading job {job_id}")

    async def _write_transition(
        self,
        job_id: str,
        decided: Transition,
        queue: bool,
        progress_first: Sequence[tuple[Job, int]],
        op: str,
    ) -> tuple[bool, str]:
        """Run ``transition.lua`` as operation ``op``: (True, event id), or (False, the
        state found instead)."""
        job = decided.job
        created_ms = int(job.created_at.timestamp() * 1000)
        queued = job.state is JobState.WAITING and queue
        args: list[Any] = [
            decided.expected.value,
            job.state.value,
            dumps(job.to_public()),
            self.job_stream_maxlen,
            self.owner_stream_maxlen,
            self.retention if job.state.terminal else 0,
            keys.queue_score(job.priority, created_ms) if queued else "",
            job.id,
            op,
            job.owner,
        ]
        for name, value in decided.fields.items():
            args += [name, value]
        script_keys = transition_keys(job_id, job.owner)
        if progress_first:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._queue_progress(pipe, progress_first, op)
                await self._scripts.transition(keys=script_keys, args=args, client=pipe)
                ok, value = (await pipe.execute())[-1]
        else:
            ok, value = await self._scripts.transition(keys=script_keys, args=args)
        return bool(int(ok)), str(value)

    async def delete(self, job: Job) -> None:
        """Remove the job and everything about it, giving up the names it holds (their files
        are the caller's). Safe to repeat: counts once."""
        # Held names stay ours until the job hash goes, in this same script.
        names = [keys.file_name(path) for path in await self.owned_paths(job)]
        await self._scripts.delete(
            keys=[keys.job(job.id), keys.job_events(job.id), keys.control(job.id),
                  keys.owner_jobs(job.owner), keys.owner_waiting(job.owner), keys.STATS_STATES,
                  keys.LEGACY_QUEUE, *names],
            args=[job.id, *(state.value for state in JobState if state.terminal)],
        )

    async def list_jobs(
        self,
        owner: str,
        *,
        states: set[JobState] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs newest first; ``cursor`` is ``"<order>:<id>"`` of the last one seen."""
        index = keys.owner_jobs(owner)
        max_score = "+inf"
        after: tuple[float, str] | None = None
        if cursor:
            score_text, _, last_id = cursor.partition(":")
            after = (float(score_text), last_id)
            max_score = score_text
        found: list[tuple[Job, float]] = []
        offset = 0
        batch = max(limit + 1, 50)
        while len(found) <= limit:
            rows = await self.redis.zrevrangebyscore(
                index, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(rows)
            candidates = [
                (member, score)
                for member, score in rows
                if after is None or score < after[0] or (score == after[0] and member < after[1])
            ]
            jobs = await self.get_many([member for member, _ in candidates])
            stale = [m for (m, _), job in zip(candidates, jobs, strict=True) if job is None]
            if stale:
                await self.redis.zrem(index, *stale)
            found += [
                (job, score)
                for (_, score), job in zip(candidates, jobs, strict=True)
                if job is not None and (not states or job.state in states)
            ]
            if len(rows) < batch:
                break
        page = found[:limit]
        if len(found) > limit and page:
            last_job, last_score = page[-1]
            return [job for job, _ in page], f"{int(last_score)}:{last_job.id}"
        return [job for job, _ in page], None
