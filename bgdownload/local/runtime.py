"""The local stack's record of what runs: paths in the state dir, the runtime file, its lock.

Everything lives in the state dir::

    <state_dir>/runtime.json      what runs: api_url, redis_url, pids, start ticks, logs
    <state_dir>/up.lock           fcntl lock: one ``up``/``down`` at a time, across processes
    <state_dir>/run/<name>.pid    one pid file per process, for humans and tools
    <state_dir>/logs/<name>.log   stdout+stderr of each process (kept after ``down``)
    <state_dir>/redis/            the local Redis's append-only file: queued jobs survive

A pid is trusted only together with its start time and boot id (see
:mod:`bgdownload.local.procs`), so a runtime file left behind by another boot,
or naming a recycled pid, is never taken for a live stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bgdownload.config import Settings, read_runtime_file
from bgdownload.errors import BgdownloadError
from bgdownload.local.procs import boot_id, pid_alive

#: start order; ``down`` stops in reverse so the worker can still write to Redis
COMPONENTS = ("redis", "worker", "server")


# --------------------------------------------------------------------------- paths


def runtime_path(settings: Settings) -> Path:
    return settings.runtime_file


def log_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def pid_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"


# ------------------------------------------------------------------- runtime file


def read_runtime(settings: Settings) -> dict[str, Any] | None:
    return read_runtime_file(settings.runtime_file) or None


def write_runtime(settings: Settings, data: dict[str, Any]) -> None:
    path = runtime_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)  # atomic: readers see the old or the new file, never half


def remove_runtime(settings: Settings) -> None:
    runtime_path(settings).unlink(missing_ok=True)
    for name in COMPONENTS:
        pid_path(settings, name).unlink(missing_ok=True)


def recorded(data: dict[str, Any] | None) -> dict[str, tuple[int, int | None]]:
    """{name: (pid, start ticks)} of the processes a runtime file names."""
    if not data:
        return {}
    pids, starts = data.get("pids") or {}, data.get("starts") or {}
    return {name: (int(pid), starts.get(name)) for name, pid in pids.items()}


def same_boot(data: dict[str, Any]) -> bool:
    return data.get("boot_id") is None or data.get("boot_id") == boot_id()


@contextlib.contextmanager
def locked(settings: Settings, timeout: float, *, blocking: bool = True) -> Iterator[bool]:
    """Hold ``up.lock``; yields False when ``blocking`` is off and someone else holds it."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "up.lock", "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise BgdownloadError(
                        f"another 'bgdownload up/down' holds {handle.name} for over {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------- health


def health(api_url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
    """(status, body) of ``GET /healthz``; (0, None) when nothing answers."""
    try:
        response = httpx.get(f"{api_url}/healthz", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return 0, None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body if isinstance(body, dict) else None


def runtime_info(settings: Settings) -> dict[str, Any] | None:
    """The runtime file of a running, healthy stack; None when the stack is not running.

    A file left by a stack that is gone (all processes dead, or another boot) is
    removed, unless an ``up``/``down`` is under way.
    """
    data = read_runtime(settings)
    if data is None:
        return None
    procs = recorded(data)
    alive = {name: pid_alive(pid, start) for name, (pid, start) in procs.items()}
    if not same_boot(data) or not any(alive.values()):
        with locked(settings, 0, blocking=False) as got:
            if got and read_runtime(settings) == data:
                remove_runtime(settings)
        return None
    if not all(alive.values()) or not data.get("api_url"):
        return None
    status, _ = health(data["api_url"])
    return data if status == 200 else None
