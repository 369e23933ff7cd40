"""Settings: every ``BGDOWNLOAD_*`` variable (docs/api.md §9), parsed and checked here only.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

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


def _redis_url(name: str, text: str) -> str:
    if not re.match(r"^(redis|rediss|unix|valkey|valkeys)://", text):
        raise ConfigError(f"{name}={text!r}: expected redis://host:port/db")
    return text


def _api_url(name: str, text: str) -> str:
    if not re.match(r"^https?://", text):
        raise ConfigError(f"{name}={text!r}: expected http://host:port")
    return text.rstrip("/")


def _file_url_template(name: str, text: str) -> str:
    if "{file_id}" not in text:
        raise ConfigError(f"{name} must contain {{file_id}}")
    return text


def _path(name: str, text: str) -> Path:
    return Path(text).expanduser()


def _stripped(name: str, text: str) -> str:
    return text.strip()


def _tokens_file(name: str, text: str) -> dict[str, str]:
    try:
        lines = Path(text).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{name}={text!r}: {exc.strerror}") from None
    return parse_tokens(name, lines)


def _tokens_list(name: str, text: str) -> dict[str, str]:
    return parse_tokens(name, text.split(","))


_HOST_ENTRY = re.compile(
    r"\*|(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?::\d{1,5})?"
)


def parse_hosts(name: str, text: str) -> tuple[str, ...]:
    """``"downloads.example.org, 10.0.0.5:8765"`` → lower-case ``host[:port]`` entries, or ``*``."""
    hosts: list[str] = []
    for part in re.split(r"[,\s]+", text.strip().lower()):
        if not part:
            continue
        if not _HOST_ENTRY.fullmatch(part):
            raise ConfigError(
                f"{name}: {part!r} is not a host name such as downloads.example.org, "
                "downloads.example.org:8765, [::1]:8765 or *"
            )
        hosts.append(part)
    return tuple(hosts)


class Variable(NamedTuple):
    """One ``BGDOWNLOAD_*`` variable: which :class:`Settings` field it sets, and how."""

    name: str
    field: str
    #: ``(name, text) -> value``; raises :class:`ConfigError` naming the variable
    parse: Callable[[str, str], Any]
    #: the value is a mapping merged into what earlier variables set for the same field
    merge: bool = False


#: every variable :meth:`Settings.from_env` reads (besides ``BGDOWNLOAD_SETTINGS_FILE``),
#: in the order they are checked; a later ``merge`` row wins over an earlier one
VARIABLES: tuple[Variable, ...] = (
    Variable("BGDOWNLOAD_REDIS_URL", "redis_url", _redis_url),
    Variable("BGDOWNLOAD_DIR", "download_dir", _path),
    Variable("BGDOWNLOAD_URL", "api_url", _api_url),
    Variable("BGDOWNLOAD_TOKEN", "token", _stripped),
    Variable("BGDOWNLOAD_TOKENS_FILE", "tokens", _tokens_file, merge=True),
    Variable("BGDOWNLOAD_TOKENS", "tokens", _tokens_list, merge=True),
    Variable("BGDOWNLOAD_ALLOW_NETWORKS", "allow_networks", parse_networks),
    Variable("BGDOWNLOAD_ALLOWED_HOSTS", "allowed_hosts", parse_hosts),
    Variable("BGDOWNLOAD_MAX_BYTES", "max_bytes", parse_size),
    Variable("BGDOWNLOAD_PROGRESS_INTERVAL", "progress_interval",
             partial(_parse_float, minimum=0.01)),
    Variable("BGDOWNLOAD_CONCURRENCY", "concurrency",
             partial(_parse_int, minimum=1, maximum=100_000)),
    Variable("BGDOWNLOAD_OWNER_CONCURRENCY", "owner_concurrency",
             partial(_parse_int, minimum=1, maximum=100_000)),
    Variable("BGDOWNLOAD_CONNECTIONS", "connections", partial(_parse_int, minimum=1, maximum=64)),
    Variable("BGDOWNLOAD_MAX_SPEED", "max_speed", parse_size),
    Variable("BGDOWNLOAD_RETRIES", "retries", partial(_parse_int, minimum=0, maximum=100)),
    Variable("BGDOWNLOAD_RETENTION", "retention", parse_duration),
    Variable("BGDOWNLOAD_RATE_LIMIT", "rate_limit", parse_rate),
    Variable("BGDOWNLOAD_FILE_URL_TEMPLATE", "file_url_template", _file_url_template),
    Variable("BGDOWNLOAD_STATE_DIR", "state_dir", _path),
    Variable("BGDOWNLOAD_REDELIVERY_TIMEOUT", "redelivery_timeout", parse_duration),
    Variable("BGDOWNLOAD_MAX_BODY", "max_body", parse_size),
    Variable("BGDOWNLOAD_MAX_STREAMS_PER_OWNER", "max_streams_per_owner",
             partial(_parse_int, minimum=1, maximum=1_000_000)),
    Variable("BGDOWNLOAD_METRICS_TOKEN", "metrics_token", _stripped),
)


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("bgdownload", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every setting of docs/api.md §9, typed. Build with :meth:`from_env`."""

    redis_url: str | None = None
    download_dir: Path = field(default_factory=lambda: Path.home() / "Downloads" / "bgdownload")
    api_url: str | None = None
    token: str | None = field(default=None, repr=False)
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_networks: tuple[IPNetwork, ...] = ()
    #: ``Host`` names the API answers to besides loopback and its own address
    allowed_hosts: tuple[str, ...] = ()
    max_bytes: int | None = None
    progress_interval: float = 0.5
    concurrency: int = 8
    #: one owner's downloads at once per worker process; None: :attr:`owner_cap`'s default
    owner_concurrency: int | None = None
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
    #: open event streams (SSE and WebSocket) one owner may hold on one server process
    max_streams_per_owner: int = 64
    #: bearer token ``/metrics`` asks for when tokens are configured
    metrics_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["token"] = _mask(self.token) if self.token else None
        shown["tokens"] = f"<{len(self.tokens)} tokens>"
        shown["metrics_token"] = _mask(self.metrics_token) if self.metrics_token else None
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
    def owner_cap(self) -> int:
        """``BGDOWNLOAD_OWNER_CONCURRENCY``, else half the worker's slots (at least 1)."""
        return self.owner_concurrency or max(1, self.concurrency // 2)

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
        kwargs: dict[str, Any] = {}
        for variable in VARIABLES:
            text = merged.get(variable.name)
            if not text:
                continue
            value = variable.parse(variable.name, text)
            if variable.merge:
                value = {**kwargs.get(variable.field, {}), **value}
            kwargs[variable.field] = value
        return cls(**kwargs)
