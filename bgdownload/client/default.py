"""The module-level API (``bgd.download`` …) and the default client behind it.

Where the API is, in order: ``BGDOWNLOAD_URL`` (with ``BGDOWNLOAD_TOKEN``); the
local stack's runtime file when it runs; else the local stack is started —
it outlives this process, so the next kernel finds it running.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, overload

from bgdownload.client.job import Job
from bgdownload.client.sync import Client
from bgdownload.config import Settings
from bgdownload.errors import ServerUnavailable
from bgdownload.models import JobState

_lock = threading.Lock()
_client: Client | None = None
_announced = False


def resolve_settings() -> Settings:
    return Settings.from_env()


def resolve_api(settings: Settings) -> tuple[str, str | None]:
    """``(api_url, token)`` for the default client, starting the local stack if needed."""
    global _announced
    if settings.api_url:
        return settings.api_url, settings.token
    from bgdownload import local

    info = local.runtime_info(settings)
    if info is None:
        if not _announced:
            _announced = True
            print("Starting the local bgdownload stack…", file=sys.stderr, flush=True)
        info = local.ensure_up(settings)
        if not info or not info.get("api_url"):
            info = local.runtime_info(settings)
    if not info or not info.get("api_url"):
        raise ServerUnavailable(
            "the local bgdownload stack did not come up; see `bgdownload status` for its logs"
        )
    return str(info["api_url"]).rstrip("/"), settings.token


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


def download(
    url: str | None = None,
    *,
    filename: str | None = None,
    sha256: str | None = None,
    headers: Mapping[str, str] | None = None,
    files: Iterable[Mapping[str, Any] | str] | None = None,
    priority: int | None = None,
    max_speed: int | None = None,
    connections: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Job:
    """Start downloading ``url`` in the background and return its :class:`Job` at once.

    >>> job = bgd.download("https://example.org/big.iso", filename="big.iso")
    >>> job.wait()  # progress bar; raises bgd.DownloadFailed if it fails
    """
    return default_client().download(
        url, filename=filename, sha256=sha256, headers=headers, files=files,
        priority=priority, max_speed=max_speed, connections=connections, metadata=metadata,
    )


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
