"""Start Debian's nginx on a free loopback port with a throw-away configuration.

Two locations serve the files of ``root``:

* ``/files/`` — plain static files with ``sendfile on`` (the fastest source there is);
* ``/slow/``  — the same files with ``limit_rate 20m`` per connection (a source where
  parallel ranged connections pay off).
* ``/throttled/`` — the same files at 64 KiB/s per connection (many slow downloads at once).

Usage::

    with run_nginx(Path("/tmp/data")) as base:   # "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {root}/; sendfile on; tcp_nopush on; }}
        location /slow/  {{ alias {root}/; sendfile on; limit_rate 20m; }}
        location /throttled/ {{ alias {root}/; sendfile on; limit_rate 64k; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout} s")


@contextlib.contextmanager
def run_nginx(root: Path, *, binary: str | None = None) -> Iterator[str]:
    """Serve ``root``; yields the base URL. nginx is stopped (by its pid) on exit."""
    nginx = binary or shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="bgd-nginx-"))
    tmp.chmod(0o755)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(CONFIG.format(tmp=tmp, port=port, root=root.resolve()))
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
