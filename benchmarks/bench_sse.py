"""Benchmark 7 (issue #3): 1,000 SSE clients on one server process.

100 jobs (each 2 MiB from nginx ``/throttled/`` at 64 KiB/s, so they stay active
for the whole measurement) run in one worker with ``progress_interval`` 0.5 s, and
1,000 clients (200 with ``--quick``) follow them through
``GET /api/v1/downloads/{id}/events`` on one ``bgdownload serve`` process, ten per job.

The load generator is two processes of raw asyncio sockets (HTTP/1.0, so the body
is the plain event stream). For every ``progress`` event it records the latency
from the worker's publish — the event id's millisecond part is the Redis time of
the ``XADD`` — to its receipt. Reports delivered events/s, p50/p99 latency, and the
server process's peak RSS and CPU share over the measured window.

    python -m benchmarks.bench_sse [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import (
    Context,
    MiB,
    Row,
    RssSampler,
    context,
    ensure_file,
    log,
    markdown_table,
    proc_cpu,
)
from bgdownload.service import Service

JOBS = 100
GENERATORS = 2


# ----------------------------------------------------------------- load generator (child)

async def _follow(host: str, port: int, job_id: str, ready: asyncio.Event,
                  window: list[float], latencies: list[float], gate: asyncio.Semaphore) -> None:
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /api/v1/downloads/{job_id}/events HTTP/1.0\r\n"
                         f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"stream answered {head[:100]!r}")
    finally:
        ready.set()  # a failed client counts as an error, it does not hold up the window
    buffer = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now = time.time() * 1000
            buffer += data
            *blocks, buffer = buffer.split(b"\n\n")
            if not window[0] or now < window[0]:
                continue
            for block in blocks:
                if b"event: progress" not in block:
                    continue
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        latencies.append(now - int(line[4:].split(b"-")[0]))
    finally:
        writer.close()


async def _generate(api: str, ids: list[str], duration: float) -> dict[str, object]:
    parts = urlsplit(api)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    gate = asyncio.Semaphore(16)  # a ramp: 16 opening at a time per generator
    window = [0.0]
    latencies: list[float] = []
    readies = [asyncio.Event() for _ in ids]
    tasks = [asyncio.create_task(_follow(host, port, job_id, ready, window, latencies, gate))
             for job_id, ready in zip(ids, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    window[0] = time.time() * 1000
    await asyncio.sleep(duration)
    window[0] = float("inf")
    errors = [t for t in tasks if t.done() and t.exception()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"latencies": latencies, "errors": len(errors)}


def client_main(api: str, ids_file: str, duration: float) -> None:
    ids = Path(ids_file).read_text().split()
    print(json.dumps(asyncio.run(_generate(api, ids, duration))))


# ----------------------------------------------------------------- parent

async def _start_jobs(ctx: Context, url: str) -> list[str]:
    service = await Service.connect(ctx.stack.settings())
    try:
        ids = [(await service.create("local", {"url": url, "filename": f"sse{i}.bin"}))[0].id
               for i in range(JOBS)]
        deadline = time.monotonic() + 60
        while (await service.store.state_counts())["active"] < JOBS:
            if time.monotonic() > deadline:
                raise TimeoutError("the SSE benchmark's jobs did not all start")
            await asyncio.sleep(0.1)
    finally:
        await service.close()
    return ids


def run(ctx: Context) -> list[Row]:
    clients = 200 if ctx.quick else 1000
    duration = 8.0 if ctx.quick else 20.0
    blob = ensure_file("throttled-2m.bin", 2 * MiB)
    ctx.stack.flush()
    worker = ctx.stack.start_worker(BGDOWNLOAD_CONCURRENCY=str(JOBS))
    server, api = ctx.stack.start_server()
    try:
        ids = asyncio.run(_start_jobs(ctx, f"{ctx.base}/throttled/{blob.name}"))
        per = clients // GENERATORS
        files = []
        for g in range(GENERATORS):
            path = ctx.stack.tmp / f"sse-ids-{g}.txt"
            path.write_text("\n".join(ids[(g * per + i) % JOBS] for i in range(per)))
            files.append(path)
        with RssSampler([server.pid]) as rss:
            procs = [subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_sse", "--client", api, str(f),
                 str(duration)], stdout=subprocess.PIPE, text=True) for f in files]
            # the window opens once every client is connected: wait for the ramp, then
            # take the server's CPU over the measured part only (approximately)
            time.sleep(min(5.0, duration / 4))
            cpu0, t0 = proc_cpu(server.pid), time.perf_counter()
            outputs = [p.communicate(timeout=duration + 180)[0] for p in procs]
            cpu = (proc_cpu(server.pid) - cpu0) / (time.perf_counter() - t0)
    finally:
        ctx.stack.stop(server)
        ctx.stack.stop(worker)
        ctx.stack.flush()
    if os.environ.get("BGD_BENCH_DEBUG"):
        log(server.log()[-4000:])
    if any(not o.strip() for o in outputs):
        raise RuntimeError(f"a load generator failed; server log:\n{server.log()[-3000:]}")
    results = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = sum(r["errors"] for r in results)
    if not latencies:
        raise RuntimeError("no progress events arrived")
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99)]
    rate = len(latencies) / duration
    expected = clients / 0.5  # the most: every job publishes at most every 0.5 s
    log(f"  sse: {len(latencies)} events in {duration:.0f} s ({rate:.0f}/s; at most "
        f"{expected:.0f}/s), "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, server RSS {rss.peak / MiB:.0f} MiB, "
        f"CPU {cpu * 100:.0f} %, {errors} client errors")
    return [
        Row("7", f"{clients} SSE clients on 1 server, {JOBS} active jobs: p50 / p99 latency (ms)",
            f"{p50:.0f} / {p99:.0f}", "-", "-", "p99 < 250 ms", p99 < 250 and errors == 0,
            f"{rate:.0f} events/s delivered (at most {expected:.0f}); {errors} client errors"),
        Row("7", f"{clients} SSE clients: server peak RSS (MiB), CPU", f"{rss.peak / MiB:.0f}",
            "-", "-", "RSS < 300 MiB", rss.peak < 300 * MiB,
            f"server CPU {cpu * 100:.0f} % of one core"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--client", nargs=3, metavar=("API", "IDS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client[0], args.client[1], float(args.client[2]))
        return
    with context(args.quick, args.runs) as ctx:
        print(markdown_table(run(ctx)))


if __name__ == "__main__":
    main()
