"""Job objects: a job's latest known state plus the calls that act on it.

:class:`AsyncJob` holds the logic; :class:`Job` is its blocking twin, running
every call on the sync client's background loop. Events applied to a job move
its fields forward (``job.state``, ``job.progress`` …); an event older than
what the job already shows is ignored, so two streams (a widget and a
``wait()``) can feed the same job. Jobs know their client only through
:class:`JobClient`, so this module depends on no client class.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from bgdownload import errors
from bgdownload.client import display, protocol, text
from bgdownload.client.display import JobWidgets
from bgdownload.client.loop import LoopThread
from bgdownload.client.protocol import ErrorInfo, JobInfo
from bgdownload.models import Event, FileEntry, JobState, Progress


class JobClient(Protocol):
    """The calls jobs and widgets make on the async client behind them (``AsyncClient``)."""

    async def get(self, job_id: str) -> AsyncJob: ...
    async def jobs(self, state: Iterable[JobState]) -> list[AsyncJob]: ...
    async def pause(self, job_id: str) -> AsyncJob: ...
    async def resume(self, job_id: str) -> AsyncJob: ...
    async def cancel(self, job_id: str) -> AsyncJob: ...
    async def retry(self, job_id: str) -> AsyncJob: ...
    async def delete(self, job_id: str, *, delete_file: bool = False) -> None: ...
    def events(
        self, job_id: str | None = None, *, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]: ...


class BlockingJobClient(Protocol):
    """The blocking client a :class:`Job` came from (``Client``), as ``job.client``."""

    def get(self, job_id: str) -> Job: ...
    def pause(self, job_id: str) -> Job: ...
    def resume(self, job_id: str) -> Job: ...
    def cancel(self, job_id: str) -> Job: ...
    def retry(self, job_id: str) -> Job: ...
    def delete(self, job_id: str, *, delete_file: bool = False) -> None: ...
    def events(
        self, job_id: str | None = None, *, last_event_id: str | None = None
    ) -> Iterator[Event]: ...


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
        """Relative to the download root (docs/api.md §1)."""
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

    def __init__(self, client: JobClient, info: JobInfo) -> None:
        self._client = client
        self._info = info
        self._order: tuple[int, int] | None = None
        self._widgets = JobWidgets(self)

    @property
    def info(self) -> JobInfo:
        return self._info

    @property
    def client(self) -> JobClient:
        return self._client

    @property
    def widgets(self) -> JobWidgets:
        """The notebook widgets showing this job (shared with its blocking twin)."""
        return self._widgets

    def __repr__(self) -> str:
        return text.summary(self._info, "AsyncJob")

    def apply(self, event: Event) -> None:
        """Move the job's fields forward by a §3 event; an older event than shown is ignored."""
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
                self.apply(event)
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
        bar = None
        if progress and on_update is None:
            bar = display.show_progress(self._widgets, asyncio.get_running_loop())
            on_update = bar.update if bar else None
        try:
            await self._follow(timeout, on_update)
        finally:
            if bar is not None:
                bar.close(self._info)
            # as Job.wait: let the widgets draw the outcome before this returns
            await self._widgets.settled()
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

    def _ipython_display_(self) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        display.show_job(self._widgets, loop, repr(self))


class Job(_Fields):
    """One job, seen through a blocking :class:`~bgdownload.Client`.

    >>> job = bgd.download("https://example.org/big.iso")
    >>> job.wait().path
    'big.iso'
    """

    def __init__(self, client: BlockingJobClient, job: AsyncJob, runner: LoopThread) -> None:
        self._client = client
        self._async = job
        self._runner = runner

    @property
    def info(self) -> JobInfo:
        return self._async.info

    @property
    def client(self) -> BlockingJobClient:
        return self._client

    def __repr__(self) -> str:
        return text.summary(self.info, "Job")

    def refresh(self) -> Job:
        """Fetch the job's current state."""
        self._runner.run(self._async.refresh())
        return self

    def pause(self) -> Job:
        self._runner.run(self._async.pause())
        return self

    def resume(self) -> Job:
        self._runner.run(self._async.resume())
        return self

    def cancel(self) -> Job:
        self._runner.run(self._async.cancel())
        return self

    def retry(self) -> Job:
        """Queue a failed or cancelled job again."""
        self._runner.run(self._async.retry())
        return self

    def delete(self, *, delete_file: bool = False) -> None:
        self._runner.run(self._async.delete(delete_file=delete_file))

    def events(self, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's §3 events, reconnecting by itself; ends after the terminal state."""
        return self._runner.iterate(self._async.events(last_event_id=last_event_id))

    def wait(self, timeout: float | None = None, *, progress: bool = True) -> Job:
        """Block until the job is terminal; raises DownloadFailed if it failed or was cancelled.

        ``progress`` shows a widget in a notebook (updated from the client's own
        thread, so it moves while this blocks), a bar on a terminal, else nothing.
        """
        widgets = self._async.widgets
        bar = display.show_progress(widgets, self._runner.loop) if progress else None
        try:
            self._runner.run(
                self._async.wait(timeout, progress=False, on_update=bar.update if bar else None)
            )
        except errors.DownloadFailed as exc:
            exc.job = self
            # the widgets follow their own streams: let them draw the outcome before this
            # returns, so it is shown (and saved by headless runners) with the waiting cell
            widgets.settle()
            raise
        finally:
            if bar is not None:
                bar.close(self.info)
        widgets.settle()
        return self

    def _ipython_display_(self) -> None:
        display.show_job(self._async.widgets, self._runner.loop, repr(self))
