"""A rich progress bar for ``job.wait()`` outside notebooks; nothing when stdout is no TTY.

Piped or redirected output (CI logs, ``> file``) gets no bar at all, not even
the final line: scripts that need text print ``repr(job)`` themselves.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from bgdownload.client import text
from bgdownload.client.protocol import JobInfo
from bgdownload.models import JobState

_MARKS = {
    JobState.COMPLETED: "[green]✔[/]",
    JobState.FAILED: "[red]✘[/]",
    JobState.CANCELLED: "[yellow]✘[/]",
}


class TerminalBar:
    """One job's bar; :meth:`update` may be called from any thread (rich locks)."""

    def __init__(self, info: JobInfo, *, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("[dim]{task.fields[state]}"),
            console=console,
            transient=True,
        )
        self._task: TaskID = self._progress.add_task(
            escape(text.display_name(info)), total=info.progress.total, status="", state=""
        )
        self._progress.start()
        self.update(info)

    @classmethod
    def for_stdout(cls, info: JobInfo, stream: TextIO | None = None) -> TerminalBar | None:
        """A bar on ``stream`` (default stdout) if it is a terminal, else None."""
        stream = stream or sys.stdout
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty:
            return None
        return cls(info, console=Console(file=stream))

    def update(self, info: JobInfo) -> None:
        self._progress.update(
            self._task,
            description=escape(text.display_name(info)),
            total=info.progress.total,  # None: rich pulses the bar
            completed=info.progress.loaded,
            status=escape(text.status_line(info)),
            state=info.state.value if info.state is not JobState.ACTIVE else "",
        )

    def close(self, info: JobInfo) -> None:
        """Remove the bar and leave one line saying how it ended."""
        self._progress.stop()
        if info.state.terminal:
            mark = _MARKS[info.state]
            self._console.print(
                f"{mark} {escape(text.display_name(info))} {info.state.value} · "
                f"{escape(text.status_line(info))}",
                markup=True, highlight=False,
            )
