"""Where a download's bytes come from: the :class:`Source` seam between the engine and a protocol.

The engine asks a source for a file's bytes from an offset and gets a
:class:`Reply`: the status, where the body starts, the file's size, its validator,
a name hint and an async iterator of the body's chunks. How the source gets there
— redirects and the destination guard for HTTP, signing for an object store — is
the source's own business. Statuses keep HTTP's vocabulary (200 the whole file,
206 a range, 416 nothing left from that offset), which an object store speaks too.
:func:`source_for` picks the source of a URL by its scheme.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bgdownload.errors import HTTPStatusError

__all__ = ["Reply", "Source", "raise_for_status", "resume_guard", "source_for"]


@dataclass(slots=True, eq=False)
class Reply:
    """A source's answer to one read: what the engine needs of it, parsed once."""

    status: int
    #: where ``body`` starts in the file: 0 for a whole file, a range's first byte;
    #: None when a range answer does not say where it starts
    start: int | None
    #: the whole file's size when the source says so (a whole body's length, the
    #: total of a range or of a 416 answer)
    total: int | None
    #: what identifies this version of the file (``etag``, ``last_modified``)
    validator: dict[str, str]
    #: the source serves byte ranges of this file
    ranges: bool
    #: how the source names the file (a ``Content-Disposition`` value)
    disposition: str | None
    #: where the bytes come from after redirects; its last path segment may name the file
    url: str
    #: seconds the source asks to wait before the next try (error answers only)
    retry_after: float | None
    #: the body's chunks as they arrive, not copied
    body: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    async def aclose(self) -> None:
        await self.close()


class Source(Protocol):
    """Reads byte ranges of files named by URLs of one or more schemes."""

    #: what ``Reply.body`` raises when the connection drops mid-body; the chunks
    #: before it are good and a later attempt resumes after them
    lost: tuple[type[Exception], ...]

    def check(self, url: str) -> str:
        """Refuse a URL this source may not read (:class:`InvalidURL`); returns it stripped."""
        ...

    async def open(self, url: str, headers: Mapping[str, str], *, start: int = 0,
                   end: int | None = None, validator: Mapping[str, str] | None = None,
                   ) -> Reply:
        """Start reading ``url`` from byte ``start`` up to ``end`` (exclusive; None: the end).

        A read that does not start at 0 or has an ``end`` is conditional on
        ``validator`` when there is one: when the file changed, the answer is the
        whole new file (200). Without one the engine checks the bytes itself.
        """
        ...

    async def aclose(self) -> None:
        ...


def source_for(url: str, sources: Mapping[str, Source]) -> Source:
    """The source of ``url``, by its scheme (``sources`` maps schemes to sources).

    A scheme no source claims goes to the ``http`` source, whose check refuses it
    with the message users already know ("only http and https URLs are allowed").
    """
    scheme = url.strip().partition(":")[0].lower() if isinstance(url, str) else ""
    return sources.get(scheme) or sources["http"]


def resume_guard(validator: Mapping[str, str]) -> str | None:
    """The validator value that makes a resumed read safe (ETag, else Last-Modified)."""
    return validator.get("etag") or validator.get("last_modified")


def raise_for_status(reply: Reply) -> None:
    """Raise :class:`HTTPStatusError` unless the status brings a body to download."""
    if reply.status >= 400:
        raise HTTPStatusError(reply.status, retry_after=reply.retry_after)
    if reply.status >= 300 or reply.status == 204:
        raise HTTPStatusError(reply.status)
