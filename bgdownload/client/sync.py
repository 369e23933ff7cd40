"""Client: the blocking face of :class:`~bgdownload.AsyncClient`.

Every call runs on one background thread that owns an asyncio loop, and the
caller blocks on the result. Two reasons: the protocol is written once (in
``aio``), and a blocking call made on a thread whose loop is running — a
notebook cell calling ``job.wait()`` inside ipykernel's loop — neither
deadlocks nor needs nest_asyncio, while notebook widgets keep moving because
their event streams run on that background loop, not the kernel's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx

from bgdownload.client.aio import DEFAULT_TIMEOUT, AsyncClient
from bgdownload.client.job import AsyncJob, Job
from bgdownload.client.journal import Journal
from bgdownload.models import Event, JobState

T = TypeVar("T")


class _LoopThread:
    """A daemon thread running an event loop, shared by every sync client of the process."""

    _instance: _LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bgdownload-client", daemon=True
        )
        self.thread.start()

    @classmethod
    def shared(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking bgdownload.Client call was made from the client's own event loop; "
                "use AsyncClient in async code"
            )
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C (or a notebook interrupt) must not leave the call running; wait for
            # the cancellation to land so async generators close on their own loop
            future.cancel()
            concurrent.futures.wait([future], timeout=5)
            raise


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
        self._runner = _LoopThread.shared()
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

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return self._runner.loop

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

    def _iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        """A blocking iterator over an async generator that lives on the loop thread."""
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def _wrap(self, job: AsyncJob) -> Job:
        return Job(self, job)

    # -- the API of AsyncClient, blocking -------------------------------------------------------

    def download(
        self,
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
        """Start a download; returns at once. See :meth:`AsyncClient.download`."""
        return self._wrap(self._run(self._async.download(
            url, filename=filename, sha256=sha256, headers=headers, files=files,
            priority=priority, max_speed=max_speed, connections=connections, metadata=metadata,
        )))

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
        return self._iterate(self._async.events(job_id, last_event_id=last_event_id))

    def active(self) -> Any:
        """A live panel of every active download of the caller (see :func:`bgdownload.active`)."""
        from bgdownload.client.widgets import ActivePanel

        return ActivePanel(self._async, self._loop)
