"""Benchmarks 1 and 5: one big file end to end through a worker, and what progress costs.

Each round downloads the same file (1 GiB; 256 MiB with ``--quick``) from nginx
``/files/`` three ways, in turn, so all see the same machine state:

* ``curl -s -f -o`` (the peer);
* a bgdownload job with the default ``progress_interval`` 0.5 s — created through
  ``Service.create`` and timed until its terminal ``state`` event arrives, so the
  figure includes the queue, the claim, the transitions and the rename;
* the same job on a second stack whose worker has progress publishing effectively
  off (``BGDOWNLOAD_PROGRESS_INTERVAL=1000000``).

    python -m benchmarks.bench_progress_overhead [--quick] [--runs N]
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable

from benchmarks.common import (
    Context,
    MiB,
    Row,
    ensure_blob,
    job_seconds,
    log,
    main_for,
    spread,
    stack,
    timed,
    warm_up,
)

OFF = "1000000"


def run(ctx: Context) -> list[Row]:
    size = (256 if ctx.quick else 1024) * MiB
    blob = ensure_blob(size)
    url = f"{ctx.base}/files/{blob.name}"
    out_dir = ctx.stack.tmp / "curl-out"
    out_dir.mkdir(exist_ok=True)
    times: dict[str, list[float]] = {"curl": [], "bgd": [], "bgd-off": []}
    worker = ctx.stack.start_worker()
    with stack() as off_stack:
        off_worker = off_stack.start_worker(BGDOWNLOAD_PROGRESS_INTERVAL=OFF)
        warm_up(ctx, ctx.stack)
        warm_up(ctx, off_stack)
        out = out_dir / "curl.bin"
        clients: dict[str, Callable[[], float]] = {
            "curl": lambda: timed(["curl", "-s", "-f", "-o", str(out), url]),
            "bgd": lambda: asyncio.run(job_seconds(ctx.stack, {"url": url}, size)),
            "bgd-off": lambda: asyncio.run(job_seconds(off_stack, {"url": url}, size)),
        }
        order = list(clients)
        for run_no in range(ctx.runs):
            # rotate the order: whoever follows a 1 GiB write pays for its writeback
            for name in order[run_no % 3:] + order[:run_no % 3]:
                times[name].append(clients[name]())
                out.unlink(missing_ok=True)
            log(f"  e2e run {run_no + 1}: curl {times['curl'][-1]:.2f} s, bgd "
                f"{times['bgd'][-1]:.2f} s, bgd progress off {times['bgd-off'][-1]:.2f} s")
        off_stack.stop(off_worker)
    ctx.stack.stop(worker)

    curl = statistics.median(times["curl"])
    bgd = statistics.median(times["bgd"])
    off = statistics.median(times["bgd-off"])
    label = f"{size // MiB} MiB"
    ratio = bgd / curl
    overhead = (bgd - off) / off * 100
    return [
        Row("1", f"{label}, 1 connection, job end to end vs `curl -o` (s)",
            spread(times["bgd"]), spread(times["curl"]), f"{ratio:.2f}x", "<= 1.1x",
            ratio <= 1.1, f"{size / MiB / bgd:.0f} vs {size / MiB / curl:.0f} MiB/s"),
        Row("5", f"{label}: progress every 0.5 s vs publishing off (s)",
            spread(times["bgd"]), spread(times["bgd-off"]) + " (off)", f"{overhead:+.1f} %",
            "< 2 %", abs(overhead) < 2.0,
            f"fastest runs: {(min(times['bgd']) / min(times['bgd-off']) - 1) * 100:+.1f} %"),
    ]


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()

