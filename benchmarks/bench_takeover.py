"""Takeover time: from SIGKILL of a worker mid-download to the first byte requested by another.

Two worker processes with the default settings (redelivery timeout 60 s) share
one Redis; a throttled download runs on one of them, which is SIGKILLed; the
time until the source sees the survivor's ranged request is one sample. The
killed worker is replaced before the next run.

    python -m benchmarks.bench_takeover            # 5 runs
    python -m benchmarks.bench_takeover --runs 9
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bgdownload import keys  # noqa: E402
from bgdownload.config import Settings  # noqa: E402
from bgdownload.local.redisproc import start_redis  # noqa: E402
from bgdownload.service import Service  # noqa: E402
from tests.support.source_server import SourceServer  # noqa: E402
from tests.support.stack import WorkerProcess  # noqa: E402

SIZE = 20_000_000


async def _until(check, limit: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        await asyncio.sleep(0.02)


async def one_run(service: Service, source: SourceServer, workers: list[WorkerProcess],
                  run: int) -> float:
    """One kill; returns seconds from SIGKILL to the survivor's first request."""
    url = source.url(f"/bytes/{SIZE}?seed=t{run}&rate=500000")
    job, _ = await service.create("local", {"url": url, "filename": f"t{run}.bin"})

    async def loaded() -> bool:
        return (await service.get("local", job.id)).progress.loaded > 1_000_000

    await _until(loaded)
    lease = await service.store.redis.get(keys.lease(job.id))
    pid = int(lease.split(" ")[0].split(":")[1])
    holder = next(w for w in workers if pid in w.pids)
    before = len(source.requests_to(f"/bytes/{SIZE}"))
    holder.kill()
    killed = time.monotonic()

    async def resumed() -> bool:
        return len(source.requests_to(f"/bytes/{SIZE}")) > before

    await _until(resumed, limit=120)
    took = time.monotonic() - killed
    await service.cancel("local", job.id)
    workers.remove(holder)
    workers.append(WorkerProcess(holder.env, holder.log_path).start())
    return took


async def main(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bgd-takeover-"))
    redis = start_redis(work / "redis")
    source = SourceServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    env.update(
        BGDOWNLOAD_REDIS_URL=redis.url, BGDOWNLOAD_DIR=str(work / "dl"),
        BGDOWNLOAD_ALLOW_NETWORKS="127.0.0.0/8", BGDOWNLOAD_STATE_DIR=str(work / "state"),
        BGDOWNLOAD_SETTINGS_FILE=str(work / "none.env"),
    )
    (work / "dl").mkdir()
    workers = [WorkerProcess(env, work / f"w{i}.log").start() for i in range(2)]
    service = await Service.connect(Settings.from_env(env))
    samples = []
    try:
        for run in range(runs):
            samples.append(await one_run(service, source, workers, run))
            print(f"run {run + 1}: {samples[-1]:.1f} s", flush=True)
    finally:
        await service.close()
        for worker in workers:
            worker.stop()
        source.stop()
        redis.stop()
    print(f"SIGKILL → first byte requested by another worker: "
          f"median {statistics.median(samples):.1f} s "
          f"(min {min(samples):.1f}, max {max(samples):.1f}, {runs} runs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
