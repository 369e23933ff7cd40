"""The source seam: picking a source by scheme, and what the HTTP source makes of answers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
import pytest

from bgdownload.config import Settings
from bgdownload.engine.sources import Reply, Source, raise_for_status, resume_guard, source_for
from bgdownload.engine.sources.http import HttpSource
from bgdownload.errors import BlockedDestination, HTTPStatusError, InvalidURL, NetworkError

Handler = Callable[[httpx.Request], httpx.Response]


class FakeSource:
    """A second kind of source, as ``s3://`` will be one."""

    lost: tuple[type[Exception], ...] = (ConnectionError,)

    def check(self, url: str) -> str:
        return url

    async def open(self, url: str, headers: Mapping[str, str], *, start: int = 0,
                   end: int | None = None, validator: Mapping[str, str] | None = None,
                   ) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def served() -> AsyncIterator[tuple[list[httpx.Request], Callable[[Handler], HttpSource]]]:
    seen: list[httpx.Request] = []
    sources: list[HttpSource] = []

    def make(handler: Handler) -> HttpSource:
        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        source = HttpSource(Settings(), transport=httpx.MockTransport(record))
        sources.append(source)
        return source

    yield seen, make
    for source in sources:
        await source.aclose()


def test_source_for_picks_by_scheme() -> None:
    http, s3 = HttpSource(Settings()), FakeSource()
    sources: dict[str, Source] = {"http": http, "https": http, "s3": s3}
    assert source_for("https://example.org/a", sources) is http
    assert source_for("  HTTP://example.org/a", sources) is http
    assert source_for("s3://bucket/key", sources) is s3
    for url in ("ftp://example.org/a", "example.org/a", "javascript:alert(1)", ""):
        assert source_for(url, sources) is http  # which refuses it:
        with pytest.raises(InvalidURL):
            http.check(url)


def test_resume_guard_prefers_the_etag() -> None:
    assert resume_guard({"etag": '"v1"', "last_modified": "Tue"}) == '"v1"'
    assert resume_guard({"last_modified": "Tue"}) == "Tue"
    assert resume_guard({}) is None


async def test_a_whole_file(served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]],
                            ) -> None:
    seen, make = served
    source = make(lambda r: httpx.Response(200, stream=httpx.ByteStream(b"hello"), headers={
        "content-length": "5", "etag": '"v1"', "last-modified": "Tue, 01 Jul 2025 00:00:00 GMT",
        "accept-ranges": "bytes", "content-disposition": "attachment; filename=a.txt"}))
    reply = await source.open("https://example.org/x", {"Authorization": "t"})
    assert (reply.status, reply.start, reply.total, reply.ranges) == (200, 0, 5, True)
    assert reply.validator == {"etag": '"v1"', "last_modified": "Tue, 01 Jul 2025 00:00:00 GMT"}
    assert reply.disposition == "attachment; filename=a.txt"
    assert reply.url == "https://example.org/x"
    assert b"".join([chunk async for chunk in reply.body]) == b"hello"
    await reply.aclose()
    assert "range" not in seen[0].headers and "if-range" not in seen[0].headers
    assert seen[0].headers["authorization"] == "t"


async def test_weak_etags_and_encoded_lengths_are_not_trusted(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    _, make = served
    source = make(lambda r: httpx.Response(200, stream=httpx.ByteStream(b"zz"), headers={
        "content-length": "2", "etag": 'W/"v1"', "content-encoding": "gzip"}))
    reply = await source.open("https://example.org/x", {})
    assert (reply.total, reply.validator, reply.ranges) == (None, {}, False)
    await reply.aclose()


async def test_a_range_is_asked_for_and_placed(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    seen, make = served
    answers = iter(["bytes 10-19/100", "bytes 10-99/*", "nonsense"])
    source = make(lambda r: httpx.Response(206, content=b"x" * 10,
                                           headers={"content-range": next(answers)}))
    got = []
    for end in (20, None, None):
        reply = await source.open("https://example.org/x", {}, start=10, end=end,
                                  validator={"etag": '"v1"'})
        got.append((reply.start, reply.total))
        await reply.aclose()
    assert got == [(10, 100), (10, None), (None, None)]
    assert [r.headers["range"] for r in seen] == ["bytes=10-19", "bytes=10-", "bytes=10-"]
    assert {r.headers["if-range"] for r in seen} == {'"v1"'}


async def test_nothing_left_and_errors(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    _, make = served
    answers = iter([httpx.Response(416, headers={"content-range": "bytes */300"}),
                    httpx.Response(416, headers={"content-range": "bytes */0300"}),
                    httpx.Response(503, headers={"retry-after": "7"}),
                    httpx.Response(204)])
    source = make(lambda r: next(answers))
    replies = [await source.open("https://example.org/x", {}, start=300) for _ in range(4)]
    assert [(r.status, r.start, r.total) for r in replies[:2]] == [(416, None, 300),
                                                                   (416, None, None)]
    with pytest.raises(HTTPStatusError) as caught:
        raise_for_status(replies[2])
    assert caught.value.retry_after == 7.0
    with pytest.raises(HTTPStatusError):
        raise_for_status(replies[3])
    raise_for_status(dataclasses.replace(replies[0], status=206))  # a body: no error
    for reply in replies:
        await reply.aclose()


async def test_redirects_drop_credentials_across_origins(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    seen, make = served

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            return httpx.Response(302, headers={"location": "/b"})
        if request.url.path == "/b":
            return httpx.Response(301, headers={"location": "https://cdn.example.net/c"})
        return httpx.Response(200, content=b"c")

    source = make(handler)
    reply = await source.open("https://example.org/a", {"Authorization": "t", "X-Keep": "1"})
    assert reply.url == "https://cdn.example.net/c"
    await reply.aclose()
    assert [r.headers.get("authorization") for r in seen] == ["t", "t", None]
    # every caller header stays with the first origin (docs/api.md §17), as with curl
    assert [r.headers.get("x-keep") for r in seen] == ["1", "1", None]


async def test_every_hop_is_checked(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    seen, make = served
    hops = iter(["http://127.0.0.1/x", "ftp://example.org/y"])
    source = make(lambda r: httpx.Response(302, headers={"location": next(hops)}))
    with pytest.raises(BlockedDestination):
        await source.open("https://example.org/a", {})
    with pytest.raises(InvalidURL):
        await source.open("https://example.org/a", {})
    assert len(seen) == 2  # neither refused hop was requested


async def test_too_many_redirects(
        served: tuple[list[httpx.Request], Callable[[Handler], HttpSource]]) -> None:
    seen, make = served
    source = make(lambda r: httpx.Response(302, headers={"location": "/again"}))
    with pytest.raises(NetworkError):
        await source.open("https://example.org/a", {})
    assert len(seen) == 11
