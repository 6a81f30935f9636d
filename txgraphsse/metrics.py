# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for an L{SSEBackend}: an optional resource (needs the
C{metrics} extra, C{prometheus_client}).

The collector reads each endpoint's L{SSEEndpoint.stats} when Prometheus
scrapes, so serving metrics costs nothing between scrapes.

With C{twistd graphsse --workers N} a scrape reaches one worker, chosen by
the kernel.  L{SharedStats} lets each one answer for all: every worker writes
a snapshot of its stats to a directory the parent made (on C{/dev/shm} where
there is one) once a second, and the collector adds the other workers'
snapshots to its own live numbers.  Counters include workers that have
ended (their last snapshot stays), so that totals never go back when a
worker is replaced; gauges count only workers whose snapshot is recent.

Channels are bounded as series: an endpoint's L{MAX_CHANNEL_SERIES}
channels with the most streams each get their own C{graphsse_channel_sessions}
series, and the rest are added up in one whose C{channel} label is
L{OTHER_CHANNELS} (C{",other"}: no channel's name holds a comma), however
many channels clients make.  A worker's snapshot is bounded the same way.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ._backend import SSEBackend

__all__ = ["MetricsResource", "SSECollector", "SharedStats"]

#: How many channels of an endpoint get a series of their own.
MAX_CHANNEL_SERIES = 100

#: The C{channel} label of the series that adds up the other channels: a
#: comma, which no channel's name holds (C{?channels=} separates them).
OTHER_CHANNELS = ",other"

_COUNTERS = {
    "events_published": "Channel events published",
    "deliveries": "Events queued for a session, one per receiver",
    "bytes_sent": "Bytes of events written to streams",
    "events_dropped": "Events dropped for slow sessions",
    "sessions_opened": "Streams opened",
    "sessions_closed": "Streams closed",
    "slow_disconnects": "Streams dropped for being too slow",
    "lagging": "Times a stream fell behind its backlog and went on from history",
    "lag_resets": "Times a lagging stream's cursor had left history",
    "stalls": "Streams dropped for making no progress",
    "refusals": "Requests refused with an error",
    "route_failures": "Client calls whose route raised",
}


#: Gauges: what a process holds now, not what it has done.
_GAUGES = ("sessions", "pending_calls", "dynamic_channels")


def _stats_of(backend: SSEBackend) -> list[Mapping[str, Any]]:
    return [e.stats() for e in backend.endpoints.values() if not e.closed]


def _bounded_channels(
    channels: Mapping[str, int], most: int = MAX_CHANNEL_SERIES
) -> dict[str, int]:
    """
    C{channels}' stream counts with at most C{most} channels by name: those
    with the most streams (ties by name), and the rest added up under
    L{OTHER_CHANNELS} (with what C{channels} had there already).
    """
    if len(channels) <= most:
        return dict(channels)
    other = channels.get(OTHER_CHANNELS, 0)
    named = [
        (name, count) for name, count in channels.items() if name != OTHER_CHANNELS
    ]
    kept = dict(heapq.nsmallest(most, named, key=lambda item: (-item[1], item[0])))
    kept[OTHER_CHANNELS] = other + sum(
        count for name, count in named if name not in kept
    )
    return kept


def _snapshot(stats: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**stats, "channels": _bounded_channels(stats.get("channels", {}))}


class SharedStats(Service):
    """
    The stats of the workers of one machine, shared through files in
    C{directory}: one C{<name>.json} per worker process.

    As a service it writes this process's snapshot every C{interval}
    seconds, and a last one, marked ended, when it stops.

    @ivar stale_after: seconds after which a snapshot's gauges no longer
        count (a worker killed without a last word).
    """

    _log = Logger()

    def __init__(
        self,
        backend: SSEBackend,
        directory: Path,
        clock: IReactorTime,
        interval: float = 1.0,
        name: str | None = None,
    ) -> None:
        """
        @param name: this process's file name among the workers': by
            default its PID, which no other running worker has.
        """
        self.backend = backend
        self.directory = directory
        self.interval = interval
        self.stale_after = 3 * interval
        self._clock = clock
        self._name = str(os.getpid()) if name is None else name
        self._loop = LoopingCall(self.publish)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()
        self.publish(live=False)

    def publish(self, live: bool = True) -> None:
        """
        Write this process's snapshot (a small file, replaced at once).
        """
        snapshot = {
            "name": self._name,
            "time": self._clock.seconds(),
            "live": live,
            # Closed endpoints too: their counters are what this worker
            # did, and its last snapshot is taken after they close.
            "endpoints": [
                _snapshot(e.stats()) for e in self.backend.endpoints.values()
            ],
        }
        target = self.directory / f"{self._name}.json"
        partial = self.directory / f".{self._name}.json.tmp"
        try:
            partial.write_text(json.dumps(snapshot))
            os.replace(partial, target)
        except OSError as error:
            self._log.warn(
                "Could not share this worker's metrics: {error}", error=error
            )

    def others(self) -> list[tuple[bool, Sequence[Mapping[str, Any]]]]:
        """
        The other workers' snapshots: whether each still counts as live,
        and its endpoints' stats.
        """
        found: list[tuple[bool, Sequence[Mapping[str, Any]]]] = []
        now = self._clock.seconds()
        try:
            entries = list(self.directory.glob("*.json"))
        except OSError:
            return []
        for entry in entries:
            if entry.name == f"{self._name}.json":
                continue
            try:
                snapshot = json.loads(entry.read_text())
                live = bool(snapshot["live"]) and (
                    now - float(snapshot["time"]) <= self.stale_after
                )
                found.append((live, list(snapshot["endpoints"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found


def _merge(
    own: Sequence[Mapping[str, Any]],
    others: Sequence[tuple[bool, Sequence[Mapping[str, Any]]]],
) -> list[dict[str, Any]]:
    """
    Add the other workers' stats to this process's, endpoint by endpoint:
    counters and histograms from all of them, gauges from live ones.
    """
    merged: dict[str, dict[str, Any]] = {}

    def add(stats: Mapping[str, Any], live: bool) -> None:
        path = stats["path"]
        into = merged.get(path)
        if into is None:
            into = merged[path] = {
                "path": path,
                "channels": {},
                "call_latency": {"sum": 0.0, "buckets": []},
                **dict.fromkeys((*_GAUGES, *_COUNTERS), 0),
            }
        for name in _COUNTERS:
            into[name] += stats.get(name, 0)
        calls = stats.get("call_latency", {})
        into["call_latency"]["sum"] += calls.get("sum", 0.0)
        buckets = into["call_latency"]["buckets"]
        for index, (bound, count) in enumerate(calls.get("buckets", [])):
            if index < len(buckets):
                buckets[index] = (buckets[index][0], buckets[index][1] + count)
            else:
                buckets.append((float(bound), count))
        if not live:
            return
        for name in _GAUGES:
            into[name] += stats.get(name, 0)
        channels = into["channels"]
        for channel, count in stats.get("channels", {}).items():
            channels[channel] = channels.get(channel, 0) + count

    for stats in own:
        add(stats, True)
    for live, endpoints in others:
        for stats in endpoints:
            add(stats, live)
    return list(merged.values())


class SSECollector:
    """
    A C{prometheus_client} collector over a backend's endpoints, and over
    the other workers' when given their L{SharedStats}.

    @ivar max_channels: how many channels of an endpoint get a series of
        their own (see L{_bounded_channels}).
    """

    def __init__(
        self,
        backend: SSEBackend,
        shared: SharedStats | None = None,
        max_channels: int = MAX_CHANNEL_SERIES,
    ) -> None:
        self.backend = backend
        self.shared = shared
        self.max_channels = max_channels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        stats: Sequence[Mapping[str, Any]] = _stats_of(self.backend)
        if self.shared is not None:
            stats = _merge(stats, self.shared.others())
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
        dynamic = GaugeMetricFamily(
            "graphsse_dynamic_channels",
            "Channels clients made, not yet dropped",
            labels=["path"],
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
            dynamic.add_metric([path], s.get("dynamic_channels", 0))
            channels = _bounded_channels(s["channels"], self.max_channels)
            for channel, count in channels.items():
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
        yield dynamic
        yield latency
        yield from counters.values()


class MetricsResource(Resource):
    """
    Serves the backend's metrics in Prometheus' text format; mount it where
    your scraper looks (C{root.putChild(b"metrics", MetricsResource(backend))}).
    """

    isLeaf = True

    def __init__(
        self,
        backend: SSEBackend,
        shared: SharedStats | None = None,
        max_channels: int = MAX_CHANNEL_SERIES,
    ) -> None:
        """
        @param max_channels: how many channels of an endpoint get a series
            of their own; the rest are added up in one.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SSECollector(backend, shared, max_channels))

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return bytes(generate_latest(self.registry))
