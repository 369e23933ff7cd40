"""``GET /metrics``: Prometheus text built from ``Service.stats()`` and this process's streams.

Job counts, bytes and queue depth live in Redis and are shared by every server
process, so they are read at scrape time rather than mirrored in counters
here; only the number of open event streams is this process's own.

The figures cover every owner, so no owner's token opens them: with tokens
configured (or ``BGDOWNLOAD_METRICS_TOKEN`` set) a scrape must present
``Authorization: Bearer <BGDOWNLOAD_METRICS_TOKEN>`` (docs/api.md §17).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Blueprint, Response, current_app, request

from bgdownload.errors import Unauthorized
from bgdownload.server.auth import bearer_token
from bgdownload.server.state import service, settings
from bgdownload.service import Stats

METRICS_KEY = "bgdownload.metrics"

metrics_bp = Blueprint("metrics", __name__)


class StreamCounter:
    """Open SSE and WebSocket clients of this process, by kind."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {"sse": 0, "websocket": 0}

    def opened(self, kind: str) -> None:
        self.open[kind] = self.open.get(kind, 0) + 1

    def closed(self, kind: str) -> None:
        self.open[kind] = max(0, self.open.get(kind, 0) - 1)


class ServerMetrics(Collector):
    """A collector over the latest stats snapshot; one registry per app, so tests
    that build many apps never collide in prometheus-client's global registry."""

    def __init__(self) -> None:
        self.streams = StreamCounter()
        self.registry = CollectorRegistry(auto_describe=False)
        self._stats: Stats | None = None
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        if stats is not None:
            jobs = GaugeMetricFamily(
                "bgdownload_jobs", "Jobs currently in each state", labels=["state"]
            )
            for state, count in sorted(stats.jobs_by_state.items()):
                jobs.add_metric([state], count)
            yield jobs
            yield CounterMetricFamily(
                "bgdownload_downloaded_bytes",
                "Bytes downloaded by all workers",
                value=stats.bytes_downloaded,
            )
            yield GaugeMetricFamily(
                "bgdownload_queue_depth", "Jobs waiting for a worker", value=stats.queue_depth
            )
            yield GaugeMetricFamily(
                "bgdownload_workers", "Workers seen recently", value=stats.workers
            )
        clients = GaugeMetricFamily(
            "bgdownload_stream_clients",
            "Open event-stream clients of this server process",
            labels=["kind"],
        )
        for kind, count in sorted(self.streams.open.items()):
            clients.add_metric([kind], count)
        yield clients

    async def render(self) -> bytes:
        self._stats = await service().stats()
        return generate_latest(self.registry)


def server_metrics() -> ServerMetrics:
    metrics: ServerMetrics = current_app.extensions[METRICS_KEY]
    return metrics


def check_scraper(authorization: str | None) -> None:
    """Let a scrape through, or raise :class:`Unauthorized` (see the module docstring)."""
    config = settings()
    expected = config.metrics_token
    if expected is None and config.single_user:
        return  # the tokenless single-user server of docs/api.md §4
    if expected is None:
        raise Unauthorized("/metrics is closed: set BGDOWNLOAD_METRICS_TOKEN to scrape it")
    presented = bearer_token(authorization) or ""
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("/metrics needs Authorization: Bearer <BGDOWNLOAD_METRICS_TOKEN>")


@metrics_bp.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format: jobs by state, bytes, queue depth, workers, stream clients."""
    check_scraper(request.headers.get("Authorization"))
    body = await server_metrics().render()
    return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)
