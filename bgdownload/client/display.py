"""How a job shows its progress: a live widget in a notebook, a bar on a terminal, else nothing.

The widgets of a job are kept in one :class:`JobWidgets` that its
:class:`~bgdownload.client.AsyncJob` and its blocking twin share, so showing
the job twice in one cell draws one bar, and ``wait()`` returns only after
every bar drew the outcome (headless notebook runners save what is drawn then).
"""

from __future__ import annotations

import asyncio
import sys

from bgdownload.client.terminal import TerminalBar
from bgdownload.client.widgets import JobWidget, ShownJob, show

#: how long ``wait()`` lets the job's widgets catch up with the outcome (seconds)
SETTLE_TIMEOUT = 5.0


def in_notebook() -> bool:
    """Running inside a Jupyter kernel (not a terminal IPython, not a script)."""
    if "IPython" not in sys.modules:
        return False
    from IPython.core.getipython import get_ipython

    shell = get_ipython()  # type: ignore[no-untyped-call, unused-ignore]
    return shell is not None and getattr(shell, "kernel", None) is not None


class JobWidgets:
    """The notebook widgets showing one job, each fed by its own stream on some loop."""

    def __init__(self, job: ShownJob) -> None:
        self.job = job
        self._shown: list[JobWidget] = []

    def show(self, loop: asyncio.AbstractEventLoop | None) -> JobWidget:
        """Display a live widget fed by the job's stream running on ``loop``."""
        widget = JobWidget(self.job, loop)
        show(widget.widget)
        widget.start()
        self._shown = [w for w in self._shown if w.live]
        self._shown.append(widget)
        return widget

    def show_once(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """:meth:`show` unless a widget of the job is still following it."""
        if not any(w.live for w in self._shown):
            self.show(loop)

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Block until every widget drew the outcome (each at most ``timeout`` s)."""
        for widget in self._shown:
            widget.settle(timeout)

    async def settled(self, timeout: float = SETTLE_TIMEOUT) -> None:  # noqa: ASYNC109
        """:meth:`settle` for async code: wait without blocking the running loop."""
        for widget in self._shown:
            await widget.settled(timeout)


def show_progress(
    widgets: JobWidgets, loop: asyncio.AbstractEventLoop | None
) -> TerminalBar | None:
    """For ``wait()``: a widget on ``loop`` in a notebook, else a bar if stdout is a terminal."""
    if in_notebook():
        widgets.show_once(loop)
        return None
    return TerminalBar.for_stdout(widgets.job.info)


def show_job(widgets: JobWidgets, loop: asyncio.AbstractEventLoop | None, summary: str) -> None:
    """``_ipython_display_`` of a job: a live widget in a notebook, else its one-line summary."""
    if not in_notebook():
        print(summary)
        return
    widgets.show(loop)
