"""A real HTTP/1.1 source server for tests, with knobs for every misbehaviour.

It is a small raw-asyncio server (no framework) so it can do what well-behaved
frameworks refuse to: drop a connection mid-body, lie about ``Content-Length``,
send hostile ``Content-Disposition`` names. It runs on its own event loop in a
background thread, bound to ``127.0.0.1`` (and, when possible, ``127.0.0.2`` on
the same port, to act as "another host").

Routes
------
``/bytes/{n}``  ``n`` deterministic bytes (see :func:`content`). Query knobs:

==================  ==============================================================
``seed=S``          which content (default ``0``)
``key=K``           names the per-URL state (counters, version); default the path+query
``ranges=0``        ignore ``Range`` and send no ``Accept-Ranges``
``chunked=1``       no ``Content-Length``; chunked transfer encoding
``rate=B``          throttle to ``B`` bytes/s
``drop=N``          the first ``N`` GETs of this key close the connection mid-body
``drop_at=B``       ... after ``B`` body bytes (default half the body)
``short=B``         always send only ``B`` bytes although ``Content-Length`` says more
``status=C``        answer ``C`` the first ``times`` requests (default 1), then succeed
``times=N``         see ``status``; ``-1`` means forever
``retry_after=V``   ``Retry-After`` value sent with ``status``
``cd=V``            raw ``Content-Disposition`` header value
``etag=0``          send no ``ETag``
``lastmod=1``       send ``Last-Modified`` (changes with the version)
``validators=0``    send neither ``ETag`` nor ``Last-Modified`` (overrides both above)
``grow=B``          content version ``v`` has ``n + v*B`` bytes (a changed length)
``change_every=N``  the version goes up by one every ``N`` GETs of the key, by itself
==================  ==============================================================

``/redirect?to=URL&code=302``  a redirect to ``URL`` (any host, also a blocked one).
``/status/{code}``             that status with a short body.

``SourceServer.change(key)`` bumps the content version of a key: new bytes, new
``ETag``, new ``Last-Modified`` — the source "changed" between two attempts. With
``validators=0`` the same length (unless ``grow``) and nothing to tell it by: the
case the engine's overlap check is for. ``SourceServer.content(n + v*grow, seed, v)``
is what version ``v`` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qs, quote, urlsplit

_WRITE_CHUNK = 64 * 1024
_EPOCH = 1_700_000_000
_REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
    410: "Gone", 416: "Range Not Satisfiable", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


@lru_cache(maxsize=16)
def content(n: int, seed: str = "0", version: int = 0) -> bytes:
    """The ``n`` bytes ``/bytes/{n}?seed=S`` serves at content version ``version``."""
    return random.Random(f"{seed}:{version}:{n}").randbytes(n)


def expected_sha256(n: int, seed: str = "0", version: int = 0) -> str:
    return hashlib.sha256(content(n, str(seed), version)).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    host: str  # the local address the request arrived on

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class _KeyState:
    hits: int = 0
    version: int = 0


@dataclass
class SourceServer:
    """Start with :meth:`start`, stop with :meth:`stop` (the ``source`` fixture does both)."""

    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    has_second_host: bool = False
    _state: dict[str, _KeyState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.Server] = field(default_factory=list)

    # ------------------------------------------------------------ test-facing helpers

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{host}:{self.port}{path}"

    def redirect_url(self, to: str, *, code: int = 302, host: str = "127.0.0.1") -> str:
        return self.url(f"/redirect?to={quote(to, safe='')}&code={code}", host=host)

    @staticmethod
    def expected_sha256(n: int, seed: str | int = "0", version: int = 0) -> str:
        return expected_sha256(n, str(seed), version)

    @staticmethod
    def content(n: int, seed: str | int = "0", version: int = 0) -> bytes:
        return content(n, str(seed), version)

    def change(self, key: str) -> int:
        """Give ``key`` new content (and a new ETag); returns the new version."""
        with self._lock:
            state = self._state.setdefault(key, _KeyState())
            state.version += 1
            return state.version

    def version(self, key: str) -> int:
        with self._lock:
            return self._state.setdefault(key, _KeyState()).version

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path == path]

    def ranged_requests(self, path: str | None = None) -> list[RecordedRequest]:
        return [r for r in list(self.requests)
                if r.range is not None and (path is None or r.path == path)]

    # ------------------------------------------------------------ lifecycle

    def start(self) -> SourceServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                for server in self._servers:
                    server.close()
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="source-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("source server did not start within 10 s")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    async def _bind(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 16)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        # A second loopback address on the same port plays "another host".
        with contextlib.suppress(OSError):
            second = await asyncio.start_server(self._serve, "127.0.0.2", self.port)
            self._servers.append(second)
            self.has_second_host = True

    # ------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = writer.get_extra_info("sockname")[0]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                parts = urlsplit(target)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                self.requests.append(RecordedRequest(method, parts.path, query, headers, local))
                keep = await self._dispatch(method, parts.path, parts.query, query, headers,
                                            writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, method: str, path: str, raw_query: str, query: dict[str, str],
                        headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; return False when the connection must be closed."""
        segments = [s for s in path.split("/") if s]
        if segments[:1] == ["bytes"] and len(segments) == 2 and segments[1].isdigit():
            key = query.get("key", path + ("?" + raw_query if raw_query else ""))
            return await self._bytes(method, int(segments[1]), key, query, headers, writer)
        if segments == ["redirect"] and "to" in query:
            code = int(query.get("code", "302"))
            await _send_head(writer, code, {"Location": query["to"], "Content-Length": "0"})
            return True
        if segments[:1] == ["status"] and len(segments) == 2 and segments[1].isdigit():
            body = f"status {segments[1]}\n".encode()
            await _send_head(writer, int(segments[1]), {"Content-Length": str(len(body))})
            writer.write(body)
            await writer.drain()
            return True
        body = b"no such route\n"
        await _send_head(writer, 404, {"Content-Length": str(len(body))})
        writer.write(body)
        await writer.drain()
        return True

    async def _bytes(self, method: str, n: int, key: str, q: dict[str, str],
                     headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        with self._lock:
            state = self._state.setdefault(key, _KeyState())
            state.hits += 1
            hit, version = state.hits, state.version

        if "status" in q:
            times = int(q.get("times", "1"))
            if times < 0 or hit <= times:
                extra = {"Content-Length": "0"}
                if "retry_after" in q:
                    extra["Retry-After"] = q["retry_after"]
                await _send_head(writer, int(q["status"]), extra)
                return True

        if "change_every" in q:
            version += (hit - 1) // max(1, int(q["change_every"]))
        n += version * int(q.get("grow", "0"))
        seed = q.get("seed", "0")
        data = content(n, seed, version)
        etag = '"' + hashlib.sha256(f"{seed}:{version}:{n}".encode()).hexdigest()[:16] + '"'
        last_modified = email.utils.formatdate(_EPOCH + version * 86400, usegmt=True)
        ranges_ok = q.get("ranges", "1") != "0"
        chunked = q.get("chunked", "0") == "1"

        out: dict[str, str] = {"Content-Type": "application/octet-stream"}
        validators = q.get("validators", "1") != "0"
        if validators and q.get("etag", "1") != "0":
            out["ETag"] = etag
        if validators and q.get("lastmod", "0") == "1":
            out["Last-Modified"] = last_modified
        if "cd" in q:
            out["Content-Disposition"] = q["cd"]
        if ranges_ok:
            out["Accept-Ranges"] = "bytes"

        status, start, end = 200, 0, n
        range_header = headers.get("range")
        if_range = headers.get("if-range")
        range_valid = if_range is None or if_range in (out.get("ETag"), out.get("Last-Modified"))
        if ranges_ok and range_header and range_valid:
            parsed = _parse_range(range_header, n)
            if parsed is None:
                await _send_head(writer, 416, {"Content-Range": f"bytes */{n}",
                                               "Content-Length": "0"})
                return True
            start, end = parsed
            status = 206
            out["Content-Range"] = f"bytes {start}-{end - 1}/{n}"
        if chunked:
            out["Transfer-Encoding"] = "chunked"
        else:
            out["Content-Length"] = str(end - start)
        await _send_head(writer, status, out)
        if method == "HEAD":
            return True

        body = memoryview(data)[start:end]
        limit = len(body)
        cut = False
        if "short" in q:
            limit, cut = min(limit, int(q["short"])), True
        drops = int(q.get("drop", "0"))
        gets = hit - int(q.get("times", "1")) if "status" in q else hit
        if drops and gets <= drops:
            drop_at = int(q.get("drop_at", str(n // 2)))
            limit, cut = min(limit, max(0, drop_at - start)), True
        rate = float(q.get("rate", "0"))
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        while sent < limit:
            piece = body[sent:min(limit, sent + _WRITE_CHUNK)]
            if chunked:
                writer.write(f"{len(piece):x}\r\n".encode() + bytes(piece) + b"\r\n")
            else:
                writer.write(piece)
            await writer.drain()
            sent += len(piece)
            if rate > 0:
                ahead = sent / rate - (loop.time() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if cut:
            # Abort (RST-free close) with the body incomplete: the client sees EOF early.
            await writer.drain()
            writer.close()
            return False
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return True


def _parse_range(header: str, n: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-s`` → half-open ``(start, end)``, or None."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            size = int(last)
            return (max(0, n - size), n) if size > 0 and n > 0 else None
        start = int(first)
        end = int(last) + 1 if last else n
    except ValueError:
        return None
    end = min(end, n)
    return (start, end) if start < end else None


async def _send_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines.append("Date: " + email.utils.formatdate(usegmt=True))
    lines.append("Server: bgdownload-test-source")
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace"))
    await writer.drain()


@contextlib.contextmanager
def running_source() -> Iterator[SourceServer]:
    server = SourceServer().start()
    try:
        yield server
    finally:
        server.stop()
