"""The notebook widget of one job: a row like ``tqdm.notebook``'s, with pause/resume/cancel.

ipywidgets is imported only when a widget is shown, with an actionable error
when missing. Widgets are fed by event streams running on an asyncio loop —
the sync client's background loop, or the kernel's own for AsyncClient — so
other cells keep running while bars move.

NB: trait changes made on that loop's thread reach the browser safely:
ipykernel sends comm messages through its IOPub thread, which accepts
messages from any thread. Button clicks arrive on the kernel's main thread and
are handed to the loop with ``run_coroutine_threadsafe``; they are processed
only while the kernel is idle (a blocking ``job.wait()`` holds them back).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import html
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from types import ModuleType
from typing import Any, Protocol

from bgdownload import errors
from bgdownload.client import text
from bgdownload.client.protocol import JobInfo
from bgdownload.models import Event, JobState

log = logging.getLogger(__name__)

_BAR_STYLES = {
    JobState.COMPLETED: "success",
    JobState.FAILED: "danger",
    JobState.CANCELLED: "warning",
}
_STATE_COLOURS = {
    JobState.WAITING: "#777", JobState.ACTIVE: "#1976d2", JobState.PAUSED: "#f57c00",
    JobState.COMPLETED: "#2e7d32", JobState.FAILED: "#c62828", JobState.CANCELLED: "#f57c00",
}
#: an indeterminate bar pulses (ipywidgets has no such style, so a little CSS adds one)
_PULSE_CSS = (
    "<style>@keyframes bgd-pulse{0%{opacity:1}50%{opacity:.35}100%{opacity:1}}"
    ".bgd-pulse .progress-bar{animation:bgd-pulse 1.2s ease-in-out infinite}</style>"
)


class ShownJob(Protocol):
    """What a row needs from the job it shows (:class:`~bgdownload.client.AsyncJob` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def info(self) -> JobInfo: ...
    def apply(self, event: Event) -> None: ...
    def events(self) -> AsyncIterator[Event]: ...
    async def refresh(self) -> object: ...
    async def pause(self) -> object: ...
    async def resume(self) -> object: ...
    async def cancel(self) -> object: ...


def submit(coro: Any, loop: asyncio.AbstractEventLoop) -> Future[Any]:
    """``run_coroutine_threadsafe`` in a fresh context, for tasks that update widgets.

    ipykernel stamps each comm message with the request found in the sending task's
    contextvars, so a task started from one cell would report every later update as
    that cell's. In a fresh context it falls back to the kernel's latest request
    instead: a bar shown in one cell and finished while another runs is reported with
    the running cell, which is what headless runners (nbclient, ``nbconvert
    --execute``) need to save the bar's final state in the notebook.
    """
    return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, loop)


def require_ipywidgets() -> ModuleType:
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "bgdownload's notebook widgets need ipywidgets 8: run `pip install ipywidgets` "
            "in the kernel's environment, then restart the kernel"
        ) from exc
    module: ModuleType = ipywidgets
    return module


def show(widget: Any) -> None:
    """Display ``widget`` in the notebook's output (IPython is there whenever widgets are)."""
    from IPython.display import display

    display(widget)  # type: ignore[no-untyped-call, unused-ignore]


class JobWidget:
    """``name | bar | 12.3 MB / 50.0 MB · 3.4 MB/s · 12 s left | state | ⏸ ▶ ✖``."""

    def __init__(self, job: ShownJob, loop: asyncio.AbstractEventLoop | None) -> None:
        w = require_ipywidgets()
        self.job = job
        self._loop = loop
        self._future: Future[None] | None = None
        self._problem: str | None = None
        self._render_lock = threading.Lock()
        #: the outcome is drawn; later (older) states are ignored
        self._final = False
        self.name = w.HTML(layout=w.Layout(width="22%", overflow="hidden"))
        self.bar = w.FloatProgress(min=0, max=100, layout=w.Layout(flex="2", min_width="8em"))
        self.status = w.HTML(layout=w.Layout(flex="3"))
        self.state = w.HTML(layout=w.Layout(width="6em"))
        self.buttons = {
            action: w.Button(icon=icon, tooltip=action.capitalize(),
                             layout=w.Layout(width="2.6em", padding="0"))
            for action, icon in (("pause", "pause"), ("resume", "play"), ("cancel", "times"))
        }
        for action, button in self.buttons.items():
            button.on_click(lambda _button, action=action: self._act(action))
        self.widget = w.HBox(
            [w.HTML(_PULSE_CSS), self.name, self.bar, self.status, self.state,
             *self.buttons.values()],
            layout=w.Layout(width="100%", align_items="center"),
        )
        self.render(job.info)

    @property
    def live(self) -> bool:
        """Still following the job's stream."""
        return self._future is not None and not self._future.done()

    def start(self) -> None:
        """Follow the job's event stream on the loop until it ends."""
        if self._loop is not None and not self.live:
            self._future = submit(self._follow(), self._loop)

    def stop(self) -> None:
        if self._future is not None:
            self._future.cancel()

    def settle(self, timeout: float) -> None:
        """Block (at most ``timeout`` s) until the stream ended and the outcome is drawn."""
        if self._future is not None:
            concurrent.futures.wait([self._future], timeout)

    async def settled(self, timeout: float) -> None:  # noqa: ASYNC109 - as settle()
        """:meth:`settle` for async code: wait without blocking the running loop."""
        if self._future is not None:
            await asyncio.wait([asyncio.wrap_future(self._future)], timeout=timeout)

    async def _follow(self) -> None:
        try:
            async for _ in self.job.events():
                self.render(self.job.info)
            await self.job.refresh()  # the final object: path, sha256, files
        except errors.BgdownloadError as exc:
            self._problem = str(exc)
        except Exception as exc:  # a widget must never die silently
            log.exception("bgdownload widget for job %s stopped", self.job.id)
            self._problem = f"{type(exc).__name__}: {exc}"
        self.render(self.job.info)

    def _act(self, action: str) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(getattr(self.job, action)(), self._loop)
        future.add_done_callback(self._acted)

    def _acted(self, future: Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        self._problem = str(exc) if exc is not None else None
        self.render(self.job.info)

    def render(self, info: JobInfo) -> None:
        """Show ``info``; safe from any thread.

        Renders are serialised, and once a terminal state is drawn nothing older can
        overwrite it. The terminal render sends every trait again, not only the changed
        ones: a front end may have missed earlier updates (nbclient keeps only messages
        sent while a cell runs), and the saved bar must be the job's final state.
        """
        with self._render_lock:
            if self._final and not info.state.terminal:
                return  # a late event from before the outcome
            self._draw(info)
            if info.state.terminal:
                self._final = True
                for part in (self.name, self.bar, self.status, self.state,
                             *self.buttons.values()):
                    part.send_state()
                    part.layout.send_state()

    def _draw(self, info: JobInfo) -> None:
        state = info.state
        self.name.value = (
            f"<span title='{html.escape(info.url or info.id, quote=True)}'>"
            f"{html.escape(text.display_name(info))}</span>"
        )
        total, percent = info.progress.total, info.progress.percent
        with self.bar.hold_sync():  # max, value and style in one message: never mixed
            if total is None and not state.terminal:
                self.bar.max, self.bar.value, self.bar.bar_style = 1, 1, "info"
                self.bar.add_class("bgd-pulse")
            else:
                self.bar.remove_class("bgd-pulse")
                self.bar.max = 100
                self.bar.value = 100 if state is JobState.COMPLETED else (percent or 0)
                self.bar.bar_style = _BAR_STYLES.get(state, "")
        status = html.escape(text.status_line(info))
        if state is JobState.FAILED:
            status = f"<span style='color:#c62828'>{status}</span>"
        if self._problem:
            status += f" <span style='color:#c62828'>({html.escape(self._problem)})</span>"
        self.status.value = status
        self.state.value = (
            f"<span style='color:{_STATE_COLOURS[state]}'>{state.value}</span>"
        )
        shown = {
            "pause": state in (JobState.WAITING, JobState.ACTIVE),
            "resume": state is JobState.PAUSED,
            "cancel": not state.terminal,
        }
        for action, button in self.buttons.items():
            button.layout.display = None if shown[action] else "none"

    def _ipython_display_(self) -> None:
        show(self.widget)
