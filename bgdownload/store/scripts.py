"""The store's Lua scripts: read from ``store/lua/`` and registered with a Redis client."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` (read once per process)."""
    return files("bgdownload.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    """One registered script per ``lua/*.lua`` file, named like the file.

    A registered script runs by EVALSHA and loads itself again when Redis has
    forgotten it (a restart, ``SCRIPT FLUSH``), so only its digest crosses the wire.
    """

    create: AsyncScript
    transition: AsyncScript
    progress: AsyncScript
    claim_and_lease: AsyncScript
    lease_take: AsyncScript
    lease_renew: AsyncScript
    lease_release: AsyncScript
    delete: AsyncScript
    reserve_name: AsyncScript
    enqueue: AsyncScript
    queue_depth: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        scripts = {f.name: redis.register_script(source(f.name)) for f in dataclasses.fields(cls)}
        return cls(**scripts)
