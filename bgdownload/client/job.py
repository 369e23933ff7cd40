"""Job objects: a job's latest known state plus the calls that act on it.

:class:`AsyncJob` holds the logic; :class:`Job` is its blocking twin, running
every call on the sync client's background loop. Events applied to a job move
its fields forward (``job.state``, ``job.progress`` …); an event older than
what the job already shows is ignored, so two streams (a widget and a
``wait()``) can feed the same job.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bgdownload import errors
from bgdownload.client import protocol, text
from bgdownload.client.protocol import ErrorInfo, JobInfo
from bgdownload.models import Event, FileEntry, JobState, Progress

if TYPE_CHECKING:
    from bgdownload.client.aio import AsyncClient
    from bgdownload.client.sync import Client
    from bgdownload.client.terminal import TerminalBar
    from bgdownload.client.widgets import JobWidget


#: how long ``Job.wait()`` lets its widgets catch up with the outcome (seconds)
_SETTLE_TIMEOUT = 5.0


def in_notebook() -> bool:
    """Running inside a Jupyter kernel (not a terminal IPython, not a script)."""
    if "IPython" not in sys.modules:
        return False
    from IPython.core.getipython import get_ipython

    shell = get_ipython()  # type: ignore[no-untyped-call]
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Fields:
    """Read-only views of :attr:`info` shared by both job classes."""

    @property
    def info(self) -> JobInfo:
        raise NotImplementedError

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> JobState:
        return self.info.state

    @property
    def progress(self) -> Progress:
        return self.info.progress

    @property
    def url(self) -> str | None:
        return self.info.url

    @property
    def filename(self) -> str | None:
        return self.info.filename

    @property
    def path(self) -> str | None:
        """Relative to the download root (API.md §1)."""
        return self.info.path

    @property
    def sha256(self) -> str | None:
        return self.info.sha256

    @property
    def error(self) -> ErrorInfo | None:
        return self.info.error

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.info.files

    @property
    def attempts(self) -> int:
        return self.info.attempts

    @property
    def created_at(self) -> datetime | None:
        return self.info.created_at

    @property
    def finished_at(self) -> datetime | None:
        return self.info.finished_at

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.info.metadata

    @property
    def done(self) -> bool:
        """The job reached a terminal state (as far as this object knows)."""
        return self.info.state.terminal


class AsyncJob(_Fields):
    """One job, seen through an :class:`~bgdownload.AsyncClient`."""

    def __init__(self, client: AsyncClient, info: JobInfo) -> None:
        self._client = client
        self._info = info
        self._order: tuple[int, int] | None = None
        self._widgets: list[JobWidget] = []

    @property
    def info(self) -> JobInfo:
        return self._info

    @property
    def client(self) -> AsyncClient:
        return self._client

    def __repr__(self) -> str:
        return text.summary(self._info, "AsyncJob")

    def _apply(self, event: Event) -> None:
        order = protocol.event_order(event.id)
        if order is not None and self._order is not None and order <= self._order:
            return
        self._info = self._info.apply(event)
        if order is not None:
            self._order = order

    def _replace(self, other: AsyncJob) -> AsyncJob:
        self._info = other.info
        return self

    async def refresh(self) -> AsyncJob:
        """Fetch the job's current state."""
        return self._replace(await self._client.get(self.id))

    async def pause(self) -> AsyncJob:
        return self._replace(await self._client.pause(self.id))

    async def resume(self) -> AsyncJob:
        return self._replace(await self._client.resume(self.id))

    async def cancel(self) -> AsyncJob:
        return self._replace(await self._client.cancel(self.id))

    async def retry(self) -> AsyncJob:
        """Queue a failed or cancelled job again."""
        return self._replace(await self._client.retry(self.id))

    async def delete(self, *, delete_file: bool = False) -> None:
        await self._client.delete(self.id, delete_file=delete_file)

    async def events(self, *, last_event_id: str | None = None) -> AsyncGenerator[Event, None]:
        """The job's §3 events, reconnecting by itself; ends after the terminal state."""
        stream = self._client.events(self.id, last_event_id=last_event_id)
        try:
            async for event in stream:
                self._apply(event)
                yield event
                if protocol.is_terminal_event(event):
                    return
        finally:
            await stream.aclose()

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the same signature as Job.wait
        *,
        progress: bool = True,
        on_update: Callable[[JobInfo], None] | None = None,
    ) -> AsyncJob:
        """Until the job is terminal; raises DownloadFailed if it failed or was cancelled.

        ``progress`` shows a widget in a notebook, a bar on a terminal, else nothing.
        """
        bar: TerminalBar | None = None
        if progress and on_update is None:
            if in_notebook():
                self._show_widget_once(asyncio.get_running_loop())
            else:
                from bgdownload.client.terminal import TerminalBar

                bar = TerminalBar.for_stdout(self._info)
                on_update = bar.update if bar else None
        try:
            await self._follow(timeout, on_update)
        finally:
            if bar is not None:
                bar.close(self._info)
            # as Job.wait: let the widgets draw the outcome before this returns
            for widget in self._widgets:
                await widget.settled(_SETTLE_TIMEOUT)
        return self

    async def _follow(
        self,
        timeout: float | None,  # noqa: ASYNC109
        on_update: Callable[[JobInfo], None] | None,
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.events():
                    if on_update is not None:
                        on_update(self._info)
                await self.refresh()
        except TimeoutError:
            raise errors.WaitTimeout(
                f"job {self.id} is still {self.state.value} after {timeout} s"
            ) from None
        if on_update is not None:
            on_update(self._info)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.state is JobState.FAILED or self.state is JobState.CANCELLED:
            code = self.error.code if self.error else "cancelled"
            detail = self.error.message if self.error else "the job was cancelled"
            raise errors.DownloadFailed(
                f"download {self.id} ({text.display_name(self._info)}) {self.state.value}: "
                f"{detail}",
                code=code, job=self,
            )

    # -- notebook display ---------------------------------------------------------------------

    def _show_widget(self, loop: asyncio.AbstractEventLoop | None) -> JobWidget:
        """Display a live widget fed by this job's stream running on ``loop``."""
        from IPython.display import display

        from bgdownload.client.widgets import JobWidget

        widget = JobWidget(self, loop)
        display(widget.widget)  # type: ignore[no-untyped-call]
        widget.start()
        self._widgets = [w for w in self._widgets if w.live]
        self._widgets.append(widget)
        return widget

    def _show_widget_once(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if not any(w.live for w in self._widgets):
            self._show_widget(loop)

    def _ipython_display_(self) -> None:
        if not in_notebook():
            print(repr(self))
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._show_widget(loop)


class Job(_Fields):
    """One job, seen through a blocking :class:`~bgdownload.Client`.

    >>> job = bgd.download("https://example.org/big.iso")
    >>> job.wait().path
    'big.iso'
    """

    def __init__(self, client: Client, job: AsyncJob) -> None:
        self._client = client
        self._async = job

    @property
    def info(self) -> JobInfo:
        return self._async.info

    @property
    def client(self) -> Client:
        return self._client

    def __repr__(self) -> str:
        return text.summary(self.info, "Job")

    def refresh(self) -> Job:
        """Fetch the job's current state."""
        self._client._run(self._async.refresh())
        return self

    def pause(self) -> Job:
        self._client._run(self._async.pause())
        return self

    def resume(self) -> Job:
        self._client._run(self._async.resume())
        return self

    def cancel(self) -> Job:
        self._client._run(self._async.cancel())
        return self

    def retry(self) -> Job:
        """Queue a failed or cancelled job again."""
        self._client._run(self._async.retry())
        return self

    def delete(self, *, delete_file: bool = False) -> None:
        self._client._run(self._async.delete(delete_file=delete_file))

    def events(self, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's §3 events, reconnecting by itself; ends after the terminal state."""
        return self._client._iterate(self._async.events(last_event_id=last_event_id))

    def wait(self, timeout: float | None = None, *, progress: bool = True) -> Job:
        """Block until the job is terminal; raises DownloadFailed if it failed or was cancelled.

        ``progress`` shows a widget in a notebook (updated from the client's own
        thread, so it moves while this blocks), a bar on a terminal, else nothing.
        """
        bar: TerminalBar | None = None
        if progress and in_notebook():
            self._async._show_widget_once(self._client._loop)
        elif progress:
            from bgdownload.client.terminal import TerminalBar

            bar = TerminalBar.for_stdout(self.info)
        try:
            self._client._run(
                self._async.wait(timeout, progress=False, on_update=bar.update if bar else None)
            )
        except errors.DownloadFailed as exc:
            exc.job = self
            self._settle_widgets()
            raise
        finally:
            if bar is not None:
                bar.close(self.info)
        self._settle_widgets()
        return self

    def _settle_widgets(self) -> None:
        # the widgets follow their own streams: let them draw the outcome before this
        # returns, so it is shown (and saved by headless runners) with the waiting cell
        for widget in self._async._widgets:
            widget.settle(_SETTLE_TIMEOUT)

    def _ipython_display_(self) -> None:
        if not in_notebook():
            print(repr(self))
            return
        self._async._show_widget(self._client._loop)
