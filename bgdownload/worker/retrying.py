"""How a job waits between attempts, and how an unexpected failure is put into words."""

from __future__ import annotations

import os
import random
import re

#: backoff between attempts: BASE * 2**n with full jitter, capped
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

#: an absolute path in an exception's text (not the path of a URL: no host before it)
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.%-])/[^\s'\"]+")


def describe(exc: BaseException) -> str:
    """An unexpected error for the job's message: never an absolute server path (§17)."""
    if isinstance(exc, OSError) and exc.strerror:
        named = os.path.basename(os.fsdecode(exc.filename)) if exc.filename else ""
        return f"{exc.strerror} ({named!r})" if named else exc.strerror
    return _ABSOLUTE_PATH.sub(lambda m: os.path.basename(m.group(0)), str(exc))


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when longer."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 300.0))
    return delay

