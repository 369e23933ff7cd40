"""The httpx transport the engine uses: aiohttp underneath, destinations guarded.

Why not httpx's own transport: on a 1 GiB loopback download it needs 1.8 times curl's
time (see ``benchmarks/README.md``). The time goes to httpcore's 64 KiB
``receive_some`` calls through anyio's stream wrappers and h11's pure-Python body
framing — several Python-level layers per 64 KiB. aiohttp parses HTTP with llhttp
(C), lets asyncio's transport read 256 KiB per ``recv`` into its buffer and hands
those buffers out without copying; the engine on it downloads *and* hashes faster
than plain httpx only downloads.
The public seam stays httpx: :class:`GuardedTransport` is an
``httpx.AsyncBaseTransport``, so the engine (and tests) speak httpx only.

Destination guard (docs/api.md §5): every connection goes to an address that passed
:func:`bgdownload.engine.addresses.address_blocked`. Names go through
:class:`GuardedResolver`, which drops blocked addresses from the DNS answer, and
aiohttp connects to exactly the addresses the resolver returned — so a second,
different DNS answer (rebinding) can never be connected to unchecked. IP-literal
hosts skip resolvers in aiohttp, so they are checked before the request. TLS SNI and
``Host`` stay the URL's host name.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from bgdownload.config import Settings
from bgdownload.engine.addresses import address_blocked, literal_host_address
from bgdownload.errors import BlockedDestination

#: aiohttp's body buffer per connection (it pauses reading at twice this). The
#: kernel's socket buffer (autotuned up to net.ipv4.tcp_rmem, 32 MiB here) absorbs
#: bursts without counting against the process's memory, so this stays small.
READ_BUFSIZE = 1024 * 1024


class GuardedResolver(AbstractResolver):
    """A resolver that only ever returns addresses outside the blocked ranges."""

    def __init__(self, settings: Settings, inner: AbstractResolver | None = None) -> None:
        self._settings = settings
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [
            r for r in results
            if not address_blocked(r["host"], self._settings.allow_networks)
        ]
        if not allowed:
            shown = ", ".join(sorted({r["host"] for r in results}))
            raise BlockedDestination(
                f"destination {host} resolves only to blocked addresses ({shown})"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as an httpx stream: one buffer per chunk, no copies."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                # readchunk hands over asyncio's receive buffers as they are;
                # readany would join everything buffered into a new bytes object.
                chunk, _ = await content.readchunk()
                if chunk:
                    yield chunk
                elif content.at_eof():
                    break
        except aiohttp.ClientPayloadError as exc:
            # On a cut connection aiohttp raises before handing out the body bytes it
            # had already received (up to read_bufsize). They are good bytes: give them
            # to the caller first, so a resume starts after them instead of before.
            buffered = getattr(content, "_buffer", None)
            while buffered:
                yield bytes(buffered.popleft())
            raise _map_error(exc) from exc
        except Exception as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        # A body not read to the end closes its connection; a finished one is reused.
        self._response.release()


def _map_error(exc: BaseException) -> BaseException:
    """aiohttp's exceptions → httpx's, so callers handle one family."""
    if isinstance(exc, (httpx.HTTPError, BlockedDestination)):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError,
                        asyncio.TimeoutError)):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(message)
    return exc


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    t: dict[str, float | None] = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        connect=t.get("pool"),
        sock_connect=t.get("connect"),
        sock_read=t.get("read"),
    )


class GuardedTransport(httpx.AsyncBaseTransport):
    """Fast httpx transport on aiohttp with the connect-time destination guard.

    One instance per worker process: it owns the connection pool, so connections to
    the same host are reused across downloads.

    >>> client = httpx.AsyncClient(transport=GuardedTransport(settings))
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_connections: int | None = None,
        keepalive_timeout: float = 30.0,
        read_bufsize: int = READ_BUFSIZE,
    ) -> None:
        self._settings = settings
        # Room for every job of the worker to open all its ranged connections.
        self._limit = max_connections or max(100, settings.concurrency * settings.connections * 2)
        self._keepalive = keepalive_timeout
        self._read_bufsize = read_bufsize
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp binds to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive,
                resolver=GuardedResolver(self._settings),
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=self._read_bufsize,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return self._session

    def _target(self, request: httpx.Request) -> str:
        """The URL to connect to; IP literals checked and spelled canonically."""
        addr = literal_host_address(request.url.host)
        if addr is None:
            return str(request.url)
        if address_blocked(addr, self._settings.allow_networks):
            raise BlockedDestination(
                f"destination {request.url.host} is in a blocked address range"
            )
        # aiohttp refuses legacy spellings such as 2130706433; the Host header keeps
        # the original spelling.
        return str(request.url.copy_with(host=str(addr)))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = self._target(request)
        session = self._get_session()
        body = await request.aread()
        headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
        ]
        try:
            response = await session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_timeout(request),
            )
        except Exception as exc:
            raise _map_error(exc) from exc
        extensions: dict[str, Any] = {
            "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
            if response.version else b"HTTP/1.1",
            "reason_phrase": (response.reason or "").encode("latin-1", errors="replace"),
        }
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            extensions=extensions,
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
