"""
L{txgraphsse.metrics.SharedStats}: with C{--workers}, the metrics a scrape
gets from any one worker count every worker's streams and deliveries.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse.metrics import MetricsResource, SharedStats

from .test_session import SSEServer
from .test_shutdown_tls import PATH, _metrics


def scrape(case: SynchronousTestCase, resource: MetricsResource) -> dict[Any, float]:
    """
    Every sample C{resource} serves, by name and labels.
    """
    stub = StubTreq(resource)
    response = case.successResultOf(stub.get("http://x/metrics"))
    return _metrics(case.successResultOf(stub.content(response)).decode())


class SharedStatsTests(SynchronousTestCase):
    """
    Two workers, each an L{SSEServer} with its own L{SharedStats} on one
    directory.
    """

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-test-metrics-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.one, self.two = SSEServer(channels=["news"]), SSEServer()
        for server in (self.one, self.two):
            self.addCleanup(server.endpoint.terminate)
        self.shared_one = SharedStats(
            self.one.backend, directory, self.one.clock, name="one"
        )
        self.shared_two = SharedStats(
            self.two.backend, directory, self.two.clock, name="two"
        )
        self.metrics = MetricsResource(self.one.backend, self.shared_one)

    def test_every_worker_counts(self) -> None:
        """
        A scrape of one worker adds the other's last snapshot to its own
        live numbers: sessions, channel members, counters.
        """
        self.one.connect(b"?channels=news")
        self.one.connect()
        self.two.connect()
        self.two.endpoint.send({"x": 1})
        self.two.clock.advance(0)
        self.shared_two.publish()
        samples = scrape(self, self.metrics)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 3)
        self.assertEqual(samples[("graphsse_sessions_opened_total", PATH)], 3)
        self.assertEqual(samples[("graphsse_events_published_total", PATH)], 1)
        self.assertEqual(samples[("graphsse_deliveries_total", PATH)], 1)
        news = ("graphsse_channel_sessions", (("channel", "news"), *PATH))
        self.assertEqual(samples[news], 1)
        message = ("graphsse_channel_sessions", (("channel", "message"), *PATH))
        self.assertEqual(samples[message], 3)
        # Its own numbers are live, not its snapshot's.
        self.one.connect()
        self.assertEqual(scrape(self, self.metrics)[("graphsse_sessions", PATH)], 4)

    def test_ended_worker(self) -> None:
        """
        A worker that ended (its last snapshot says so) no longer holds
        streams, but what it did still counts: totals never go back when a
        worker is replaced.
        """
        self.two.connect()
        self.two.connect()
        self.shared_two.publish()
        self.assertEqual(scrape(self, self.metrics)[("graphsse_sessions", PATH)], 2)
        self.shared_two.publish(live=False)
        samples = scrape(self, self.metrics)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 0)
        self.assertEqual(samples[("graphsse_sessions_opened_total", PATH)], 2)

    def test_silent_worker(self) -> None:
        """
        A worker whose snapshot is older than C{stale_after} (killed with no
        last word) holds no streams either.
        """
        self.two.connect()
        self.shared_two.publish()
        self.one.clock.advance(self.shared_one.stale_after + 1)
        samples = scrape(self, self.metrics)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 0)
        self.assertEqual(samples[("graphsse_sessions_opened_total", PATH)], 1)

    def test_service_publishes(self) -> None:
        """
        As a service it writes a snapshot at once and every C{interval},
        and a last one, marked ended, when it stops.
        """
        self.shared_two.startService()
        self.two.connect()
        self.assertEqual(scrape(self, self.metrics)[("graphsse_sessions", PATH)], 0)
        self.two.clock.advance(self.shared_two.interval)
        self.assertEqual(scrape(self, self.metrics)[("graphsse_sessions", PATH)], 1)
        self.shared_two.stopService()
        samples = scrape(self, self.metrics)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 0)
        self.assertEqual(samples[("graphsse_sessions_opened_total", PATH)], 1)

    def test_unreadable_snapshot(self) -> None:
        """
        A file that is not a snapshot is passed over.
        """
        (self.shared_one.directory / "junk.json").write_text("{not json")
        self.one.connect()
        self.assertEqual(scrape(self, self.metrics)[("graphsse_sessions", PATH)], 1)


class MergeTests(SynchronousTestCase):
    """
    L{_merge}, the sum of several workers' stats.
    """

    def test_call_latency_adds_up(self) -> None:
        """
        The call-latency histograms of the workers add up bucket by bucket,
        their sums too, live or not.
        """
        from txgraphsse.metrics import _merge

        def stats(buckets: list[tuple[float, int]], total: float) -> dict[str, Any]:
            return {
                "path": "/sse",
                "sessions": 1,
                "channels": {},
                "call_latency": {"sum": total, "buckets": buckets},
            }

        inf = float("inf")
        merged = _merge(
            [stats([(0.1, 1), (1.0, 2), (inf, 2)], 0.5)],
            [(False, [stats([(0.1, 0), (1.0, 3), (inf, 4)], 4.0)])],
        )
        self.assertEqual(len(merged), 1)
        self.assertEqual(
            merged[0]["call_latency"],
            {"sum": 4.5, "buckets": [(0.1, 1), (1.0, 5), (inf, 6)]},
        )
        self.assertEqual(merged[0]["sessions"], 1)
