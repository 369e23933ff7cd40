"""Run the API server with Hypercorn (``bgdownload serve``).

Single-user mode (no tokens) has no authentication at all, so it listens on
loopback only unless ``insecure`` says the caller knows what they expose.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from bgdownload.config import Settings
from bgdownload.errors import BgdownloadError, ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: open event streams never end by themselves: give them this long on shutdown
GRACEFUL_TIMEOUT = 3.0


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.y.z`` and ``::1`` (with or without brackets)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str, insecure: bool) -> None:
    """Refuse a non-loopback address in single-user mode unless ``insecure``."""
    if settings.single_user and not insecure and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}: no tokens are configured, so anyone who can "
            "reach it could control this server's downloads. Set BGDOWNLOAD_TOKENS "
            "(token:owner,...) or pass --insecure to listen anyway."
        )


def bind_address(host: str, port: int) -> str:
    name = host.strip().strip("[]")
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [bind_address(host, port)]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None
    config.errorlog = "-"
    return config


def serve(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    insecure: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM. Raises :class:`BgdownloadError` for a refused address."""
    from bgdownload.server import create_app

    check_bind(settings, host, insecure)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is not between 0 and 65535")
    app = create_app(settings, host=host)
    try:
        asyncio.run(hypercorn_serve(app, hypercorn_config(host, port)))
    except OSError as exc:
        raise BgdownloadError(f"cannot listen on {bind_address(host, port)}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m bgdownload.server.serve``: the server without the CLI's imports."""
    parser = argparse.ArgumentParser(prog="python -m bgdownload.server.serve")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--insecure", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        serve(Settings.from_env(), args.host, args.port, args.insecure)
    except BgdownloadError as exc:
        parser.exit(2, f"bgdownload serve: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
