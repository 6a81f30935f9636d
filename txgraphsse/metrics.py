# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for an L{SSEBackend}: an optional resource (needs the
C{metrics} extra, C{prometheus_client}).

The collector reads each endpoint's L{SSEEndpoint.stats} when Prometheus
scrapes, so serving metrics costs nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from ._backend import SSEBackend

__all__ = ["MetricsResource", "SSECollector"]

_COUNTERS = {
    "events_published": "Channel events published",
    "deliveries": "Events queued for a session, one per receiver",
    "bytes_sent": "Bytes of events written to streams",
    "events_dropped": "Events dropped for slow sessions",
    "sessions_opened": "Streams opened",
    "sessions_closed": "Streams closed",
    "slow_disconnects": "Streams dropped for being too slow",
    "refusals": "Requests refused with an error",
    "route_failures": "Client calls whose route raised",
}


class SSECollector:
    """
    A C{prometheus_client} collector over a backend's endpoints.
    """

    def __init__(self, backend: SSEBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        stats = [e.stats() for e in self.backend.endpoints.values() if not e.closed]
        sessions = GaugeMetricFamily(
            "graphsse_sessions", "Open streams", labels=["path"]
        )
        members = GaugeMetricFamily(
            "graphsse_channel_sessions",
            "Streams per channel",
            labels=["path", "channel"],
        )
        pending = GaugeMetricFamily(
            "graphsse_pending_calls", "Server-to-client calls waiting", labels=["path"]
        )
        latency = HistogramMetricFamily(
            "graphsse_call_latency_seconds",
            "Server-to-client call round trips",
            labels=["path"],
        )
        counters = {
            name: CounterMetricFamily(f"graphsse_{name}", text, labels=["path"])
            for name, text in _COUNTERS.items()
        }
        for s in stats:
            path = s["path"]
            sessions.add_metric([path], s["sessions"])
            pending.add_metric([path], s["pending_calls"])
            for channel, count in s["channels"].items():
                members.add_metric([path, channel], count)
            for name, family in counters.items():
                family.add_metric([path], s[name])
            calls = s["call_latency"]
            latency.add_metric(
                [path],
                # floatToGoString: the last bound is "+Inf", as the format says.
                [(floatToGoString(bound), count) for bound, count in calls["buckets"]],
                calls["sum"],
            )
        yield sessions
        yield members
        yield pending
        yield latency
        yield from counters.values()


class MetricsResource(Resource):
    """
    Serves the backend's metrics in Prometheus' text format; mount it where
    your scraper looks (C{root.putChild(b"metrics", MetricsResource(backend))}).
    """

    isLeaf = True

    def __init__(self, backend: SSEBackend) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SSECollector(backend))

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return bytes(generate_latest(self.registry))
