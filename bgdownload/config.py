"""Settings: every ``BGDOWNLOAD_*`` variable (API.md §9), parsed and checked here only.

Values come from the environment, then from an optional settings file that
mirrors it (``KEY=VALUE`` lines; ``BGDOWNLOAD_SETTINGS_FILE``, default
``<user config dir>/bgdownload/settings.env``). The environment wins.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from bgdownload.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PREFIX = "BGDOWNLOAD_"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PERIODS = {"second": 1, "s": 1, "minute": 60, "m": 60, "min": 60, "hour": 3600, "h": 3600,
            "day": 86400, "d": 86400}


def parse_size(name: str, text: str) -> int:
    """``"500"``, ``"10M"``, ``"1.5GiB"`` → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{name}={text!r}: expected a size such as 500, 10M or 1.5GiB")
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"{name}={text!r}: must be greater than zero")
    return value


def parse_duration(name: str, text: str) -> float:
    """``"30"``, ``"90s"``, ``"12h"``, ``"7d"`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*", text)
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ConfigError(f"{name}={text!r}: expected a duration such as 30s, 12h or 7d")
    value = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"{name}={text!r}: must be greater than zero")
    return value


def parse_rate(name: str, text: str) -> tuple[int, float]:
    """``"60/minute"`` → (60, 60.0): at most 60 events per 60 seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([a-zA-Z]+)\s*", text)
    if not m or m.group(3).lower() not in _PERIODS or int(m.group(1)) <= 0:
        raise ConfigError(f"{name}={text!r}: expected a rate such as 60/minute or 10/second")
    multiplier = int(m.group(2)) if m.group(2) else 1
    return int(m.group(1)), float(_PERIODS[m.group(3).lower()] * multiplier)


def _parse_int(name: str, text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name}={text!r}: must be {bound}")
    return value


def _parse_float(name: str, text: str, minimum: float) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: must be >= {minimum}")
    return value


def parse_networks(name: str, text: str) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name}: {part!r} is not a CIDR network such as 10.0.0.0/8"
            ) from None
    return tuple(nets)


def parse_tokens(name: str, lines: list[str]) -> dict[str, str]:
    """``token:owner`` entries → {token: owner}."""
    tokens: dict[str, str] = {}
    for raw in lines:
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        token, sep, owner = entry.partition(":")
        if not sep or not token.strip() or not owner.strip():
            raise ConfigError(f"{name}: entry {_mask(entry)!r} is not of the form token:owner")
        tokens[token.strip()] = owner.strip()
    return tokens


def _mask(secret: str) -> str:
    return secret[:2] + "…" if len(secret) > 4 else "…"


def read_settings_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments, optional quotes) of a settings file."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.startswith(PREFIX):
            raise ConfigError(f"{path}:{number}: expected BGDOWNLOAD_NAME=value")
        values[key] = value.strip().strip("'\"")
    return values


def read_runtime_file(path: Path) -> dict[str, Any]:
    """The local stack's runtime record, or ``{}`` when it is missing, torn or foreign."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("bgdownload", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every setting of API.md §9, typed. Build with :meth:`from_env`."""

    redis_url: str | None = None
    download_dir: Path = field(default_factory=lambda: Path.home() / "Downloads" / "bgdownload")
    api_url: str | None = None
    token: str | None = field(default=None, repr=False)
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_networks: tuple[IPNetwork, ...] = ()
    max_bytes: int | None = None
    progress_interval: float = 0.5
    concurrency: int = 8
    connections: int = 1
    max_speed: int | None = None
    retries: int = 3
    retention: float = 7 * 86400.0
    rate_limit: tuple[int, float] = (60, 60.0)
    file_url_template: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    #: seconds a worker's unacknowledged message may stay silent before another
    #: worker takes it over (its owner renews it while the download runs)
    redelivery_timeout: float = 60.0
    #: largest request body the API accepts
    max_body: int = 1024 * 1024

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["token"] = _mask(self.token) if self.token else None
        shown["tokens"] = f"<{len(self.tokens)} tokens>"
        body = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({body})"

    @property
    def runtime_file(self) -> Path:
        """Where the local stack records what it started (pids, ports, the Redis URL)."""
        return self.state_dir / "runtime.json"

    def resolve_redis_url(self) -> str:
        """``BGDOWNLOAD_REDIS_URL``, else the local stack's Redis, else the default port."""
        if self.redis_url:
            return self.redis_url
        recorded = read_runtime_file(self.runtime_file).get("redis_url")
        return recorded if isinstance(recorded, str) else "redis://127.0.0.1:6379/0"

    @property
    def single_user(self) -> bool:
        """No tokens configured: every request belongs to the owner ``local``."""
        return not self.tokens

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse settings from ``environ`` (default ``os.environ``) and the settings file."""
        env = dict(os.environ if environ is None else environ)
        file_name = env.get(PREFIX + "SETTINGS_FILE")
        file_path = (
            Path(file_name).expanduser()
            if file_name
            else Path(platformdirs.user_config_dir("bgdownload", appauthor=False)) / "settings.env"
        )
        merged = {**read_settings_file(file_path), **env}

        def get(key: str) -> str | None:
            value = merged.get(PREFIX + key)
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        if (v := get("REDIS_URL")) is not None:
            if not re.match(r"^(redis|rediss|unix|valkey|valkeys)://", v):
                raise ConfigError(f"BGDOWNLOAD_REDIS_URL={v!r}: expected redis://host:port/db")
            kwargs["redis_url"] = v
        if (v := get("DIR")) is not None:
            kwargs["download_dir"] = Path(v).expanduser()
        if (v := get("URL")) is not None:
            if not re.match(r"^https?://", v):
                raise ConfigError(f"BGDOWNLOAD_URL={v!r}: expected http://host:port")
            kwargs["api_url"] = v.rstrip("/")
        if (v := get("TOKEN")) is not None:
            kwargs["token"] = v.strip()
        tokens: dict[str, str] = {}
        if (v := get("TOKENS_FILE")) is not None:
            try:
                lines = Path(v).expanduser().read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"BGDOWNLOAD_TOKENS_FILE={v!r}: {exc.strerror}") from None
            tokens.update(parse_tokens("BGDOWNLOAD_TOKENS_FILE", lines))
        if (v := get("TOKENS")) is not None:
            tokens.update(parse_tokens("BGDOWNLOAD_TOKENS", v.split(",")))
        kwargs["tokens"] = tokens
        if (v := get("ALLOW_NETWORKS")) is not None:
            kwargs["allow_networks"] = parse_networks("BGDOWNLOAD_ALLOW_NETWORKS", v)
        if (v := get("MAX_BYTES")) is not None:
            kwargs["max_bytes"] = parse_size("BGDOWNLOAD_MAX_BYTES", v)
        if (v := get("PROGRESS_INTERVAL")) is not None:
            kwargs["progress_interval"] = _parse_float("BGDOWNLOAD_PROGRESS_INTERVAL", v, 0.01)
        if (v := get("CONCURRENCY")) is not None:
            kwargs["concurrency"] = _parse_int("BGDOWNLOAD_CONCURRENCY", v, 1, 100_000)
        if (v := get("CONNECTIONS")) is not None:
            kwargs["connections"] = _parse_int("BGDOWNLOAD_CONNECTIONS", v, 1, 64)
        if (v := get("MAX_SPEED")) is not None:
            kwargs["max_speed"] = parse_size("BGDOWNLOAD_MAX_SPEED", v)
        if (v := get("RETRIES")) is not None:
            kwargs["retries"] = _parse_int("BGDOWNLOAD_RETRIES", v, 0, 100)
        if (v := get("RETENTION")) is not None:
            kwargs["retention"] = parse_duration("BGDOWNLOAD_RETENTION", v)
        if (v := get("RATE_LIMIT")) is not None:
            kwargs["rate_limit"] = parse_rate("BGDOWNLOAD_RATE_LIMIT", v)
        if (v := get("FILE_URL_TEMPLATE")) is not None:
            if "{file_id}" not in v:
                raise ConfigError("BGDOWNLOAD_FILE_URL_TEMPLATE must contain {file_id}")
            kwargs["file_url_template"] = v
        if (v := get("STATE_DIR")) is not None:
            kwargs["state_dir"] = Path(v).expanduser()
        if (v := get("REDELIVERY_TIMEOUT")) is not None:
            kwargs["redelivery_timeout"] = parse_duration("BGDOWNLOAD_REDELIVERY_TIMEOUT", v)
        if (v := get("MAX_BODY")) is not None:
            kwargs["max_body"] = parse_size("BGDOWNLOAD_MAX_BODY", v)
        return cls(**kwargs)  # type: ignore[arg-type]
