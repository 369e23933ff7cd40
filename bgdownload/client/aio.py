"""AsyncClient: the Python API of docs/api.md §10 over HTTP, awaitable.

This is the one implementation of the client's I/O; :class:`bgdownload.Client`
runs it on a background event loop and blocks on the results.

    async with bgd.AsyncClient(url="http://127.0.0.1:8765") as client:
        job = await client.download("https://example.org/big.iso")
        await job.wait()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Unpack, overload

import httpx

from bgdownload import errors
from bgdownload.client import discovery, protocol
from bgdownload.client.job import AsyncJob
from bgdownload.client.journal import Journal
from bgdownload.client.options import DownloadOptions
from bgdownload.client.panel import ActivePanel
from bgdownload.client.protocol import Call, JobInfo, RetryPolicy
from bgdownload.client.sse import EventSource
from bgdownload.models import Event, JobState, parse_states

#: connect fast (a refused local stack should say so at once), read patiently
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: the server sends a keep-alive comment every 15 s, so 45 s of silence is a dead stream
STREAM_READ_TIMEOUT = 45.0


class AsyncClient:
    """Talks to one bgdownload API. ``url``/``token`` default to the environment.

    ``journal`` records the ids this machine creates (for ``attach()``): ``True``
    uses the state dir's journal, ``False`` none, or pass a :class:`Journal`.
    ``transport`` is httpx's seam for tests (``httpx.MockTransport``).
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
        if url is None or journal is True:
            settings = discovery.resolve_settings()
            if url is None:
                url, env_token = discovery.resolve_api(settings)
                token = token if token is not None else env_token
            if journal is True:
                journal = Journal.in_state_dir(settings.state_dir)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.InvalidRequest(f"url={url!r}: expected the API's http(s)://host:port")
        self.url = url.rstrip("/")
        self.journal: Journal | None = journal or None
        self._retry = RetryPolicy(retries=retries)
        self._stream_retry = stream_retry
        self._stream_max_failures = stream_max_failures
        headers = {"User-Agent": "bgdownload-client", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    async def _send(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying what is safe to retry, and map failures to errors.py."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, params=dict(call.params) or None,
                    json=call.json, headers=dict(call.headers),
                )
            except httpx.TransportError as exc:
                if not self._retry.retry_exception(call, exc, attempt):
                    raise protocol.transport_error(exc, self.url) from exc
            else:
                if not self._retry.retry_response(call, response, attempt):
                    protocol.raise_for_response(response)
                    return response
            await asyncio.sleep(self._retry.delay(attempt))
            attempt += 1

    async def _job(self, call: Call) -> AsyncJob:
        response = await self._send(call)
        return AsyncJob(self, JobInfo.from_dict(response.json()))

    # -- jobs ----------------------------------------------------------------------------------

    async def download(
        self, url: str | None = None, **options: Unpack[DownloadOptions]
    ) -> AsyncJob:
        """Start a download (docs/api.md §2 ``POST /downloads``); returns at once.

        ``options`` are :class:`~bgdownload.client.options.DownloadOptions`:
        ``filename``, ``sha256``, ``headers``, ``files``, ``priority``,
        ``max_speed``, ``connections``, ``metadata``.
        """
        job = await self._job(protocol.create_call(url, **options))
        if self.journal is not None:
            self.journal.record(job.id, self.url)
        return job

    async def get(self, job_id: str) -> AsyncJob:
        """One job by id; :class:`~bgdownload.errors.NotFound` if it is not the caller's."""
        return await self._job(protocol.get_call(job_id))

    async def jobs(
        self, state: str | JobState | Iterable[str | JobState] | None = None, *,
        limit: int | None = None,
    ) -> list[AsyncJob]:
        """The caller's jobs, newest first, following pages up to ``limit``."""
        states = parse_states(state)
        found: list[AsyncJob] = []
        cursor: str | None = None
        while limit is None or len(found) < limit:
            page = 500 if limit is None else min(500, limit - len(found))
            response = await self._send(protocol.list_call(states, limit=page, cursor=cursor))
            body = response.json()
            found.extend(AsyncJob(self, JobInfo.from_dict(item)) for item in body["items"])
            cursor = body.get("next")
            if not cursor or not body["items"]:
                break
        return found

    @overload
    async def attach(self, job_id: str) -> AsyncJob: ...
    @overload
    async def attach(self, job_id: None = None) -> list[AsyncJob]: ...
    async def attach(self, job_id: str | None = None) -> AsyncJob | list[AsyncJob]:
        """One job by id, or (no id) every still-running job this machine created."""
        if job_id is not None:
            return await self.get(job_id)
        if self.journal is None:
            return []
        mine = set(self.journal.ids())
        if not mine:
            return []
        running = await self.jobs(protocol.LIVE_STATES)
        return [job for job in running if job.id in mine]

    async def cancel(self, job_id: str) -> AsyncJob:
        return await self._job(protocol.control_call(job_id, "cancel"))

    async def pause(self, job_id: str) -> AsyncJob:
        return await self._job(protocol.control_call(job_id, "pause"))

    async def resume(self, job_id: str) -> AsyncJob:
        return await self._job(protocol.control_call(job_id, "resume"))

    async def retry(self, job_id: str) -> AsyncJob:
        return await self._job(protocol.control_call(job_id, "retry"))

    async def delete(self, job_id: str, *, delete_file: bool = False) -> None:
        """Forget a job (cancelling it first if running); optionally delete its file."""
        await self._send(protocol.delete_call(job_id, delete_file=delete_file))

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"redis": "ok", "workers": N}``; ServerUnavailable on 503."""
        response = await self._send(Call("GET", "/healthz", idempotent=True))
        result: dict[str, Any] = response.json()
        return result

    # -- events --------------------------------------------------------------------------------

    def events(
        self, job_id: str | None = None, *, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """The §3 stream of one job (or of all the caller's jobs), reconnecting by itself.

        A job's stream never ends by itself here; :meth:`AsyncJob.events` stops
        after the terminal state event.
        """
        path = protocol.events_path(job_id)
        source = EventSource(
            lambda last: self._open_stream(path, last), last_event_id=last_event_id,
            retry=self._stream_retry, max_failures=self._stream_max_failures,
        )
        return source.__aiter__()

    def active(self) -> Any:
        """A live panel of the caller's active downloads, driven on the running loop."""
        return ActivePanel(self, asyncio.get_running_loop())

    @asynccontextmanager
    async def _open_stream(
        self, path: str, last_event_id: str | None
    ) -> AsyncIterator[httpx.Response]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = self._http.timeout
        stream_timeout = httpx.Timeout(
            connect=timeout.connect, read=STREAM_READ_TIMEOUT, write=timeout.write,
            pool=timeout.pool,
        )
        try:
            async with self._http.stream(
                "GET", path, headers=headers, timeout=stream_timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise protocol.error_from_response(response)
                yield response
        except httpx.ConnectError as exc:
            # keep ConnectError retryable by the event source, but with our clear message
            raise protocol.transport_error(exc, self.url) from exc
