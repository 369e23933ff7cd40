"""Human-readable text for jobs: sizes, durations, status lines, one-line summaries.

Shared by ``repr(job)``, the notebook widgets and the terminal bar so all three
say the same thing the same way.
"""

from __future__ import annotations

from bgdownload.client.protocol import JobInfo
from bgdownload.models import JobState

_UNITS = ("kB", "MB", "GB", "TB", "PB")


def format_bytes(count: float) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, like browsers and curl)."""
    if count < 1000:
        return f"{int(count)} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1000
        if value < 999.95 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``75`` → ``"1 min 15 s"``; whole seconds, at most two units."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def display_name(info: JobInfo) -> str:
    """The file name when known, else the last part of the URL, else the id."""
    if info.filename:
        return info.filename
    if info.url:
        tail = info.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if tail:
            return tail
    if info.files:
        return f"{len(info.files)} files"
    return info.id


def status_line(info: JobInfo) -> str:
    """``"12.3 MB / 50.0 MB · 3.4 MB/s · 12 s left"``; the error message once failed."""
    progress = info.progress
    amount = format_bytes(progress.loaded)
    if progress.total is not None:
        amount += f" / {format_bytes(progress.total)}"
    if info.state is JobState.FAILED and info.error is not None:
        return f"{amount} · {info.error.code}: {info.error.message}"
    if info.state is not JobState.ACTIVE:
        return amount
    parts = [amount, f"{format_bytes(progress.speed)}/s"]
    if progress.eta is not None:
        parts.append(f"{format_duration(progress.eta)} left")
    return " · ".join(parts)


def summary(info: JobInfo, kind: str = "Job") -> str:
    """One line: ``<Job 0b6f3c1e active 24.7% video.mp4 12.3 MB / 50.0 MB · 1.0 MB/s>``."""
    percent = info.progress.percent
    share = f" {percent:.1f}%" if percent is not None and info.state is not JobState.FAILED else ""
    name = display_name(info)
    return f"<{kind} {info.id[:8]} {info.state.value}{share} {name} {status_line(info)}>"
