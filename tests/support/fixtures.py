"""Fixtures shared by every test tier: the real source HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.source_server import SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    """A fresh source server on 127.0.0.1 (and 127.0.0.2) on a free port.

    ``source.url("/bytes/1000?seed=a")``, ``source.requests``,
    ``source.expected_sha256(1000, "a")``; knobs in ``tests/support/source_server.py``.
    """
    server = SourceServer().start()
    try:
        yield server
    finally:
        server.stop()
