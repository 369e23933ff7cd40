"""The Redis job store: job hashes, event streams, owner index, queue, leases, control.

Every state change and every progress update is one Lua script that updates
the job hash and appends the event, so what ``GET /downloads/{id}`` says and
what the event stream says never disagree. An event is appended to the
owner's stream first and then to the job's stream *with the same id*: ids of
one owner's stream only grow, so they are valid ids for each of its jobs'
streams too, and a client can use one id space everywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from bgdownload import keys
from bgdownload.errors import IllegalTransition, JobGone, RateLimited
from bgdownload.models import Event, Job, JobState, check_transition, utcnow
from bgdownload.store.hub import EventHub

#: fields a transition does not write unless it changes progress on purpose:
#: progress belongs to the worker's progress ticks
_PROGRESS_FIELDS = frozenset({"loaded", "total", "speed"})

_TRANSITION = """
-- KEYS: job hash, job stream, owner stream, queue zset, stats hash
-- ARGV: expected state, new state, event data, job maxlen, owner maxlen,
--       ttl seconds (0 = keep), queue score ('' = not queued), job id, field, value, ...
local current = redis.call('HGET', KEYS[1], 'state')
if current ~= ARGV[1] then return {0, current or ''} end
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'state', 'data', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'event', 'state', 'data', ARGV[3])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
else
  redis.call('ZREM', KEYS[4], ARGV[8])
end
redis.call('HINCRBY', KEYS[5], ARGV[1], -1)
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
return {1, id}
"""

_CREATE = """
-- One round trip per create: idempotency, the owner's rate budget (GCRA, as _RATE),
-- the job and its first event, and the task queue message, so a job is never stored
-- without its message nor a message sent for a job that was not stored.
-- KEYS: job hash, job stream, owner stream, owner index, queue, stats hash,
--       idempotency key ('' = none), rate key ('' = no limit), task stream ('' = none)
-- ARGV: job id, created ms, queue score, event data, job maxlen, owner maxlen,
--       idempotency ttl, now ms, rate interval ms, rate period ms, task message,
--       JSON array [field, value, ...] of the job hash (one argument, not 48: cheaper
--       for the client to pack)
-- Returns {1, event id} when created, {0, existing job id} for a known idempotency
-- key, {2, ms to wait} when the rate budget is spent.
if KEYS[7] ~= '' then
  local existing = redis.call('GET', KEYS[7])
  if existing and redis.call('EXISTS', 'bgd:job:' .. existing) == 1 then
    return {0, existing}
  end
end
if KEYS[8] ~= '' then
  local now = tonumber(ARGV[8])
  local tat = tonumber(redis.call('GET', KEYS[8]) or now)
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[9])
  if new_tat - now > tonumber(ARGV[10]) then
    return {2, tostring(new_tat - now - tonumber(ARGV[10]))}
  end
  redis.call('SET', KEYS[8], tostring(new_tat), 'PX', math.ceil(new_tat - now))
end
if KEYS[7] ~= '' then redis.call('SET', KEYS[7], ARGV[1], 'EX', ARGV[7]) end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[12])))
-- owner index score: creation time in ms * 1000, bumped past the newest entry so jobs
-- created in the same millisecond still list in creation order
local order = tonumber(ARGV[2]) * 1000
local newest = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= order then order = tonumber(newest[2]) + 1 end
redis.call('ZADD', KEYS[4], string.format('%.0f', order), ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[6], 'waiting', 1)
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'event', 'state', 'data', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], id, 'event', 'state', 'data', ARGV[4])
if KEYS[9] ~= '' then redis.call('XADD', KEYS[9], '*', 'data', ARGV[11]) end
return {1, id}
"""

_PROGRESS = """
-- KEYS: job hash, job stream, owner stream, bytes counter
-- ARGV: loaded, total, speed, files json ('' = single), event data, job maxlen, owner maxlen,
--       bytes delta
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return false end
redis.call('HSET', KEYS[1], 'loaded', ARGV[1], 'total', ARGV[2], 'speed', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'files', ARGV[4]) end
if tonumber(ARGV[8]) > 0 then redis.call('INCRBY', KEYS[4], ARGV[8]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'event', 'progress', 'data', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], id, 'event', 'progress', 'data', ARGV[5])
return id
"""

_CLAIM = """
-- KEYS: run key, queue zset.  ARGV: run ttl seconds
local picked = redis.call('GET', KEYS[1])
if picked then return picked end
local best = redis.call('ZPOPMIN', KEYS[2])
if #best == 0 then return false end
redis.call('SET', KEYS[1], best[1], 'EX', ARGV[1])
return best[1]
"""

_CLAIM_AND_LEASE = """
-- _CLAIM, then take the picked job's lease and read the job and its pending control.
-- The job's keys follow from its id, unknown before the pop: built from the prefixes.
-- KEYS: run key, queue zset.  ARGV: run ttl s, lease token, lease ttl ms,
--       job key prefix, lease key prefix, control key prefix
local picked = redis.call('GET', KEYS[1])
if not picked then
  local best = redis.call('ZPOPMIN', KEYS[2])
  if #best == 0 then return false end
  picked = best[1]
  redis.call('SET', KEYS[1], picked, 'EX', ARGV[1])
end
local taken = redis.call('SET', ARGV[5] .. picked, ARGV[2], 'NX', 'PX', ARGV[3]) and 1 or 0
local control = redis.call('GET', ARGV[6] .. picked) or ''
return {picked, taken, control, redis.call('HGETALL', ARGV[4] .. picked)}
"""

_LEASE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RATE = """
-- GCRA: KEYS[1] holds the theoretical arrival time (ms).  ARGV: now ms, interval ms, period ms
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[2])
if new_tat - now > tonumber(ARGV[3]) then
  return tostring(new_tat - now - tonumber(ARGV[3]))
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
return '0'
"""


def open_redis(url: str, *, max_connections: int = 50) -> Redis:
    """A decoding Redis client whose commands wait for a free pooled connection.

    redis-py's default pool refuses a connection past its limit (MaxConnectionsError);
    hundreds of downloads or streams at once must queue for one instead.
    """
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None,
        decode_responses=True, socket_timeout=None,
    )
    return Redis.from_pool(pool)  # closes the pool with the client


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


#: hash field prefix of a batch file's chosen name, kept apart from the ``files`` JSON so
#: that recording one name costs O(1) instead of rewriting the whole list (see name_file)
_FILE_NAME = "file_name:"


def _load_job(raw: dict[str, str]) -> Job:
    """A job from its hash, with the batch file names recorded by :meth:`Store.name_file`."""
    job = Job.from_storage(raw)
    if job.files:
        for key, value in raw.items():
            if key.startswith(_FILE_NAME):
                index = int(key[len(_FILE_NAME):])
                if index < len(job.files):
                    job.files[index].filename, job.files[index].path = json.loads(value)
    return job


def _copy_job(job: Job) -> Job:
    """A copy a transition may change without touching the caller's job."""
    return dataclasses.replace(job, progress=dataclasses.replace(job.progress))


def _event(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(id=entry_id, event=fields["event"], data=json.loads(fields["data"]))


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id such as ``1732479303301-0``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> tuple[int, int]:
    ms, seq = stream_id_key(entry_id)
    return ms, seq + 1


def is_stream_id(text: str) -> bool:
    ms, sep, seq = text.partition("-")
    return ms.isdigit() and (not sep or seq.isdigit())


@dataclass(frozen=True)
class Snapshot:
    """A job and the id of the last event already reflected in it."""

    job: Job
    last_event_id: str


class Store:
    """Redis layout and atomic operations (DESIGN.md). ``redis`` must decode responses."""

    def __init__(
        self,
        redis: Redis,
        *,
        retention: float = 7 * 86400,
        job_stream_maxlen: int = 1000,
        owner_stream_maxlen: int = 10000,
    ) -> None:
        # redis-py types each reply as a union of every protocol shape; this client
        # decodes responses, so replies are handled as the strings they are.
        self.redis: Any = redis
        self.retention = max(1, int(retention))
        self.job_stream_maxlen = job_stream_maxlen
        self.owner_stream_maxlen = owner_stream_maxlen
        self._transition = redis.register_script(_TRANSITION)
        self._create = redis.register_script(_CREATE)
        self._progress = redis.register_script(_PROGRESS)
        self._claim = redis.register_script(_CLAIM)
        self._claim_and_lease = redis.register_script(_CLAIM_AND_LEASE)
        self._lease_renew = redis.register_script(_LEASE_RENEW)
        self._lease_release = redis.register_script(_LEASE_RELEASE)
        self._rate = redis.register_script(_RATE)

    # -- jobs -------------------------------------------------------------------------

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
        (as :meth:`take_rate`) and raises :class:`RateLimited` when it is spent; an
        idempotent replay takes nothing. ``task`` (stream, message) is XADDed to the
        task stream in the same script, so the job and its queue message are stored
        together or not at all.
        """
        if job.state is not JobState.WAITING:
            raise IllegalTransition("a new job starts waiting")
        created_ms = int(job.created_at.timestamp() * 1000)
        interval_ms = period_ms = 0.0
        if rate is not None:
            count, period = rate
            interval_ms, period_ms = period * 1000 / count, period * 1000
        args: list[Any] = [
            job.id,
            created_ms,
            keys.queue_score(job.priority, created_ms),
            _dumps(job.to_public()),
            self.job_stream_maxlen,
            self.owner_stream_maxlen,
            86400,
            int(time.time() * 1000),
            interval_ms,
            period_ms,
            task[1] if task is not None else "",
            json.dumps(
                [part for item in job.to_storage().items() for part in item],
                ensure_ascii=False, separators=(",", ":"),
            ),
        ]
        idem = keys.idempotency(job.owner, idempotency_key) if idempotency_key else ""
        status, value = await self._create(
            keys=[
                keys.job(job.id),
                keys.job_events(job.id),
                keys.owner_events(job.owner),
                keys.owner_jobs(job.owner),
                keys.QUEUE,
                keys.STATS_STATES,
                idem,
                keys.rate(job.owner) if rate is not None else "",
                task[0] if task is not None else "",
            ],
            args=args,
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

    async def get(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(keys.job(job_id))
        return _load_job(raw) if raw else None

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.job(job_id))
            rows = await pipe.execute()
        return [_load_job(raw) if raw else None for raw in rows]

    async def snapshot(self, job_id: str) -> Snapshot | None:
        """The job and its latest event id, read in one transaction so they agree."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.job(job_id))
            pipe.xrevrange(keys.job_events(job_id), count=1)
            raw, last = await pipe.execute()
        if not raw:
            return None
        return Snapshot(_load_job(raw), last[0][0] if last else "0-0")

    async def update_fields(self, job_id: str, **changes: Any) -> None:
        """Set plain fields that carry no state change (e.g. the chosen file name)."""
        probe = Job(id=job_id, owner="", url=None)
        for name, value in changes.items():
            setattr(probe, name, value)
        flat = probe.to_storage()
        await self.redis.hset(keys.job(job_id), mapping={name: flat[name] for name in changes})

    async def name_file(self, job_id: str, index: int, filename: str, path: str) -> None:
        """Record the name chosen on disk for file ``index`` of a batch job.

        Reading the job applies it, so it is as visible and as durable as a rewrite
        of ``files`` (it lives in the job's hash, expiring and deleted with it),
        while a batch of N files costs N small writes instead of N rewrites of N entries.
        """
        await self.redis.hset(keys.job(job_id), _FILE_NAME + str(index), _dumps([filename, path]))

    async def transition(
        self,
        job_id: str,
        new_state: JobState,
        *,
        allowed_from: Iterable[JobState] | None = None,
        queue: bool = True,
        current: Job | None = None,
        progress_first: Sequence[tuple[Job, int]] = (),
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
        """
        allowed = set(allowed_from) if allowed_from is not None else None
        known = _copy_job(current) if current is not None else None
        for _ in range(20):
            job, known = known or await self.get(job_id), None
            if job is None:
                raise JobGone(job_id)
            if allowed is not None and job.state not in allowed:
                raise IllegalTransition(f"a {job.state.value} job cannot become {new_state.value}")
            check_transition(job.state, new_state)
            expected = job.state
            for name, value in changes.items():
                setattr(job, name, value)
            job.state = new_state
            now = utcnow()
            if new_state is JobState.ACTIVE and job.started_at is None:
                job.started_at = now
            if new_state.terminal:
                job.finished_at = now
                job.progress.speed = 0.0
            elif new_state is JobState.WAITING:
                job.finished_at = None
            if new_state is not JobState.ACTIVE:
                job.progress.speed = 0.0
            flat = job.to_storage()
            written = {
                name: value
                for name, value in flat.items()
                if name not in _PROGRESS_FIELDS or "progress" in changes
                or new_state is not JobState.ACTIVE
            }
            created_ms = int(job.created_at.timestamp() * 1000)
            args: list[Any] = [
                expected.value,
                new_state.value,
                _dumps(job.to_public()),
                self.job_stream_maxlen,
                self.owner_stream_maxlen,
                self.retention if new_state.terminal else 0,
                keys.queue_score(job.priority, created_ms)
                if new_state is JobState.WAITING and queue
                else "",
                job.id,
            ]
            for name, value in written.items():
                args += [name, value]
            transition_keys = [
                keys.job(job_id),
                keys.job_events(job_id),
                keys.owner_events(job.owner),
                keys.QUEUE,
                keys.STATS_STATES,
            ]
            if progress_first:
                async with self.redis.pipeline(transaction=False) as pipe:
                    await self._queue_progress(pipe, progress_first)
                    await self._transition(keys=transition_keys, args=args, client=pipe)
                    ok, value = (await pipe.execute())[-1]
                progress_first = ()
            else:
                ok, value = await self._transition(keys=transition_keys, args=args)
            if int(ok):
                return job, str(value)
            if value == "":
                raise JobGone(job_id)
        raise IllegalTransition(f"job {job_id} kept changing state; giving up")

    async def publish_progress(self, jobs: Sequence[tuple[Job, int]]) -> list[str | None]:
        """Write progress of many active jobs and their ``progress`` events in one round trip.

        Each item is the job (with its current ``progress``/``files``) and the bytes
        it downloaded since the last tick. Jobs no longer active are skipped.
        """
        if not jobs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._queue_progress(pipe, jobs)
            results = await pipe.execute()
        return [str(r) if r else None for r in results]

    async def _queue_progress(self, pipe: Any, jobs: Sequence[tuple[Job, int]]) -> None:
        """Queue the progress scripts of ``jobs`` on ``pipe``."""
        for job, delta in jobs:
            files = _dumps([f.to_storage() for f in job.files]) if job.files else ""
            await self._progress(
                keys=[
                    keys.job(job.id),
                    keys.job_events(job.id),
                    keys.owner_events(job.owner),
                    keys.STATS_BYTES,
                ],
                args=[
                    job.progress.loaded,
                    _dumps(job.progress.total),
                    repr(float(job.progress.speed)),
                    files,
                    _dumps(job.progress_event_data()),
                    self.job_stream_maxlen,
                    self.owner_stream_maxlen,
                    max(0, delta),
                ],
                client=pipe,
            )

    async def delete(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.job(job.id), keys.job_events(job.id), keys.control(job.id))
            pipe.zrem(keys.owner_jobs(job.owner), job.id)
            pipe.zrem(keys.QUEUE, job.id)
            if not job.state.terminal:
                pipe.hincrby(keys.STATS_STATES, job.state.value, -1)
            await pipe.execute()

    # -- listing ----------------------------------------------------------------------

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

    # -- events -----------------------------------------------------------------------

    async def job_events_after(self, job_id: str, after_id: str, count: int = 1000) -> list[Event]:
        rows = await self.redis.xrange(keys.job_events(job_id), min=f"({after_id}", count=count)
        return [_event(entry_id, fields) for entry_id, fields in rows]

    async def owner_events_after(self, owner: str, after_id: str, count: int = 1000) -> list[Event]:
        rows = await self.redis.xrange(keys.owner_events(owner), min=f"({after_id}", count=count)
        return [_event(entry_id, fields) for entry_id, fields in rows]

    async def lost_after(self, stream: str, after_id: str) -> bool:
        """Whether events after ``after_id`` were trimmed away (so a replay would have a gap)."""
        try:
            info = await self.redis.xinfo_stream(stream)
        except ResponseError:
            return False  # no such stream: nothing to replay, nothing lost
        deleted = info.get("max-deleted-entry-id")
        if deleted is not None:
            return stream_id_key(str(deleted)) > stream_id_key(after_id)
        first = info.get("first-entry")  # Redis < 7: compare with the oldest kept entry
        return first is not None and stream_id_key(first[0]) > _next_id(after_id)

    async def last_event_id(self, stream: str) -> str:
        rows = await self.redis.xrevrange(stream, count=1)
        return rows[0][0] if rows else "0-0"

    # -- queue, leases, control ---------------------------------------------------------

    async def claim_next(self, task_id: str) -> str | None:
        """The job a queue message runs: the one it picked before, else the best waiting one."""
        picked = await self._claim(
            keys=[keys.run(task_id), keys.QUEUE], args=[int(self.retention) + 86400]
        )
        return str(picked) if picked else None

    async def claim_and_lease(
        self, task_id: str, token: str, ttl: float
    ) -> tuple[str, bool, Job | None, str | None] | None:
        """:meth:`claim_next` and :meth:`lease_and_read` of the picked job in one round trip.

        None when nothing is waiting; else the job id, whether the lease was taken,
        the job (None if it is gone) and its pending control request.
        """
        found = await self._claim_and_lease(
            keys=[keys.run(task_id), keys.QUEUE],
            args=[int(self.retention) + 86400, token, int(ttl * 1000),
                  keys.job(""), keys.lease(""), keys.control("")],
        )
        if not found:
            return None
        picked, taken, control, flat = found
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return str(picked), bool(int(taken)), _load_job(raw) if raw else None, control or None

    async def release_lease_and_run(self, job_id: str, token: str, task_id: str) -> None:
        """:meth:`release_lease` and :meth:`release_run` in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._lease_release(keys=[keys.lease(job_id)], args=[token], client=pipe)
            pipe.delete(keys.run(task_id))
            await pipe.execute()

    async def release_run(self, task_id: str) -> None:
        await self.redis.delete(keys.run(task_id))

    async def requeue(self, job_id: str, priority: int, created_ms: int) -> None:
        """Put a job back in the waiting set (e.g. a message died before it ran)."""
        await self.redis.zadd(keys.QUEUE, {job_id: keys.queue_score(priority, created_ms)})

    async def queue_depth(self) -> int:
        return int(await self.redis.zcard(keys.QUEUE))

    async def lease_and_read(
        self, job_id: str, token: str, ttl: float
    ) -> tuple[bool, Job | None, str | None]:
        """Take the job's lease, read the job and its pending control in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.lease(job_id), token, nx=True, px=int(ttl * 1000))
            pipe.hgetall(keys.job(job_id))
            pipe.get(keys.control(job_id))
            taken, raw, control = await pipe.execute()
        job = _load_job(raw) if raw else None
        return bool(taken), job, str(control) if control else None

    async def acquire_lease(self, job_id: str, token: str, ttl: float) -> bool:
        return bool(await self.redis.set(keys.lease(job_id), token, nx=True, px=int(ttl * 1000)))

    async def renew_lease(self, job_id: str, token: str, ttl: float) -> bool:
        return bool(
            await self._lease_renew(keys=[keys.lease(job_id)], args=[token, int(ttl * 1000)])
        )

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        """Renew many ``(job id, token)`` leases in one round trip; which are still ours."""
        if not leases:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, token in leases:
                await self._lease_renew(
                    keys=[keys.lease(job_id)], args=[token, int(ttl * 1000)], client=pipe
                )
            results = await pipe.execute()
        return [bool(r) for r in results]

    async def release_lease(self, job_id: str, token: str) -> None:
        await self._lease_release(keys=[keys.lease(job_id)], args=[token])

    async def request_control(self, job_id: str, action: str) -> None:
        """Ask the worker running ``job_id`` to ``cancel`` or ``pause`` it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.control(job_id), action, ex=86400)
            pipe.publish(keys.CONTROL_CHANNEL, f"{job_id} {action}")
            await pipe.execute()

    async def pending_controls(self, job_ids: Sequence[str]) -> list[str | None]:
        """The control request (``pause``/``cancel``) waiting for each job, if any."""
        if not job_ids:
            return []
        values = await self.redis.mget([keys.control(i) for i in job_ids])
        return [str(v) if v else None for v in values]

    @contextlib.asynccontextmanager
    async def control_requests(self) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """Subscribe to control requests; yields ``(job_id, action)`` for each one published
        from the moment the ``async with`` is entered (never ends by itself)."""
        pubsub = self.redis.pubsub()

        async def requests() -> AsyncIterator[tuple[str, str]]:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    job_id, _, action = str(message["data"]).partition(" ")
                    yield job_id, action

        try:
            await pubsub.subscribe(keys.CONTROL_CHANNEL)
            yield requests()
        finally:
            await pubsub.aclose()

    async def get_control(self, job_id: str) -> str | None:
        value = await self.redis.get(keys.control(job_id))
        return str(value) if value else None

    async def clear_control(self, job_id: str) -> None:
        await self.redis.delete(keys.control(job_id))

    # -- workers, stats, rate limit -------------------------------------------------------

    async def ping(self) -> None:
        """Raise when Redis cannot be reached."""
        await self.redis.ping()

    async def idempotent_job_id(self, owner: str, key: str) -> str | None:
        """The job an owner created with this ``Idempotency-Key`` in the last 24 h, if any."""
        value = await self.redis.get(keys.idempotency(owner, key))
        return str(value) if value else None

    async def has_lease(self, job_id: str) -> bool:
        """Whether a live worker holds ``job_id`` (its lease has not expired)."""
        return bool(await self.redis.exists(keys.lease(job_id)))

    def event_hub(self, **options: Any) -> EventHub:
        """A fan-out reader of this store's event streams (one per process is enough)."""
        return EventHub(self.redis, **options)

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self.redis.aclose()

    async def heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.WORKERS, {worker_id: time.time()})
            pipe.set(keys.worker(worker_id), _dumps(info), ex=max(1, int(ttl)))
            await pipe.execute()

    async def forget_worker(self, worker_id: str) -> None:
        await self.redis.zrem(keys.WORKERS, worker_id)
        await self.redis.delete(keys.worker(worker_id))

    async def live_workers(self, max_age: float) -> int:
        cutoff = time.time() - max_age
        await self.redis.zremrangebyscore(keys.WORKERS, "-inf", f"({cutoff}")
        return int(await self.redis.zcard(keys.WORKERS))

    async def state_counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.STATS_STATES)
        counts = {state.value: 0 for state in JobState}
        counts.update({name: max(0, int(value)) for name, value in raw.items()})
        return counts

    async def bytes_downloaded(self) -> int:
        return int(await self.redis.get(keys.STATS_BYTES) or 0)

    async def take_rate(self, owner: str, count: int, period: float) -> float:
        """Take one creation from the owner's budget; 0 when allowed, else seconds to wait."""
        interval_ms = period * 1000 / count
        wait_ms = await self._rate(
            keys=[keys.rate(owner)], args=[int(time.time() * 1000), interval_ms, period * 1000]
        )
        return float(wait_ms) / 1000

