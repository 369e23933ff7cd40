"""Shared fixtures: a real Redis server for the whole session, flushed per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bgdownload.local.redisproc import RedisProcess, start_redis

pytest_plugins = ["tests.support.fixtures", "tests.support.stack"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis: ``BGDOWNLOAD_TEST_REDIS_URL`` or one started on a free port."""
    external = os.environ.get("BGDOWNLOAD_TEST_REDIS_URL")
    if external:
        yield external
        return
    server: RedisProcess = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis_url(redis_server: str) -> AsyncIterator[str]:
    """The session's Redis, emptied before each test."""
    client = aioredis.from_url(redis_server)
    await client.flushall()
    await client.aclose()
    yield redis_server


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def download_dir(tmp_path: Path) -> Path:
    root = tmp_path / "downloads"
    root.mkdir()
    return root
