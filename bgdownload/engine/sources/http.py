"""The HTTP(S) source: GET with ranges, redirects followed hop by hop, every hop guarded.

Each hop's URL is checked (docs/api.md §5: http(s) only, no IP literal in a refused
range) before it is requested, and the caller's headers are sent only to the first
origin (:func:`headers_for_hop`). Names are checked where they are resolved, in
:class:`bgdownload.engine.transport.GuardedTransport`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

import httpx

from bgdownload.config import Settings
from bgdownload.engine.addresses import check_literal_host
from bgdownload.engine.sources import Reply, resume_guard
from bgdownload.engine.transport import GuardedTransport
from bgdownload.engine.urls import validate_url
from bgdownload.errors import NetworkError
from bgdownload.retry_after import parse_retry_after

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
#: a 416's ``Content-Range``: the file's whole size
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(0|[1-9][0-9]*)")


class HttpSource:
    """Reads http and https URLs; one instance per engine (it owns the connection pool).

    A custom ``transport`` (tests, benchmarks) gets only the per-hop literal-IP
    check; the connect-time guard lives in :class:`GuardedTransport`.
    """

    lost: tuple[type[Exception], ...] = (httpx.TransportError,)

    def __init__(self, settings: Settings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(
            transport=transport or GuardedTransport(settings),
            timeout=httpx.Timeout(30.0, read=60.0),
            follow_redirects=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "bgdownload/0.1"},
        )

    def check(self, url: str) -> str:
        return validate_url(url)

    async def open(self, url: str, headers: Mapping[str, str], *, start: int = 0,
                   end: int | None = None, validator: Mapping[str, str] | None = None,
                   ) -> Reply:
        own: dict[str, str] = {}
        if start or end is not None:
            own["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            guard = resume_guard(validator or {})
            if guard:  # none: the engine checks the bytes it asked for again (resume.py)
                own["If-Range"] = guard
        return _reply(await self._get(url, headers, own))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str, caller: Mapping[str, str],
                   own: Mapping[str, str]) -> httpx.Response:
        """GET ``url``, following up to 10 redirects, each hop checked (docs/api.md §5).

        ``caller`` are the job's headers, ``own`` the engine's (the resume range).
        """
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            validate_url(url)
            check_literal_host(url, self._settings)
            headers = {**headers_for_hop(caller, first, url), **own}
            request = self._client.build_request("GET", url, headers=headers)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise NetworkError(f"cannot reach {urlsplit(url).netloc}: {exc}") from exc
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            await response.aclose()
            url = urljoin(url, response.headers["location"])
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects")


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default one filled in) of ``url``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def headers_for_hop(caller: Mapping[str, str], first_url: str, url: str) -> dict[str, str]:
    """The caller's headers for a request to ``url`` of a download that began at ``first_url``.

    All of them go to the first origin only, as curl does without
    ``--location-trusted``: any one may be a credential (``X-Api-Key``,
    ``Private-Token``…), and a redirect elsewhere must not receive it.
    """
    return dict(caller) if origin(url) == origin(first_url) else {}


def _reply(response: httpx.Response) -> Reply:
    headers, status = response.headers, response.status_code
    start: int | None = 0
    if status == 206:
        start, total = _content_range(headers.get("content-range", ""))
    elif status == 416:
        found = _UNSATISFIED_RANGE.fullmatch(headers.get("content-range", "").strip())
        start, total = None, int(found.group(1)) if found else None
    elif headers.get("content-encoding", "identity") != "identity":
        total = None  # Content-Length then counts encoded bytes
    else:
        total = _content_length(headers.get("content-length"))
    return Reply(
        status=status,
        start=start,
        total=total,
        validator=_validator(headers),
        ranges=headers.get("accept-ranges", "").lower() == "bytes",
        disposition=headers.get("content-disposition"),
        url=str(response.url),
        retry_after=parse_retry_after(headers.get("retry-after")) if status >= 400 else None,
        body=response.aiter_raw(),
        close=response.aclose,
    )


def _validator(headers: httpx.Headers) -> dict[str, str]:
    found: dict[str, str] = {}
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):  # weak ETags are not allowed in If-Range
        found["etag"] = etag
    last_modified = headers.get("last-modified")
    if last_modified:
        found["last_modified"] = last_modified
    return found


def _content_range(value: str) -> tuple[int | None, int | None]:
    """First byte and total of a ``Content-Range``; ``(None, None)`` when unreadable."""
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None, None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def _content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
