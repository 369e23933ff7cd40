"""Event streams through a real `bgdownload serve` process: replay after a forced
disconnect and across a server restart, with no gap and no duplicate."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx

from tests.support.source_server import SourceServer


def sse(response: httpx.Response) -> Iterator[tuple[str, str, dict]]:
    """(id, event, data) of each event of a streaming response."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read(base: str, job_id: str, *, last_id: str | None = None, stop_after: int | None = None
         ) -> list[tuple[str, str, dict]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events = []
    with httpx.stream("GET", f"{base}/api/v1/downloads/{job_id}/events", headers=headers,
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse(response):
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break  # leaving the block drops the connection mid-stream
    return events


def test_reconnect_with_last_event_id_sees_exactly_what_an_unbroken_stream_saw(
    start_server, start_worker, source: SourceServer
) -> None:
    base = start_server().url
    url = source.url("/bytes/1500000?seed=sse1&rate=1000000")
    job = httpx.post(f"{base}/api/v1/downloads", json={"url": url}).json()
    # Both subscribers start before any worker runs, so both begin at the same snapshot.
    unbroken: list[tuple[str, str, dict]] = []
    follower = threading.Thread(target=lambda: unbroken.extend(read(base, job["id"])))
    follower.start()
    broken = read(base, job["id"], stop_after=1)  # the snapshot, then a forced disconnect
    start_worker()
    broken += read(base, job["id"], last_id=broken[-1][0], stop_after=3)
    broken += read(base, job["id"], last_id=broken[-1][0])
    follower.join(60)
    assert unbroken[0][1] == broken[0][1] == "snapshot"
    assert [e[0] for e in broken] == [e[0] for e in unbroken]
    assert unbroken[-1][1] == "state" and unbroken[-1][2]["state"] == "completed"
    assert any(e[1] == "progress" for e in unbroken)


def test_stream_survives_a_server_restart(start_server, start_worker, source: SourceServer) -> None:
    server = start_server()
    url = source.url("/bytes/2000000?seed=sse2&rate=1000000")
    job = httpx.post(f"{server.url}/api/v1/downloads", json={"url": url}).json()
    start_worker()
    before = read(server.url, job["id"], stop_after=4)
    server.stop()
    again = start_server(port=server.port)
    after = read(again.url, job["id"], last_id=before[-1][0])
    ids = [e[0] for e in before + after]
    assert len(ids) == len(set(ids)), "no duplicate across the restart"
    assert after[-1][2]["state"] == "completed"
    # Everything after the first event, replayed in one go, is exactly what we saw.
    full = read(again.url, job["id"], last_id=before[0][0])
    assert [e[0] for e in full] == ids[1:]
