"""
Tests for delivery that survives lag (issue 17): a session that falls
behind by more than its backlog goes on from history by a cursor, gets every
event in order on its one connection, and holds nothing but the cursor and
what history cannot give back; a cursor that leaves history gets C{reset};
without history the bound is exact; a stream that makes no progress is
dropped after C{write_timeout}.  On a L{MemoryReactorClock} with an
in-memory transport, and over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txgraphsse import ChannelSpec, HistoryPolicy, encode_event
from txgraphsse._catchup import ROUND_BYTES, split_events
from txgraphsse._messages import dumps
from txgraphsse.redis import RedisBroker

from ._redis import RedisServer
from .test_resilience import Served, stop_reading, until
from .test_session import RecordingTransport, SSEServer, StreamConnection


def numbers(connection: Any, channel: str = "news") -> list[int]:
    return [json.loads(e.data)["n"] for e in connection.events() if e.type == channel]


class LagTests(SynchronousTestCase):
    """
    A lagging session on a channel with history.
    """

    def server(self, **options: Any) -> SSEServer:
        options.setdefault("channels", [ChannelSpec("news", history=10_000)])
        options.setdefault("max_backlog", 2048)
        options.setdefault("keepalive", 0)
        return SSEServer(**options)

    def publish(
        self, server: SSEServer, first: int, count: int, per_turn: int = 10
    ) -> None:
        news = server.endpoint.channels["news"]
        for n in range(first, first + count):
            news.broadcast({"n": n, "pad": "x" * 64})
            if n % per_turn == per_turn - 1:
                server.turn()
        server.turn()

    def test_lagging_session_catches_up(self) -> None:
        """
        A paused session that falls 500 events (about 45 KiB) behind a
        2 KiB backlog keeps its stream, holds no copy of them, and on
        resume gets every event once, in order, then the live ones.
        """
        server = self.server()
        slow = server.connect(b"?channels=news")
        fast = server.connect(b"?channels=news")
        self.publish(server, 0, 5)
        slow.channel.pauseProducing()
        self.publish(server, 5, 500)
        session = server.session(slow)
        self.assertIsNotNone(session._lag)
        self.assertEqual(session._backlog_bytes, 0)
        self.assertEqual(session._lag.kept_bytes, 0)
        self.assertEqual(server.endpoint.counters.lagging, 1)
        self.assertEqual(server.endpoint.counters.slow_disconnects, 0)
        slow.channel.resumeProducing()
        server.turn()
        self.assertEqual(numbers(slow), list(range(505)))
        self.assertIsNone(session._lag)
        self.publish(server, 505, 3)
        self.assertEqual(numbers(slow), list(range(508)))
        self.assertEqual(numbers(fast), list(range(508)))
        self.assertFalse(slow.transport.disconnecting)

    def test_paused_again_while_catching_up(self) -> None:
        """
        A reader that pauses again in the middle of the way back resumes
        from where it stopped: still every event once, in order.
        """
        server = self.server()
        slow = server.connect(b"?channels=news")
        slow.channel.pauseProducing()
        self.publish(server, 0, 3000)
        session = server.session(slow)
        original = slow.transport.write
        sent = [0]

        def write(data: bytes) -> None:
            original(data)
            sent[0] += 1
            if sent[0] % 2 == 0:
                slow.channel.pauseProducing()

        slow.transport.write = write  # type: ignore[method-assign]
        for _ in range(200):
            slow.channel.resumeProducing()
            server.turn()
            if session._lag is None:
                break
            self.publish(server, 3000 + _, 1)
        self.assertIsNone(session._lag)
        got = numbers(slow)
        self.assertEqual(got, list(range(len(got))))
        self.assertGreater(len(got), 3000)

    def test_kept_things_at_their_places(self) -> None:
        """
        What history does not keep (a push to the session) waits at its
        place among the events read back.
        """
        server = self.server()
        slow = server.connect(b"?channels=news")
        slow.channel.pauseProducing()
        self.publish(server, 0, 100)
        session = server.session(slow)
        self.assertIsNotNone(session._lag)
        session.push("between")
        server.turn()
        self.publish(server, 100, 100)
        slow.channel.resumeProducing()
        server.turn()
        order = [
            e.data if e.data == "between" else json.loads(e.data)["n"]
            for e in slow.events()[1:]
        ]
        self.assertEqual(order, [*range(100), "between", *range(100, 200)])

    def test_cursor_out_of_history(self) -> None:
        """
        A cursor that history no longer reaches: with C{drop_oldest}, a
        C{reset} and then the live events; with C{disconnect}, the stream
        ends.
        """
        for overflow in ("drop_oldest", "disconnect"):
            server = self.server(
                channels=[ChannelSpec("news", history=50)], overflow=overflow
            )
            slow = server.connect(b"?channels=news")
            slow.channel.pauseProducing()
            self.publish(server, 0, 300)
            slow.channel.resumeProducing()
            server.turn()
            self.assertEqual(server.endpoint.counters.lag_resets, 1)
            if overflow == "disconnect":
                self.assertTrue(slow.transport.disconnecting)
                continue
            types = [e.type for e in slow.events()[1:]]
            self.assertEqual(types[0], "reset")
            self.publish(server, 300, 2)
            self.assertEqual(numbers(slow)[-2:], [300, 301])

    def test_write_timeout(self) -> None:
        """
        A stream whose transport stays paused for C{write_timeout} seconds
        is dropped; one that makes progress in time is not.
        """
        server = self.server(write_timeout=10)
        stuck = server.connect(b"?channels=news")
        moving = server.connect(b"?channels=news")
        stuck.channel.pauseProducing()
        moving.channel.pauseProducing()
        server.clock.advance(9)
        moving.channel.resumeProducing()
        server.clock.advance(2)
        self.assertTrue(stuck.transport.disconnecting)
        self.assertFalse(moving.transport.disconnecting)
        self.assertEqual(server.endpoint.counters.stalls, 1)
        server.clock.advance(100)
        self.assertFalse(moving.transport.disconnecting)


class ExactBoundTests(SynchronousTestCase):
    """
    Without history, the backlog never passes its bound, and C{drop_oldest}
    drops the oldest events, never the newest.
    """

    def test_batch_cut_at_the_bound(self) -> None:
        """
        One turn's batch far larger than the bound: C{drop_oldest} keeps its
        newest events that fit, and the bound holds.
        """
        size = len(encode_event(dumps({"n": 10})))
        server = SSEServer(max_backlog=size * 5, overflow="drop_oldest", keepalive=0)
        slow = server.connect()
        slow.channel.pauseProducing()
        for n in range(100):
            server.endpoint.send({"n": n})
        server.turn()
        session = server.session(slow)
        self.assertLessEqual(session._backlog_bytes, size * 5)
        slow.channel.resumeProducing()
        events = slow.events()[1:]
        self.assertEqual(events[0].type, "missed")
        self.assertEqual(
            [json.loads(e.data)["n"] for e in events[1:]], [95, 96, 97, 98, 99]
        )

    def test_disconnect_before_passing(self) -> None:
        """
        Under C{disconnect}, the batch that would pass the bound is not
        appended: the session goes with at most the bound held.
        """
        size = len(encode_event(dumps({"n": 10})))
        server = SSEServer(max_backlog=size * 5, keepalive=0)
        slow = server.connect()
        slow.channel.pauseProducing()
        session = server.session(slow)
        for n in range(10, 14):
            server.endpoint.send({"n": n})
            server.turn()
        self.assertEqual(session._backlog_bytes, size * 4)
        for n in range(10):
            server.endpoint.send({"n": n})
        server.turn()
        self.assertTrue(slow.transport.disconnecting)
        self.assertEqual(server.endpoint.counters.slow_disconnects, 1)

    def test_split_events(self) -> None:
        """
        A payload splits into its whole events and comments.
        """
        payload = encode_event("a") + b":\n\n" + encode_event("b\nc", "x", "7")
        self.assertEqual(
            split_events(payload),
            [encode_event("a"), b":\n\n", encode_event("b\nc", "x", "7")],
        )
        self.assertEqual(b"".join(split_events(payload)), payload)


class _Bursts(TestCase):
    """
    A burst behind a slow reader, for the cases below.
    """

    #: The endpoint's options: the slow reader's backlog is far less than
    #: the burst, which history holds whole.
    SETUP: dict[str, Any] = {
        "max_backlog": 16 * 1024,
        "channels": [ChannelSpec("news", history=HistoryPolicy(20_000))],
    }

    @inlineCallbacks
    def burst(self, served: Served, count: int) -> Any:
        """
        Broadcast C{count} events of a kilobyte while one of two readers
        reads nothing; then it reads again, and both must get every event.
        """
        fast = yield served.open("/sse?channels=news")
        slow = yield served.open("/sse?channels=news")
        stop_reading(slow, 64 * 1024)
        session = served.endpoint.sessions[slow.session_id]
        handle = session.http_request.channel.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        news = served.endpoint.channels["news"]
        pad = "x" * 1000
        peak = [0]
        for n in range(count):
            news.broadcast({"n": n, "pad": pad})
            if n % 100 == 99:
                peak[0] = max(peak[0], session._backlog_bytes)
                yield deferLater(reactor, 0.001, lambda: None)
        yield until(reactor, lambda: session._lag is not None, 10)
        self.assertLessEqual(peak[0], 16 * 1024)
        slow.transport.resumeProducing()
        yield until(reactor, lambda: len(slow.data()) >= count, 60)
        yield until(reactor, lambda: len(fast.data()) >= count, 60)
        self.assertEqual([d["n"] for d in slow.data()], list(range(count)))
        self.assertEqual([d["n"] for d in fast.data()], list(range(count)))
        self.assertTrue(session.is_connected)
        self.assertEqual(served.endpoint.counters.slow_disconnects, 0)
        for stream in (slow, fast):
            stream.transport.loseConnection()


class RealSocketLagTests(_Bursts):
    """
    Over real sockets: a reader that stops reading during a burst falls far
    behind and still gets every event, in order, on its one connection.
    """

    @inlineCallbacks
    def test_burst_behind_a_slow_reader(self) -> Any:
        yield self.burst(Served(self, **self.SETUP), 5000)

    @inlineCallbacks
    def test_large_turn_cut_at_an_event(self) -> Any:
        """
        One reactor turn broadcasts 2 MB while a reader's socket takes
        some tens of kilobytes: the transport is handed no more than the rest of the
        event the socket stopped in (not the turn), the rest waits, and the
        reader, once it reads, gets every event once and in order.
        """
        served = Served(
            self,
            max_backlog=1 << 20,
            channels=[ChannelSpec("news", history=HistoryPolicy(5000))],
        )
        slow = yield served.open("/sse?channels=news")
        stop_reading(slow, 64 * 1024)
        session = served.endpoint.sessions[slow.session_id]
        transport = session.http_request.channel.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        news = served.endpoint.channels["news"]
        pad = "x" * 1000
        for n in range(2000):
            news.broadcast({"n": n, "pad": pad})
        served.endpoint._flush()
        held = len(transport.dataBuffer) + transport._tempDataLen
        self.assertLess(held, 1100)
        self.assertTrue(session._paused)
        slow.transport.resumeProducing()
        yield until(reactor, lambda: len(slow.data()) >= 2000, 60)
        self.assertEqual([d["n"] for d in slow.data()], list(range(2000)))
        self.assertTrue(session.is_connected)
        slow.transport.loseConnection()


class RedisLagTests(_Bursts):
    """
    The same over a real C{redis-server}: the lagging reader's cursor reads
    history from Redis's streams.
    """

    @inlineCallbacks
    def test_burst_behind_a_slow_reader(self) -> Any:
        server = RedisServer()
        server.start()
        self.addCleanup(server.cleanup)
        broker = RedisBroker(reactor, server.url, prefix="lag", node_id="a")
        yield broker.start()
        self.addCleanup(broker.stop)
        served = Served(self, broker=broker, **self.SETUP)
        yield self.burst(served, 3000)
        self.assertGreater(served.endpoint.counters.lagging, 0)


class PositionTests(SynchronousTestCase):
    """
    The first frame of a stream carries the position, so that a client that
    reconnects before any event arrived resumes exactly; an id of another
    epoch (a restarted node's) gets C{reset} first.
    """

    def test_set_id_carries_the_position(self) -> None:
        """
        C{setId}'s C{id:} is the newest event's; a reconnect quoting it gets
        exactly the events published since.
        """
        server = SSEServer(channels=[ChannelSpec("news", history=100)], keepalive=0)
        news = server.endpoint.channels["news"]
        fresh = server.connect(b"?channels=news")
        self.assertEqual(fresh.events()[0].last_event_id, "")
        for n in range(3):
            news.broadcast({"n": n})
        server.turn()
        newest = fresh.events()[-1].last_event_id
        early = server.connect(b"?channels=news")
        [set_id] = early.events()
        self.assertEqual(set_id.last_event_id, newest)
        for n in range(3, 6):
            news.broadcast({"n": n})
        server.turn()
        early.disconnect()
        again = server.connect(
            b"?channels=news", headers=[(b"Last-Event-ID", newest.encode())]
        )
        self.assertEqual(numbers(again), [3, 4, 5])
        self.assertNotIn("reset", [e.type for e in again.events()])

    def test_old_epoch_gets_reset(self) -> None:
        """
        An id from before a restart (another epoch) is answered with
        C{reset} before the events kept.
        """
        before = SSEServer(channels=[ChannelSpec("news", history=100)], keepalive=0)
        stream = before.connect(b"?channels=news")
        before.endpoint.channels["news"].broadcast({"n": 0})
        before.turn()
        old_id = stream.events()[-1].last_event_id
        after = SSEServer(channels=[ChannelSpec("news", history=100)], keepalive=0)
        after.endpoint.channels["news"].broadcast({"n": 1})
        after.turn()
        again = after.connect(
            b"?channels=news", headers=[(b"Last-Event-ID", old_id.encode())]
        )
        types = [e.type for e in again.events()[1:]]
        self.assertEqual(types, ["reset", "news"])


class ReplayFlowTests(SynchronousTestCase):
    """
    A long replay is read from history and written as the transport
    drains, not queued at once.
    """

    def test_replay_of_10000_events(self) -> None:
        """
        A client resuming 10,000 events back gets them in writes of about
        64 KiB, only as its transport takes them, and then every one, in
        order, once.
        """
        server = SSEServer(channels=[ChannelSpec("news", history=20_000)], keepalive=0)
        news = server.endpoint.channels["news"]
        first = server.connect(b"?channels=news")
        news.broadcast({"n": -1})
        server.turn()
        since = first.events()[-1].last_event_id
        for n in range(10_000):
            news.broadcast({"n": n, "pad": "x" * 40})
        server.turn()
        # A transport that takes one write, then is full until it drains.
        resuming = StreamConnectionPausing(
            server.site,
            b"GET /sse?channels=news HTTP/1.1\r\nHost: example.com\r\n"
            b"Last-Event-ID: " + since.encode() + b"\r\n\r\n",
        )
        rounds = 0
        while resuming.paused and rounds < 1000:
            self.assertLessEqual(
                max(len(c) for c in resuming.response().chunks), ROUND_BYTES + 200
            )
            resuming.drain()
            server.turn()
            rounds += 1
        self.assertGreater(rounds, 5)
        self.assertEqual(numbers(resuming), list(range(10_000)))


class StreamConnectionPausing(StreamConnection):
    """
    A connection whose transport pauses its producer after every write,
    until L{drain}.
    """

    def __init__(self, site: Any, raw_request: bytes) -> None:
        self.paused = False
        self.transport = RecordingTransport()
        original = self.transport.write

        def write(data: bytes) -> None:
            original(data)
            producer = self.transport.producer
            if producer is not None and not self.paused:
                self.paused = True
                producer.pauseProducing()

        self.transport.write = write  # type: ignore[method-assign]
        protocol = site.buildProtocol(None)
        protocol.makeConnection(self.transport)
        self.channel = getattr(protocol, "_channel", protocol)
        self.transport.protocol = protocol
        protocol.dataReceived(raw_request)
        self.request = None

    def drain(self) -> None:
        self.paused = False
        producer = self.transport.producer
        if producer is not None:
            producer.resumeProducing()


class MixedTurnTests(SynchronousTestCase):
    """
    Turns that mix events history keeps with things it does not, while a
    session lags: each part at its place, never twice, never lost.
    """

    def server(self) -> SSEServer:
        return SSEServer(
            channels=[ChannelSpec("news", history=10_000)],
            max_backlog=2048,
            keepalive=0,
        )

    def test_events_and_a_keepalive_in_one_turn(self) -> None:
        """
        A lagging session's turn of events with a keep-alive (or anything
        without an id) holds only the thing without an id: the events come
        from history once, however large the turn.
        """
        for in_turn in (10, 40):
            server = self.server()
            slow = server.connect(b"?channels=news")
            news = server.endpoint.channels["news"]
            slow.channel.pauseProducing()
            n = 0
            for _ in range(10):
                for _ in range(10):
                    news.broadcast({"n": n, "pad": "x" * 64})
                    n += 1
                server.turn()
            for _ in range(in_turn):
                news.broadcast({"n": n, "pad": "x" * 64})
                n += 1
            server.endpoint.ping()
            server.endpoint.send("plain")
            server.turn()
            slow.channel.resumeProducing()
            for _ in range(50):
                server.turn()
            self.assertEqual(numbers(slow), list(range(n)), in_turn)
            self.assertFalse(slow.transport.disconnecting)
            self.assertEqual(server.endpoint.counters.slow_disconnects, 0)
            self.assertEqual([e.data for e in slow.events()[1:]][-1], "plain")

    def test_push_survives_a_cut_round(self) -> None:
        """
        A push held while lagging is written even when the round that holds
        it is cut short by the transport filling again.
        """
        for before in (500, 1500):
            self.push_in_cut_round(before)

    def push_in_cut_round(self, before: int) -> None:
        server = self.server()
        slow = server.connect(b"?channels=news")
        news = server.endpoint.channels["news"]
        session = server.session(slow)
        slow.channel.pauseProducing()
        n = 0

        def publish(count: int) -> None:
            nonlocal n
            for _ in range(count):
                news.broadcast({"n": n, "pad": "x" * 64})
                n += 1
                if n % 10 == 0:
                    server.turn()
            server.turn()

        publish(before)
        session.push("between")
        server.turn()
        publish(3000 - before)
        original = slow.transport.write

        def write(data: bytes) -> None:
            original(data)
            slow.channel.pauseProducing()

        slow.transport.write = write  # type: ignore[method-assign]
        for _ in range(500):
            slow.channel.resumeProducing()
            server.turn()
            if session._lag is None:
                break
        order = [
            e.data if e.data == "between" else json.loads(e.data)["n"]
            for e in slow.events()[1:]
        ]
        self.assertEqual(
            order, [*range(before), "between", *range(before, 3000)], before
        )
