# -*- test-case-name: tests.test_metrics -*-
"""
Counts for monitoring, kept where the work happens and read only when asked.

This module owns the counters an endpoint keeps (L{Counters}) and the call
latency histogram (L{Histogram}).  Updating one is an integer addition per
reactor turn or per call, never per receiver.  It knows nothing else.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from attrs import define, field

__all__ = ["LATENCY_BUCKETS", "Counters", "Histogram"]

#: Upper bounds, in seconds, of the call latency buckets.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


@define
class Histogram:
    """
    Cumulative-on-read histogram of durations.
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """
        C{(upper bound, observations at or below it)}, the last bound being
        infinity.
        """
        out = []
        running = 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def summary(self) -> dict[str, Any]:
        """
        The count, the sum and the cumulative buckets, as plain values.
        """
        return {"count": self.count, "sum": self.total, "buckets": self.cumulative()}


@define
class Counters:
    """
    What an endpoint has done since it started.

    @ivar events_published: channel events handed to the broker.
    @ivar deliveries: events queued for a session (one per receiver).
    @ivar writes: transport writes (at most one per session per turn).
    @ivar bytes_sent: bytes of events written, chunk framing excluded.
    @ivar events_dropped: events thrown away for slow sessions.
    @ivar sessions_opened: streams opened.
    @ivar sessions_closed: streams closed.
    @ivar slow_disconnects: streams dropped for being too slow.
    @ivar lagging: times a stream fell behind by more than its backlog and
        went on from history, by a cursor.
    @ivar lag_resets: times such a stream's cursor had left history.
    @ivar stalls: streams dropped for making no progress (C{write_timeout}).
    @ivar refusals: requests refused with an error status.
    @ivar route_failures: client calls whose route raised.
    """

    events_published: int = 0
    deliveries: int = 0
    writes: int = 0
    bytes_sent: int = 0
    events_dropped: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    slow_disconnects: int = 0
    lagging: int = 0
    lag_resets: int = 0
    stalls: int = 0
    refusals: int = 0
    route_failures: int = 0
