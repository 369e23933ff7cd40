"""Client: the blocking face of :class:`~bgdownload.AsyncClient`.

Every call runs on the process's background loop (:mod:`bgdownload.client.loop`)
and the caller blocks on the result, so the protocol is written once, in ``aio``.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar, Unpack, overload

import httpx

from bgdownload.client.aio import DEFAULT_TIMEOUT, AsyncClient
from bgdownload.client.job import AsyncJob, Job
from bgdownload.client.journal import Journal
from bgdownload.client.loop import LoopThread
from bgdownload.client.options import DownloadOptions
from bgdownload.client.panel import ActivePanel
from bgdownload.models import Event, JobState

T = TypeVar("T")


class Client:
    """A blocking client of one bgdownload API; arguments as :class:`AsyncClient`.

    >>> with bgd.Client(url="http://127.0.0.1:8765", token="…") as client:
    ...     job = client.download("https://example.org/big.iso").wait()
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        journal: Journal | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_retry: float = 2.0,
        stream_max_failures: int | None = 30,
    ) -> None:
        self._runner = LoopThread.shared()
        self._async = AsyncClient(
            url, token, timeout=timeout, retries=retries, journal=journal, transport=transport,
            stream_retry=stream_retry, stream_max_failures=stream_max_failures,
        )

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def journal(self) -> Journal | None:
        return self._async.journal

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._async.aclose())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _wrap(self, job: AsyncJob) -> Job:
        return Job(self, job, self._runner)

    # -- the API of AsyncClient, blocking -------------------------------------------------------

    def download(self, url: str | None = None, **options: Unpack[DownloadOptions]) -> Job:
        """Start a download; returns at once. See :meth:`AsyncClient.download`."""
        return self._wrap(self._run(self._async.download(url, **options)))

    def get(self, job_id: str) -> Job:
        return self._wrap(self._run(self._async.get(job_id)))

    def jobs(
        self, state: str | JobState | Iterable[str | JobState] | None = None, *,
        limit: int | None = None,
    ) -> list[Job]:
        return [self._wrap(j) for j in self._run(self._async.jobs(state, limit=limit))]

    @overload
    def attach(self, job_id: str) -> Job: ...
    @overload
    def attach(self, job_id: None = None) -> list[Job]: ...
    def attach(self, job_id: str | None = None) -> Job | list[Job]:
        """One job by id, or (no id) every still-running job this machine created."""
        if job_id is None:
            return [self._wrap(j) for j in self._run(self._async.attach())]
        return self._wrap(self._run(self._async.attach(job_id)))

    def cancel(self, job_id: str) -> Job:
        return self._wrap(self._run(self._async.cancel(job_id)))

    def pause(self, job_id: str) -> Job:
        return self._wrap(self._run(self._async.pause(job_id)))

    def resume(self, job_id: str) -> Job:
        return self._wrap(self._run(self._async.resume(job_id)))

    def retry(self, job_id: str) -> Job:
        return self._wrap(self._run(self._async.retry(job_id)))

    def delete(self, job_id: str, *, delete_file: bool = False) -> None:
        self._run(self._async.delete(job_id, delete_file=delete_file))

    def health(self) -> dict[str, Any]:
        return self._run(self._async.health())

    def events(
        self, job_id: str | None = None, *, last_event_id: str | None = None
    ) -> Iterator[Event]:
        """The §3 stream of one job or of all the caller's jobs, reconnecting by itself."""
        return self._runner.iterate(self._async.events(job_id, last_event_id=last_event_id))

    def active(self) -> Any:
        """A live panel of every active download of the caller (see :func:`bgdownload.active`)."""
        return ActivePanel(self._async, self._runner.loop)
