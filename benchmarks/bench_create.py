"""Benchmark 8 (issue #3): job creation throughput through ``POST /api/v1/downloads``.

No worker runs, so only the API server and Redis work. One client process keeps
``CONNECTIONS`` keep-alive connections open and sends creates back to back on each
(a minimal HTTP/1.1 client on raw asyncio streams, so the load generator is not
what is measured). Reports jobs/s and the server's CPU per job.

    python -m benchmarks.bench_create [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

from benchmarks.common import Context, Row, log, main_for, proc_cpu

CONNECTIONS = 32


async def _post_loop(host: str, port: int, body: bytes, count: int, done: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST /api/v1/downloads HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != 202:
                raise RuntimeError(f"create answered {status}")
            done[0] += 1
    finally:
        writer.close()


async def create_rate(api: str, url: str, total: int) -> float:
    parts = urlsplit(api)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps({"url": url}).encode()
    done = [0]
    per = total // CONNECTIONS
    began = time.perf_counter()
    await asyncio.gather(*(_post_loop(host, port, body, per, done) for _ in range(CONNECTIONS)))
    return done[0] / (time.perf_counter() - began)


def run(ctx: Context) -> list[Row]:
    total = 1024 if ctx.quick else 4096
    ctx.stack.flush()
    server, api = ctx.stack.start_server()
    url = f"{ctx.base}/files/blob-1048576.bin"
    rates: list[float] = []
    try:
        asyncio.run(create_rate(api, url, CONNECTIONS * 4))  # warm up the connection pools
        for run_no in range(ctx.runs):
            cpu0 = proc_cpu(server.pid)
            rates.append(asyncio.run(create_rate(api, url, total)))
            cpu_per_job = (proc_cpu(server.pid) - cpu0) / total * 1000
            log(f"  create run {run_no + 1}: {rates[-1]:.0f} jobs/s, server CPU "
                f"{cpu_per_job:.2f} ms/job")
    finally:
        ctx.stack.stop(server)
        ctx.stack.flush()
    best = statistics.median(rates)
    return [Row(
        "8", f"job creation, `POST /api/v1/downloads`, {CONNECTIONS} keep-alive connections "
        "(jobs/s)",
        f"{best:.0f} ({min(rates):.0f}-{max(rates):.0f})", "-", "-", ">= 1000/s",
        best >= 1000, f"server CPU {cpu_per_job:.2f} ms/job",
    )]


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
