"""Detached processes: starting them, knowing they still run, and stopping them.

Generic process management for :mod:`bgdownload.local`, which knows what to run;
this module only knows how to run, watch and stop a process.

- Each process is started through a short-lived launcher (a double fork) in a
  session of its own, so it outlives the caller (a notebook kernel, a shell)
  and never becomes the caller's zombie. Its pid is also its process group id,
  which is how :func:`stop_processes` stops the taskiq worker's child processes too.
- A pid is trusted only together with its start time (``/proc``) and boot id,
  so a stale record after a reboot, or a recycled pid, is never taken for a
  live process, and nobody signals a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bgdownload.errors import BgdownloadError

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
LOG_ROTATE_BYTES = 10 * 1024 * 1024

# Runs in a throwaway interpreter: starts the real process in a new session and
# exits at once, so the real process is reparented to init instead of being the
# caller's child (no zombie in a long-lived kernel, no Popen bookkeeping there).
_LAUNCHER = """\
import subprocess, sys, json
argv, log, cwd = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(log, "ab", buffering=0) as out:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         cwd=cwd, start_new_session=True)
print(p.pid)
"""


# ------------------------------------------------------------------ process facts


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0]); None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def pid_alive(pid: int, start: int | None = None) -> bool:
    """True when ``pid`` runs (a zombie does not) and, if given, started at ``start``."""
    if _has_proc():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start is None or int(fields[19]) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    if not _has_proc():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def owned_group(pid: int, start: int | None) -> bool:
    """Is the process group ``pid`` still ours to signal?

    Our processes lead their own group (new session), so pgid == pid. While the
    leader lives its start time proves identity; once it died, Linux does not
    hand out ``pid`` again while the group has members, so any member is ours.
    """
    if pid_alive(pid):
        return pid_alive(pid, start)
    return bool(_group_members(pid))


# ---------------------------------------------------------------------- stopping


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sig == signal.SIGTERM and pid_alive(pid):
            # only the leader: taskiq's manager shuts its children down itself
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)


def stop_processes(procs: dict[str, tuple[int, int | None]], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process (group), SIGKILL what is left after ``grace`` seconds."""
    owned = {name: pid for name, (pid, start) in procs.items() if owned_group(pid, start)}
    for pid in owned.values():
        _signal_group(pid, signal.SIGTERM)
    for sig, wait in ((signal.SIGKILL, grace), (None, 5.0)):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_group_members(p) for p in owned.values()):
            time.sleep(0.05)
        if sig is not None:
            for pid in owned.values():
                if _group_members(pid):
                    _signal_group(pid, sig)


# ----------------------------------------------------------------------- starting


def open_log(path: Path, name: str) -> Path:
    """Rotate ``path`` when it grew too big and mark the start of ``name`` in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
        path.replace(path.with_suffix(".log.1"))
    with path.open("a", encoding="utf-8") as log:
        log.write(f"--- bgdownload: starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return path


def spawn_detached(
    name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path
) -> tuple[int, int]:
    """Start ``argv`` detached, output appended to ``log``; returns (pid, start ticks)."""
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, json.dumps(argv), str(log), str(cwd)],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    if launched.returncode != 0:
        last = launched.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BgdownloadError(f"could not start {name}: {last[0]}")
    pid = int(launched.stdout.strip())
    return pid, start_ticks(pid) or 0


def last_log_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = [ln for ln in handle.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
