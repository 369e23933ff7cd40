"""The module-level API (``bgd.download`` …) and the default client behind it.

The default client finds the API itself (:mod:`bgdownload.client.discovery`):
``BGDOWNLOAD_URL``, else the local stack, started on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Unpack, overload

from bgdownload.client.job import Job
from bgdownload.client.options import DownloadOptions
from bgdownload.client.sync import Client
from bgdownload.models import JobState

_lock = threading.Lock()
_client: Client | None = None


def default_client() -> Client:
    """The process-wide client used by ``bgd.download`` and friends (made on first use)."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client


def set_default_client(client: Client | None) -> Client | None:
    """Replace the default client (None: make a new one on next use); returns the old one."""
    global _client
    with _lock:
        old, _client = _client, client
        return old


def download(url: str | None = None, **options: Unpack[DownloadOptions]) -> Job:
    """Start downloading ``url`` in the background and return its :class:`Job` at once.

    ``options``: ``filename``, ``sha256``, ``headers``, ``files``, ``priority``,
    ``max_speed``, ``connections``, ``metadata`` (see
    :class:`~bgdownload.client.options.DownloadOptions`).

    >>> job = bgd.download("https://example.org/big.iso", filename="big.iso")
    >>> job.wait()  # progress bar; raises bgd.DownloadFailed if it fails
    """
    return default_client().download(url, **options)


@overload
def attach(job_id: str) -> Job: ...
@overload
def attach(job_id: None = None) -> list[Job]: ...
def attach(job_id: str | None = None) -> Job | list[Job]:
    """The job ``job_id`` from any process; with no id, every still-running job this
    machine created (from the journal in the state dir)."""
    return default_client().attach(job_id)


def jobs(
    state: str | JobState | Iterable[str | JobState] | None = None, *, limit: int | None = None
) -> list[Job]:
    """The caller's jobs, newest first; ``state="active"`` or ``"active,waiting"`` filters."""
    return default_client().jobs(state, limit=limit)


def active() -> Any:
    """A notebook panel of every active download of the caller, rows added and removed live."""
    return default_client().active()
