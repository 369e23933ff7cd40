"""Helpers for the client's unit tests: job bodies, SSE bodies, a scripted httpx transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

JOB_ID = "0b6f3c1e-8f5e-4a55-9a8e-1d1b5c0e2f11"


def job_json(state: str = "waiting", job_id: str = JOB_ID, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job_id, "state": state, "url": "https://example.org/video.mp4",
        "filename": "video.mp4", "path": None, "created_at": "2026-11-24T20:15:03.120Z",
        "started_at": None, "finished_at": None, "attempts": 0, "error": None, "sha256": None,
        "progress": {"loaded": 0, "total": 1000, "percent": 0.0, "speed": 0, "eta": None},
        "files": [], "metadata": {},
    }
    body.update(fields)
    return body


def sse_event(event_id: str, event: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class BrokenStream(httpx.AsyncByteStream):
    """Sends ``chunks`` then drops the connection, like a server killed mid-stream."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection dropped")


def sse_response(*chunks: bytes, broken: bool = False) -> httpx.Response:
    headers = {"Content-Type": "text/event-stream"}
    if broken:
        return httpx.Response(200, headers=headers, stream=BrokenStream(*chunks))
    return httpx.Response(200, headers=headers, content=b"".join(chunks))


class Recorder:
    """A MockTransport handler that records requests and delegates to ``route``."""

    def __init__(self, route: Callable[[httpx.Request], httpx.Response]) -> None:
        self.route = route
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.route(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]
