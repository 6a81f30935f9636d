"""
Dynamic channels (C{dynamic_channels=True}): the names a client may give
them, how long they live once empty, the cap on how many exist, and the
bounded metrics of many of them; in memory on a Clock, and on real sockets
(with the in-memory broker, and with Redis keeping the history).
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from treq.testing import StubTreq
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer_only

from txgraphsse import (
    HistoryPolicy,
    IBroker,
    InMemoryBroker,
    Limits,
    SSEEndpoint,
    SSEResource,
    SSESession,
)
from txgraphsse._streams import Streams
from txgraphsse.metrics import MetricsResource, SharedStats

from .test_integration import RawHTTP, _poll, _RealSocketCase, dechunk
from .test_leaks import _empty_tables
from .test_redis import RedisTestCase, until
from .test_session import Response, SSEServer, StreamConnection
from .test_shutdown_tls import _metrics

#: Bytes of Python memory that 10,000 dynamic channels coming and going may
#: leave behind (their names alone would hold over half a megabyte, and the
#: tables they filled as much again).
NAMES_GROWTH_BOUND = 100 * 1024


def _query(*names: str) -> bytes:
    """
    C{?channels=} naming C{names}, each percent-encoded.
    """
    return b"?channels=" + ",".join(quote(n, safe="") for n in names).encode()


def _error(response: Response) -> tuple[int, str, str]:
    """
    The status, code and message of a JSON refusal.
    """
    body = json.loads(response.body)
    return response.status, body["error"]["code"], body["error"]["message"]


def _quiet(case: SynchronousTestCase) -> None:
    """
    Until an application begins logging, twisted.logger keeps every event
    for it: thousands of streams' lines go nowhere here instead.
    """
    quiet = Logger(observer=lambda event: None)
    for cls in (SSEEndpoint, SSEResource, SSESession, Streams):
        case.patch(cls, "_log", quiet)


def _kept(server: SSEServer) -> dict[str, Any]:
    """
    The channels whose history the in-memory broker keeps, by name.
    """
    broker = server.backend.broker
    assert isinstance(broker, InMemoryBroker)
    state = broker._endpoints.get("/sse")
    return {} if state is None else dict(state.history)


def _dynamic_server(**options: Any) -> SSEServer:
    options.setdefault("keepalive", 0)
    options.setdefault("on_connection", None)
    options.setdefault("on_connection_close", None)
    return SSEServer(dynamic_channels=True, **options)


class NameTests(SynchronousTestCase):
    """
    The names a client may give a dynamic channel: printable, and at most
    C{channel_table.max_name} characters.
    """

    def assertRefused(self, server: SSEServer, name: str) -> None:
        connection = server.connect(_query("ok", name))
        status, code, message = _error(connection.response())
        self.assertEqual((status, code), (400, "bad_channel"), name)
        self.assertLess(len(message), 200)
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(set(server.endpoint.channels), {"message"})

    def test_unprintable_refused(self) -> None:
        """
        A name with NUL, CR, LF, another control character, U+2028, U+2029,
        a bidi override or a no-break space is refused with C{400
        bad_channel} as JSON, and neither it nor the others the stream asked
        for are made.
        """
        server = _dynamic_server()
        for name in (
            "a\x00b",
            "a\rb",
            "a\nb",
            "a\r\nb",
            "a\x1bb",
            "a\x7fb",
            "a\u2028b",
            "a\u2029b",
            "a\u202eb",
            "a\xa0b",
        ):
            self.assertRefused(server, name)

    def test_too_long_refused(self) -> None:
        """
        A name over 128 characters is refused; one of 128 is taken.  The
        refusal does not echo the whole name.
        """
        server = _dynamic_server()
        self.assertRefused(server, "x" * 129)
        connection = server.connect(_query("y" * 128))
        self.assertEqual(connection.response().status, 200)
        self.assertIn("y" * 128, server.endpoint.channels)

    def test_bound_is_the_endpoints(self) -> None:
        """
        The bound is the endpoint's C{channel_table.max_name}.
        """
        server = _dynamic_server()
        server.endpoint.channel_table.max_name = 8
        self.assertRefused(server, "x" * 9)
        self.assertEqual(server.connect(_query("x" * 8)).response().status, 200)

    def test_printable_taken(self) -> None:
        """
        Printable names beyond ASCII, with inner spaces and punctuation,
        open a stream on a channel of that name.
        """
        server = _dynamic_server()
        names = ("caf\xe9-\xfc", "room 12", "user:42/inbox", "\u65e5\u672c")
        session = server.session(server.connect(_query(*names)))
        self.assertEqual(session.channels, ("message", *names))

    def test_configured_unchanged(self) -> None:
        """
        Configured channels are held to the old rule only: one of 200
        characters is joined, as before, on a dynamic endpoint too.
        """
        long = "c" * 200
        server = _dynamic_server(channels=[long])
        session = server.session(server.connect(_query(long)))
        self.assertIn(long, session.channels)
        self.assertFalse(server.endpoint.channels[long].dynamic)


class LifetimeTests(SynchronousTestCase):
    """
    An empty dynamic channel goes once its history has aged out, on the
    endpoint's clock.
    """

    def test_no_history_goes_at_once(self) -> None:
        """
        Without history, a dynamic channel goes at the turn after its last
        member leaves; not before, and not while another member stays.
        """
        server = _dynamic_server()
        one = server.connect(_query("a"))
        two = server.connect(_query("a"))
        server.turn()
        self.assertIn("a", server.endpoint.channels)
        self.assertTrue(server.endpoint.channels["a"].dynamic)
        server.session(one).close()
        server.turn()
        self.assertIn("a", server.endpoint.channels)
        two.disconnect()
        server.turn()
        self.assertNotIn("a", server.endpoint.channels)
        self.assertEqual(server.endpoint.channel_table.dynamic_count, 0)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_history_kept_until_aged(self) -> None:
        """
        With history, an empty dynamic channel stays while its events are
        kept (a reconnecting client gets them), and goes, with its history,
        once the newest has aged out.
        """
        server = _dynamic_server(history=HistoryPolicy(10, age=30))
        connection = server.connect(_query("a"))
        channel = server.endpoint.channels["a"]
        server.clock.advance(5)
        channel.broadcast("first")
        server.turn()
        (first,) = connection.events()[1:]
        server.clock.advance(10)
        channel.broadcast("second")  # at 15: kept until 45
        server.turn()
        connection.disconnect()
        server.clock.advance(25)  # 40
        self.assertIn("a", server.endpoint.channels)
        again = server.connect(
            _query("a"), headers=[(b"Last-Event-ID", first.last_event_id.encode())]
        )
        self.assertEqual([e.data for e in again.events()[1:]], ["second"])
        again.disconnect()
        server.clock.advance(4)  # 44
        self.assertIn("a", server.endpoint.channels)
        self.assertIn("a", _kept(server))
        server.clock.advance(2)  # 46
        self.assertNotIn("a", server.endpoint.channels)
        self.assertEqual(_kept(server), {})
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_event_while_empty_extends(self) -> None:
        """
        An event the application publishes on an empty dynamic channel
        keeps it until that event has aged out.
        """
        server = _dynamic_server(history=HistoryPolicy(10, age=30))
        connection = server.connect(_query("a"))
        channel = server.endpoint.channels["a"]
        channel.broadcast("early")  # at 0: kept until 30
        connection.disconnect()
        server.turn()
        server.clock.advance(20)
        channel.broadcast("late")
        server.clock.advance(20)  # 40: "late" is kept until 50
        self.assertIn("a", server.endpoint.channels)
        server.clock.advance(11)
        self.assertNotIn("a", server.endpoint.channels)

    def test_history_without_age(self) -> None:
        """
        Where the endpoint's history has no age, a dynamic channel's is
        kept C{unaged_history} seconds, so that an empty one still goes.
        """
        server = _dynamic_server(history=10)
        server.endpoint.channel_table.unaged_history = 60
        connection = server.connect(_query("a"))
        server.endpoint.channels["a"].broadcast("x")
        server.turn()
        connection.disconnect()
        server.clock.advance(59)
        self.assertIn("a", server.endpoint.channels)
        server.clock.advance(2)
        self.assertNotIn("a", server.endpoint.channels)
        self.assertEqual(_kept(server), {})

    def test_forgotten_channel_resets(self) -> None:
        """
        A client that comes back to a channel made again, from before the
        history that went with it, is told C{reset}.
        """
        server = _dynamic_server(history=HistoryPolicy(10, age=30))
        connection = server.connect(_query("a", "b"))
        server.endpoint.channels["b"].broadcast("seen")
        server.turn()
        seen = connection.events()[-1].last_event_id
        server.endpoint.channels["a"].broadcast("missed")
        server.turn()
        missed = connection.events()[-1].last_event_id
        connection.disconnect()
        server.clock.advance(31)
        self.assertNotIn("a", server.endpoint.channels)
        again = server.connect(_query("a"), headers=[(b"Last-Event-ID", seen.encode())])
        self.assertEqual([e.type for e in again.events()[1:]], ["reset"])
        # From after what went, nothing was missed.
        later = server.connect(
            _query("a"), headers=[(b"Last-Event-ID", missed.encode())]
        )
        self.assertEqual(later.events()[1:], [])

    def test_made_but_never_joined(self) -> None:
        """
        A dynamic channel made for a stream that never joined it goes too.
        """
        server = _dynamic_server()
        server.endpoint.channel_table.join(["ghost"])
        self.assertIn("ghost", server.endpoint.channels)
        server.turn()
        self.assertNotIn("ghost", server.endpoint.channels)

    def test_added_by_the_application_stays(self) -> None:
        """
        A dynamic channel the application then adds with C{add_channel} is
        configured from then on: it stays when empty.
        """
        server = _dynamic_server()
        connection = server.connect(_query("a"))
        channel = server.endpoint.add_channel("a")
        self.assertFalse(channel.dynamic)
        connection.disconnect()
        server.clock.advance(1000)
        self.assertIs(server.endpoint.channels["a"], channel)

    def test_terminate_leaves_no_timer(self) -> None:
        """
        An endpoint that terminates, its streams' dynamic channels emptied
        as it closes them, or some already waiting for their history to
        age, leaves no DelayedCall behind, not even one due now.
        """
        server = _dynamic_server(history=HistoryPolicy(10, age=300))
        server.connect(_query("a"))
        server.connect(_query("b")).disconnect()
        for name in ("a", "b"):
            server.endpoint.channels[name].broadcast("x")
        server.turn()
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        server.endpoint.terminate()
        self.assertEqual(server.clock.getDelayedCalls(), [])


@implementer_only(IBroker)
class _ElsewhereBroker(InMemoryBroker):
    """
    An in-memory broker that does not say it keeps history here, as a
    Redis broker does not: a channel that goes leaves its history to it.
    """


class ElsewhereTests(SynchronousTestCase):
    """
    Where the broker keeps history elsewhere, an empty dynamic channel goes
    at once, and replay still finds its events.
    """

    def test_replay_after_the_channel_went(self) -> None:
        """
        The channel object goes at the turn after its last member leaves;
        a client that comes back gets what it missed from the broker.
        """
        server = _dynamic_server(
            broker=_ElsewhereBroker, history=HistoryPolicy(10, age=60)
        )
        connection = server.connect(_query("a"))
        server.endpoint.channels["a"].broadcast("one")
        server.turn()
        first = connection.events()[-1].last_event_id
        server.endpoint.channels["a"].broadcast("two")
        server.turn()
        connection.disconnect()
        server.turn()
        self.assertNotIn("a", server.endpoint.channels)
        again = server.connect(
            _query("a"), headers=[(b"Last-Event-ID", first.encode())]
        )
        self.assertEqual([(e.type, e.data) for e in again.events()[1:]], [("a", "two")])


def _names(start: int, count: int) -> list[str]:
    return [f"made-up-{i:05d}" for i in range(start, start + count)]


class ManyTests(SynchronousTestCase):
    """
    Ten thousand made-up names: no residue once their streams close and
    their history ages; the cap refuses the next one.
    """

    PER_STREAM = 500

    def setUp(self) -> None:
        _quiet(self)

    def _open(self, server: SSEServer, total: int) -> list[StreamConnection]:
        connections = []
        for start in range(0, total, self.PER_STREAM):
            connection = server.connect(_query(*_names(start, self.PER_STREAM)))
            self.assertEqual(connection.response().status, 200)
            connections.append(connection)
        return connections

    def test_no_residue_and_cap(self) -> None:
        """
        10,000 dynamic channels (the default cap) opened by 20 streams, with
        events kept on some: a stream asking for one more is refused with
        C{503 too_many_channels}; once the streams close and the history
        ages out, every table is as it was, and new names open again.
        """
        server = _dynamic_server(
            history=HistoryPolicy(5, age=10),
            limits=Limits(max_channels=self.PER_STREAM),
        )
        endpoint = server.endpoint
        self.assertEqual(endpoint.channel_table.max_dynamic, 10_000)
        connections = self._open(server, 10_000)
        self.assertEqual(len(endpoint.channels), 10_001)
        for name in _names(0, 10_000)[::100]:
            endpoint.channels[name].broadcast("kept")
        server.turn()
        refused = server.connect(_query("one-more"))
        status, code, _ = _error(refused.response())
        self.assertEqual((status, code), (503, "too_many_channels"))
        self.assertIsNotNone(refused.response().header(b"retry-after"))
        self.assertNotIn("one-more", endpoint.channels)
        for connection in connections:
            connection.disconnect()
        server.turn()
        self.assertEqual(len(endpoint.channels), 101)
        server.clock.advance(12)
        self.assertEqual(set(endpoint.channels), {"message"})
        self.assertEqual(endpoint.channel_table.dynamic_count, 0)
        self.assertEqual(endpoint.channel_table._due, {})
        self.assertEqual(endpoint.channel_table._queue, [])
        self.assertEqual(_kept(server), {})
        self.assertEqual(endpoint.stats()["channels"], {"message": 0})
        _empty_tables(self, server)
        again = server.connect(_query("one-more"))
        self.assertEqual(again.response().status, 200)

    def _cycle(self, server: SSEServer, first: int, count: int) -> None:
        """
        C{count} new names opened, some given events, their streams closed,
        and their history aged out.
        """
        connections = []
        for start in range(first, first + count, self.PER_STREAM):
            names = _names(start, self.PER_STREAM)
            connections.append(server.connect(_query(*names)))
            server.endpoint.channels[names[0]].broadcast("kept")
        server.turn()
        for connection in connections:
            connection.disconnect()
        server.turn()
        server.clock.advance(12)

    def test_memory_does_not_grow(self) -> None:
        """
        10,000 made-up names that come and go leave Python memory within
        L{NAMES_GROWTH_BOUND} of where it was after a few hundred did: the
        channels, their history, the timer's bookkeeping and the room the
        tables grew to all go.
        """
        server = _dynamic_server(
            history=HistoryPolicy(5, age=10),
            limits=Limits(max_channels=self.PER_STREAM),
        )
        tracemalloc.start()
        try:
            self._cycle(server, 0, self.PER_STREAM)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            self._cycle(server, self.PER_STREAM, 10_000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertEqual(set(server.endpoint.channels), {"message"})
        self.assertLess(after - before, NAMES_GROWTH_BOUND)


class CapTests(SynchronousTestCase):
    """
    At most C{channel_table.max_dynamic} dynamic channels exist at once.
    """

    def server(self, **options: Any) -> SSEServer:
        server = _dynamic_server(**options)
        server.endpoint.channel_table.max_dynamic = 3
        return server

    def test_refused_as_json(self) -> None:
        """
        Past the cap, a stream asking for a new name is refused with C{503
        too_many_channels} and a C{Retry-After}; one asking for channels
        that exist opens; none of a refused stream's names are made.
        """
        server = self.server(channels=["news"])
        server.connect(_query("a", "b"))
        refused = server.connect(_query("c", "d"))
        status, code, message = _error(refused.response())
        self.assertEqual((status, code), (503, "too_many_channels"))
        self.assertIn("3", message)
        self.assertEqual(refused.response().header(b"retry-after"), b"5")
        self.assertNotIn("c", server.endpoint.channels)
        self.assertEqual(server.connect(_query("c")).response().status, 200)
        self.assertEqual(server.connect(_query("a", "news")).response().status, 200)
        self.assertEqual(server.connect(_query("e")).response().status, 503)

    def test_refused_as_event_stream(self) -> None:
        """
        An C{EventSource} (it accepts only C{text/event-stream}) is told as
        other refused streams are: C{200}, a C{retry:}, an C{unavailable}
        event carrying the JSON error, and the end; no session opens.
        """
        server = self.server()
        server.connect(_query("a", "b", "c"))
        refused = server.connect(
            _query("d"), headers=[(b"Accept", b"text/event-stream")]
        )
        response = refused.response()
        self.assertEqual(response.status, 200)
        self.assertTrue(
            (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        )
        (event,) = refused.events()
        self.assertEqual(event.type, "unavailable")
        self.assertEqual(json.loads(event.data)["error"]["code"], "too_many_channels")
        self.assertEqual(len(server.endpoint.sessions), 1)

    def test_empty_ones_make_room(self) -> None:
        """
        At the cap, empty dynamic channels still keeping history go first,
        those nearest their end first; only channels with members refuse a
        new one.
        """
        server = self.server(history=HistoryPolicy(10, age=60))
        connection = server.connect(_query("x1", "x2", "x3"))
        for name in ("x2", "x1", "x3"):
            server.endpoint.channels[name].broadcast(name)
            server.clock.advance(1)
        connection.disconnect()
        server.turn()
        self.assertEqual(server.endpoint.channel_table.dynamic_count, 3)
        server.connect(_query("y1"))
        self.assertNotIn("x2", server.endpoint.channels)
        self.assertNotIn("x2", _kept(server))
        self.assertIn("x1", server.endpoint.channels)
        server.connect(_query("y2", "y3"))
        self.assertEqual(
            sorted(server.endpoint.channels), ["message", "y1", "y2", "y3"]
        )
        self.assertEqual(server.connect(_query("y4")).response().status, 503)


class MetricsTests(SynchronousTestCase):
    """
    However many channels clients make, a scrape has at most 100 channel
    series per endpoint, and the rest are added up in one.
    """

    def setUp(self) -> None:
        _quiet(self)

    def scrape(self, resource: MetricsResource) -> str:
        stub = StubTreq(resource)
        response = self.successResultOf(stub.get("http://x/metrics"))
        return self.successResultOf(stub.content(response)).decode()

    def series(self, text: str) -> dict[str, float]:
        return {
            dict(labels)["channel"]: value
            for (name, labels), value in _metrics(text).items()
            if name == "graphsse_channel_sessions"
        }

    def test_few_channels_each_their_own(self) -> None:
        """
        Up to the bound, every channel has its own series and none is
        added up.
        """
        server = _dynamic_server(limits=Limits(max_channels=100))
        self.assertEqual(server.connect(_query(*_names(0, 99))).response().status, 200)
        series = self.series(self.scrape(MetricsResource(server.backend)))
        self.assertEqual(len(series), 100)
        self.assertNotIn(",other", series)

    def test_many_channels_bounded(self) -> None:
        """
        With 2,000 channels, the scrape holds the 100 with the most streams
        and one C{channel=",other"} series adding up the rest, and stays
        small; the dynamic channels are counted.
        """
        server = _dynamic_server(limits=Limits(max_channels=502))
        popular = ["hot-1", "hot-2"]
        for start in range(0, 2000, 500):
            server.connect(_query(*popular, *_names(start, 500)))
        text = self.scrape(MetricsResource(server.backend))
        series = self.series(text)
        self.assertEqual(len(series), 101)
        self.assertEqual(series["message"], 4)
        self.assertEqual(series["hot-1"], 4)
        self.assertEqual(sum(series.values()), 4 + 8 + 2000)
        self.assertEqual(series[",other"], 2000 - (100 - 3))
        self.assertLess(len(text), 24 * 1024)
        dynamic = _metrics(text)[("graphsse_dynamic_channels", (("path", "/sse"),))]
        self.assertEqual(dynamic, 2002)

    def test_worker_snapshot_bounded(self) -> None:
        """
        A worker's shared snapshot is bounded the same way, and another
        worker's scrape adds its C{",other"} to its own.
        """
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-test-dynamic-"))
        self.addCleanup(shutil.rmtree, directory, True)
        limits = Limits(max_channels=500)
        one, two = _dynamic_server(limits=limits), _dynamic_server(limits=limits)
        self.assertEqual(two.connect(_query(*_names(0, 500))).response().status, 200)
        shared_two = SharedStats(two.backend, directory, two.clock, name="two")
        shared_two.publish()
        snapshot = json.loads((directory / "two.json").read_text())
        self.assertEqual(len(snapshot["endpoints"][0]["channels"]), 101)
        self.assertEqual(one.connect(_query(*_names(1000, 200))).response().status, 200)
        shared_one = SharedStats(one.backend, directory, one.clock, name="one")
        series = self.series(self.scrape(MetricsResource(one.backend, shared_one)))
        self.assertEqual(len(series), 101)
        self.assertEqual(sum(series.values()), 2 + 500 + 200)


def _opened(raw: RawHTTP) -> Callable[[], bool]:
    """
    A test of whether C{raw}'s stream has its C{setId}.
    """
    return lambda: b"setId" in dechunk(raw.head()[2])[0]


class RealSocketTests(_RealSocketCase):
    """
    On 127.0.0.1: a few sockets, each asking for many made-up channels.
    """

    async def test_refused_names(self) -> None:
        """
        NUL and U+2028 in a name, and one too long, get C{400 bad_channel}
        JSON over a real connection.
        """
        endpoint, site = self.endpoint_site(dynamic_channels=True, keepalive=0)
        url = self.listen(site)
        for name in ("a\x00b", "a\u2028b", "n" * 129):
            request = (
                b"GET /sse" + _query(name) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Connection: close\r\n\r\n"
            )
            raw = await self.raw(url, request)
            await raw.until_lost()
            status, _, body = raw.head()
            self.assertIn(b" 400 ", status)
            self.assertEqual(json.loads(body)["error"]["code"], "bad_channel")
        self.assertEqual(set(endpoint.channels), {"message"})

    async def test_no_residue(self) -> None:
        """
        Four sockets asking for 500 made-up channels each: 2,000 channels
        while they are open, none once they have closed.
        """
        endpoint, site = self.endpoint_site(
            dynamic_channels=True, keepalive=0, limits=Limits(max_channels=500)
        )
        url = self.listen(site)
        raws = []
        for start in range(0, 2000, 500):
            request = (
                b"GET /sse" + _query(*_names(start, 500)) + b" HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\n\r\n"
            )
            raw = await self.raw(url, request)
            await raw.until(_opened(raw))
            raws.append(raw)
        self.assertEqual(len(endpoint.channels), 2001)
        for raw in raws:
            assert raw.transport is not None
            raw.transport.loseConnection()
        await _poll(lambda: set(endpoint.channels) == {"message"}, "no residue")
        self.assertEqual(endpoint.channel_table.dynamic_count, 0)
        self.assertEqual(endpoint.sessions, {})


class RedisReplayTests(RedisTestCase):
    """
    With Redis keeping the history, the local channel goes when empty and
    replay still works.
    """

    async def test_replay_after_the_channel_went(self) -> None:
        """
        A dynamic channel on a Redis node goes once its stream closes; a
        client that comes back with its last id gets what it missed.
        """
        node = await self.node("a", dynamic_channels=True)
        stream = await self.stream(node, channels="room-7")
        channel = node.endpoint.channels["room-7"]
        channel.broadcast("one")
        await until(lambda: len(stream.after_setup()) == 1, "the first event")
        last = stream.last_id
        channel.broadcast("two")
        await until(lambda: len(stream.after_setup()) == 2, "the second event")
        await stream.close()
        await until(lambda: "room-7" not in node.endpoint.channels, "it to go")
        again = await self.stream(node, channels="room-7", last_event_id=last)
        await until(lambda: len(again.after_setup()) == 1, "the replay")
        self.assertEqual([e.data for e in again.after_setup()], ["two"])
