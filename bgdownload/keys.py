"""Every Redis key bgdownload uses, in one place (docs/internals.md "Redis layout")."""

from __future__ import annotations

PREFIX = "bgd:"

#: the single zset of waiting job ids before fair shares; what is left in it (jobs
#: queued by an older version) moves to the owners' queues on the next claim
LEGACY_QUEUE = PREFIX + "queue"
#: zset owner → turn: the owners with waiting jobs, next to be served first
#: (round robin: an owner served, or joining, takes the next turn of :data:`TURN`)
OWNER_ROTATION = PREFIX + "waiting:owners"
#: counter handing out the turns of :data:`OWNER_ROTATION`
TURN = PREFIX + "waiting:turn"
#: the taskiq stream that carries "a job is waiting" messages
TASK_STREAM = PREFIX + "tasks"
#: zset worker id → last heartbeat (unix seconds)
WORKERS = PREFIX + "workers"
#: pub/sub channel carrying "<job id> <action>" control requests
CONTROL_CHANNEL = PREFIX + "control"
#: hash state → number of jobs that entered it (gauges for non-terminal states)
STATS_STATES = PREFIX + "stats:states"
#: counter of bytes downloaded by all workers
STATS_BYTES = PREFIX + "stats:bytes"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def job_events(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


def owner_jobs(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def owner_events(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:events"


#: an owner's waiting jobs are ``OWNER_WAITING[0] + owner + OWNER_WAITING[1]`` (the
#: claim script builds the key from an owner name it reads from the rotation)
OWNER_WAITING = (PREFIX + "owner:", ":waiting")


def owner_waiting(owner: str) -> str:
    """zset of the owner's waiting job ids, best first (see :func:`queue_score`)."""
    return OWNER_WAITING[0] + owner + OWNER_WAITING[1]


def idempotency(owner: str, key: str) -> str:
    """The owner is length-prefixed: ``alice`` + ``x:k1`` and ``alice:x`` + ``k1`` differ.

    (The older ``idem:{owner}:{key}`` layout is not read: it was a 24 h cache.)
    """
    return f"{PREFIX}idempotency:{len(owner)}:{owner}:{key}"


def control(job_id: str) -> str:
    return f"{PREFIX}control:{job_id}"


def lease(job_id: str) -> str:
    return f"{PREFIX}lease:{job_id}"


def run(task_id: str) -> str:
    """Which job a queue message (by taskiq task id) picked, so a redelivery resumes it."""
    return f"{PREFIX}run:{task_id}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


def dead_worker(worker_id: str) -> str:
    """Set when a live worker judged ``worker_id`` dead; its leases may then be broken."""
    return f"{PREFIX}dead:{worker_id}"


def rate(owner: str) -> str:
    return f"{PREFIX}rate:{owner}"


#: priorities are clamped to this range so the queue score stays exact in a double
PRIORITY_LIMIT = 1000


def queue_score(priority: int, created_ms: int) -> float:
    """Lower is served first among one owner's jobs: higher priority first, then oldest."""
    return float(-priority * 2**42 + created_ms)


def file_name(path: str) -> str:
    """Which job holds a file name: ``path`` is relative to the download root (``alice/x.bin``)."""
    return f"{PREFIX}name:{path}"
