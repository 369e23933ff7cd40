"""Replaying event streams (issue 12, finding 11): server memory with 500 SSE clients.

One owner's event stream is filled close to its cap (9,700 events of 100 active
jobs); then 500 clients open ``GET /api/v1/events`` on one ``bgdownload
serve`` process, half of them with ``Last-Event-ID: 0-0`` (replay from the
start), half live. Reports the server's RSS before the clients, at its peak, and
once every replaying client has received the whole history (clients still
connected), and the slowest ``/healthz`` answer while they connect.

    python -m benchmarks.bench_replay [--clients 500]

Replays that read the whole history at once hold it per client; paged replays
(``XRANGE … COUNT``) hold a page.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import httpx

from benchmarks.common import MiB, RssSampler, log, proc_rss, stack
from bgdownload.models import JobState, Progress
from bgdownload.service import Service

JOBS = 100
TICKS = 95  # progress events per job: with the state events 9,700, under the stream's cap


async def fill(service: Service) -> int:
    jobs = []
    for i in range(JOBS):
        job, _ = await service.create("local", {"url": f"http://127.0.0.1:9/r{i}"})
        job, _ = await service.store.transition(job.id, JobState.ACTIVE)
        jobs.append(job)
    for tick in range(1, TICKS + 1):
        for job in jobs:
            job.progress = Progress(tick * 1000, TICKS * 1000, 1000.0)
        await service.store.publish_progress([(job, 1000) for job in jobs])
    return len(await service.store.owner_events_after("local", "0-0", count=100_000))


async def client(port: int, replay: bool, history: int, done: asyncio.Event,
                 opened: asyncio.Event, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "Last-Event-ID: 0-0\r\n" if replay else ""
    writer.write(f"GET /api/v1/events HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    opened.set()
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream answered {head[:80]!r}")
    seen, tail = 0, b""
    try:
        while not stop.is_set():
            data = await asyncio.wait_for(reader.read(1 << 16), 120) if replay else None
            if data is None:
                await stop.wait()
                break
            if not data:
                break
            seen += (tail + data).count(b"\nevent: ")
            tail = data[-7:]  # a marker split across two reads is counted once, and only once
            if seen >= history:
                done.set()
                await stop.wait()
    except TimeoutError:
        if not stop.is_set():
            raise
    finally:
        writer.close()


async def slowest_health(api: str, until: asyncio.Event) -> float:
    worst = 0.0
    async with httpx.AsyncClient(timeout=60) as http:
        while not until.is_set():
            t0 = time.perf_counter()
            with contextlib.suppress(httpx.TimeoutException):  # counted as its 60 s
                await http.get(f"{api}/healthz")
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.2)
    return worst


async def measure(api: str, port: int, pid: int, clients: int, history: int) -> dict[str, float]:
    before = proc_rss(pid)
    stop, all_open = asyncio.Event(), asyncio.Event()
    dones = [asyncio.Event() for _ in range(clients // 2)]
    openeds = [asyncio.Event() for _ in range(clients)]
    health = asyncio.create_task(slowest_health(api, all_open))
    with RssSampler([pid]) as rss:
        tasks = [asyncio.create_task(client(
            port, i % 2 == 0, history, dones[i // 2] if i % 2 == 0 else asyncio.Event(),
            openeds[i], stop)) for i in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in openeds)), 300)
        all_open.set()
        await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 600)
        await asyncio.sleep(3)  # let the server settle with every client still connected
        settled = proc_rss(pid)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"before": before / MiB, "peak": rss.peak / MiB, "settled": settled / MiB,
            "health": await health}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    args = parser.parse_args()
    with stack() as s:
        async def prepare() -> int:
            service = await Service.connect(s.settings())
            try:
                return await fill(service)
            finally:
                await service.close()

        history = asyncio.run(prepare())
        server, api = s.start_server(BGDOWNLOAD_MAX_STREAMS_PER_OWNER=str(args.clients + 10))
        port = int(api.rsplit(":", 1)[1])
        found = asyncio.run(measure(api, port, server.pid, args.clients, history))
        log(f"replay: {args.clients} SSE clients, half replaying {history} events: server RSS "
            f"{found['before']:.0f} MiB before, peak {found['peak']:.0f} MiB, "
            f"{found['settled']:.0f} MiB once replayed; slowest /healthz "
            f"{found['health']:.2f} s")


if __name__ == "__main__":
    main()
