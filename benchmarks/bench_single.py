"""One big file over loopback: curl, aria2c, plain httpx and the bgdownload Engine.

Serves a file (1 GiB by default) from Debian's nginx (``benchmarks/nginx.py``) and
downloads it with each client in turn, ``--runs`` times, in the same run so every
client sees the same machine state. Prints a markdown table: median wall time,
min-max, throughput, ratio to curl, and the client process's peak RSS.

    python -m benchmarks.bench_single               # 1 GiB, 3 runs
    python -m benchmarks.bench_single --size 256M --runs 5

Python clients run in their own process (``--client NAME URL OUT``) and report
the time of the transfer alone, without interpreter start-up; curl and aria2c are
timed around the process (their start-up is a few milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.nginx import run_nginx  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "bgd-bench-data"


# ----------------------------------------------------------------- clients (child side)

async def _httpx_default(url: str, out: Path, hashing: bool) -> None:
    import httpx

    digest = hashlib.sha256()
    async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", url) as r:
        r.raise_for_status()
        with open(out, "wb") as f:  # noqa: ASYNC230 - the naive loop is what we measure
            async for chunk in r.aiter_bytes():
                f.write(chunk)
                if hashing:
                    digest.update(chunk)


async def _engine(url: str, out: Path, connections: int, threaded: bool = True) -> None:
    import ipaddress

    from bgdownload.config import Settings
    from bgdownload.engine.fetch import Engine, FetchSpec

    class Sink:
        def update(self, loaded: int, total: int | None) -> None:
            pass

        async def name_chosen(self, filename: str, path: str) -> None:
            pass

        async def restarted(self, note: str) -> None:
            pass

    settings = Settings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    engine = Engine(settings, threaded_writes=threaded)
    try:
        await engine.fetch(FetchSpec(url=url, root=out.parent, wished_filename=out.name,
                                     connections=connections), Sink())
    finally:
        await engine.aclose()


def run_client(name: str, url: str, out: Path) -> None:
    """Child process: download once, print {"seconds", "rss"} as JSON."""
    import resource

    jobs: dict[str, Callable[[], object]] = {
        "httpx": lambda: _httpx_default(url, out, hashing=False),
        "httpx+sha": lambda: _httpx_default(url, out, hashing=True),
        "engine": lambda: _engine(url, out, 1),
        "engine-4": lambda: _engine(url, out, 4),
        "engine-inline": lambda: _engine(url, out, 1, threaded=False),
    }
    # Import everything before the clock starts.
    import httpx  # noqa: F401

    import bgdownload.engine.fetch  # noqa: F401

    began = time.perf_counter()
    asyncio.run(jobs[name]())  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "rss": rss}))


# ----------------------------------------------------------------- parent side

def _timed(cmd: list[str]) -> tuple[float, int, float, str]:
    """Run ``cmd`` under GNU time: (wall seconds, peak RSS bytes, CPU seconds, stdout).

    GNU time reports the child's own peak RSS; ``wait4`` from this process would
    count the Python parent's pages the child held between fork and exec.
    """
    began = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M cpu=%U %S", *cmd],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    fields = proc.stderr.strip().splitlines()[-1].split()
    rss_kib = int(fields[0].partition("=")[2])
    cpu = float(fields[1].partition("=")[2]) + float(fields[2])
    return seconds, rss_kib * 1024, cpu, proc.stdout


def measure(tool: str, url: str, out: Path) -> tuple[float, int, float]:
    """(seconds, peak RSS bytes, CPU seconds user+sys of the whole client process).

    CPU over wall time shows how much of the work ran in parallel: curl is one
    thread; the engine receives, writes and hashes on three. Interpreter start-up
    counts here for the Python clients, unlike in ``seconds``.
    """
    if tool == "aria2c-4":
        seconds, rss, cpu, _ = _timed([
            "aria2c", "-q", "-x4", "-s4", "-k1M", "--file-allocation=none",
            "--allow-overwrite=true", "--auto-file-renaming=false",
            "-d", str(out.parent), "-o", out.name, url,
        ])
    elif tool == "curl":
        seconds, rss, cpu, _ = _timed(["curl", "-s", "-f", "-o", str(out), url])
    elif tool == "aria2c":
        seconds, rss, cpu, _ = _timed([
            "aria2c", "-q", "-x1", "-s1", "--file-allocation=none", "--allow-overwrite=true",
            "--auto-file-renaming=false", "--check-certificate=false",
            "-d", str(out.parent), "-o", out.name, url,
        ])
    else:
        _, rss, cpu, printed = _timed([sys.executable, "-m", "benchmarks.bench_single",
                                  "--client", tool, url, str(out)])
        report = json.loads(printed.strip().splitlines()[-1])
        seconds = float(report["seconds"])
    return seconds, rss, cpu


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text[: len(text) - len(unit)]) * units[unit])


def ensure_data(size: int) -> Path:
    DATA_DIR.mkdir(exist_ok=True)
    DATA_DIR.chmod(0o755)
    path = DATA_DIR / f"blob-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            left = size
            while left:
                block = os.urandom(min(left, 16 << 20))
                f.write(block)
                left -= len(block)
        path.chmod(0o644)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools",
                        default="curl,aria2c,httpx,httpx+sha,engine,engine-inline,engine-4")
    parser.add_argument("--location", default="files", choices=["files", "slow"])
    parser.add_argument("--client", nargs=3, metavar=("NAME", "URL", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_client(args.client[0], args.client[1], Path(args.client[2]))
        return

    size = parse_size(args.size)
    data = ensure_data(size)
    tools = args.tools.split(",")
    results: dict[str, list[tuple[float, int, float]]] = {t: [] for t in tools}
    out_dir = Path(tempfile.mkdtemp(prefix="bgd-bench-out-"))
    with run_nginx(DATA_DIR) as base:
        url = f"{base}/{args.location}/{data.name}"
        for run in range(args.runs):
            for tool in tools:
                out = out_dir / f"{tool}-{run}.bin"
                results[tool].append(measure(tool, url, out))
                if out.stat().st_size != size:
                    raise RuntimeError(f"{tool} wrote {out.stat().st_size} bytes, not {size}")
                out.unlink()
                print(f"run {run + 1}: {tool:10s} {results[tool][-1][0]:6.2f} s", file=sys.stderr)
    out_dir.rmdir()

    curl = statistics.median(s for s, _, _ in results["curl"]) if "curl" in results else None
    print(f"\n{size / (1 << 20):.0f} MiB from nginx `/{args.location}/` on 127.0.0.1, "
          f"{args.runs} runs, {os.cpu_count()} CPUs\n")
    print("| client | median s | min-max s | MiB/s | time / curl | CPU s (process) "
          "| peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tool in tools:
        times = [s for s, _, _ in results[tool]]
        med = statistics.median(times)
        ratio = f"{med / curl:.2f}" if curl else "-"
        rss = max(r for _, r, _ in results[tool]) / (1 << 20)
        cpu = statistics.median(c for _, _, c in results[tool])
        print(f"| {tool} | {med:.2f} | {min(times):.2f}-{max(times):.2f} | "
              f"{size / (1 << 20) / med:.0f} | {ratio} | {cpu:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
