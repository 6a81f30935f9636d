"""
Attacks and accidents over real sockets on 127.0.0.1: a client that stops
reading, a storm of reconnections, slow requests, connections that die
without a goodbye.  Every test is bounded in count and time.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import SSEBackend, SSEEndpoint

from ._rawclient import RawSSE, open_stream, raise_fd_limit

reactor: Any = _reactor


class Served:
    """
    A backend and endpoint listening on 127.0.0.1, cleaned up after the test.
    """

    def __init__(
        self,
        case: TestCase,
        site_timeout: float | None = None,
        broker: Any = None,
        **setup: Any,
    ):
        self.backend = SSEBackend(reactor, broker=broker)
        setup.setdefault("keepalive", 0)
        self.endpoint: SSEEndpoint = self.backend.setup_sse("/sse", **setup)
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        site = Site(root, timeout=site_timeout)
        site.log = lambda request: None  # type: ignore[method-assign]
        raise_fd_limit()
        self.port = reactor.listenTCP(0, site, backlog=4096, interface="127.0.0.1")
        self.number: int = self.port.getHost().port
        case.addCleanup(self.port.stopListening)
        case.addCleanup(self.endpoint.shutdown, None, 1.0)

    def open(self, target: str = "/sse", **kwargs: Any) -> Deferred[RawSSE]:
        return open_stream(reactor, self.number, target, **kwargs)


def until(
    clock: IReactorTime, condition: Any, timeout: float, step: float = 0.01
) -> Deferred[None]:
    """
    Fire once C{condition()} is true; fail after C{timeout} seconds.
    """
    deadline = clock.seconds() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not condition():
            if clock.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            yield deferLater(clock, step, lambda: None)

    return poll()


def stop_reading(stream: RawSSE, receive_buffer: int = 4096) -> None:
    """
    The client stops reading: its kernel buffer fills, then the server's.
    """
    assert stream.transport is not None
    stream.transport.pauseProducing()  # type: ignore[attr-defined]
    sock = stream.transport.getHandle()  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)


class SlowConsumerTests(TestCase):
    """
    One client stops reading while 10,000 events are broadcast.
    """

    timeout = 120

    @inlineCallbacks
    def _broadcast(self, served: Served, count: int, per_turn: int) -> Any:
        sent = 0
        pad = "x" * 80
        while sent < count:
            for _ in range(per_turn):
                served.endpoint.send({"n": sent, "pad": pad})
                sent += 1
            yield deferLater(reactor, 0, lambda: None)

    @inlineCallbacks
    def _flood(self, overflow: str) -> Any:
        bound = 64 * 1024
        served = Served(self, max_backlog=bound, overflow=overflow)
        others = yield gatherResults([served.open() for _ in range(100)])
        slow = yield served.open()
        stop_reading(slow)
        session = served.endpoint.sessions[slow.session_id]
        # Loopback's kernel buffers would swallow the whole flood; a small
        # send buffer makes the server's transport meet the slow reader.
        server_socket = session.http_request.channel.transport.getHandle()
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], session._backlog_bytes)

        def watch() -> None:
            sample()
            if session.is_connected:
                watch_call[0] = reactor.callLater(0.001, watch)

        watch_call = [reactor.callLater(0, watch)]
        yield self._broadcast(served, 10_000, 200)
        yield until(reactor, lambda: all(len(o.events) >= 10_001 for o in others), 60)
        if watch_call[0].active():
            watch_call[0].cancel()
        for other in others:
            numbers = [d["n"] for d in other.data()]
            self.assertEqual(numbers, list(range(10_000)))
        # The slow session's backlog never passed the bound: a turn's batch
        # that would take it past is cut (or refused) at the bound.
        self.assertLessEqual(peak[0], bound)
        return served, slow, session, others

    @inlineCallbacks
    def test_disconnect_policy(self) -> Any:
        """
        Under the default policy the slow client is disconnected once its
        backlog passes the bound; 100 other clients get all 10,000 events in
        order.
        """
        served, slow, session, others = yield self._flood("disconnect")
        yield until(reactor, lambda: not session.is_connected, 10)
        self.assertEqual(session.close_reason, "slow consumer")
        self.assertEqual(served.endpoint.counters.slow_disconnects, 1)
        self.assertGreater(served.endpoint.counters.events_dropped, 0)
        # A client that does not read does not see the reset either.
        slow.transport.resumeProducing()
        yield slow.closed
        for other in others:
            other.transport.loseConnection()

    @inlineCallbacks
    def test_drop_oldest_policy(self) -> Any:
        """
        Under drop_oldest the slow client stays connected with a bounded
        backlog, and when it reads again it is told with a `missed` event
        and gets the newest events.
        """
        _, slow, session, others = yield self._flood("drop_oldest")
        self.assertTrue(session.is_connected)
        self.assertLessEqual(session._backlog_bytes, 64 * 1024)
        slow.transport.resumeProducing()
        yield until(reactor, lambda: any(e.type == "missed" for e in slow.events), 20)
        yield until(
            reactor, lambda: bool(slow.data()) and slow.data()[-1].get("n") == 9_999, 20
        )
        numbers = [d["n"] for d in slow.data() if "n" in d]
        self.assertLess(len(numbers), 10_000)
        self.assertEqual(numbers, sorted(set(numbers)))
        for stream in [slow, *others]:
            stream.transport.loseConnection()


class ReconnectStormTests(TestCase):
    """
    2,000 clients drop and reconnect with Last-Event-ID while events flow.
    """

    timeout = 240

    @inlineCallbacks
    def test_storm(self) -> Any:
        """
        Every client ends with every event exactly once, in order, however
        often it reconnected (each holds an id from the first event on).
        """
        served = Served(self, history=5_000)
        clients = 2_000
        total = 300
        rng = random.Random(7)
        seen: dict[int, list[int]] = {i: [] for i in range(clients)}
        last_id: dict[int, str] = {}
        streams: dict[int, RawSSE] = {}
        reconnects = [0]

        def on_event(index: int) -> Any:
            def record(stream: RawSSE, event: Any) -> None:
                if event.type == "message" and event.last_event_id:
                    if event.data.startswith('{"n"'):
                        seen[index].append(int(event.data[5:-1]))
                    last_id[index] = event.last_event_id

            return record

        @inlineCallbacks
        def connect(index: int) -> Any:
            headers = {}
            if index in last_id:
                headers["Last-Event-ID"] = last_id[index]
            stream = yield served.open(headers=headers, on_event=on_event(index))
            streams[index] = stream

        yield gatherResults([connect(i) for i in range(clients)])
        # Every client holds an id before the storm: one that never saw an
        # event has no Last-Event-ID, and then (as for a browser) only live
        # events are owed to it.
        served.endpoint.send({"n": 0})
        yield until(reactor, lambda: len(last_id) == clients, 30)

        published = [1]
        stormed = [False]

        @inlineCallbacks
        def publish() -> Any:
            while published[0] < total or not stormed[0]:
                for _ in range(3):
                    served.endpoint.send({"n": published[0]})
                    published[0] += 1
                yield deferLater(reactor, 0.01, lambda: None)

        @inlineCallbacks
        def storm() -> Any:
            order = list(range(clients))
            rng.shuffle(order)
            # Every client drops at least once, in rounds of 100, while
            # events flow; then a few more rounds at random.
            rounds = [order[i : i + 100] for i in range(0, clients, 100)]
            rounds += [rng.sample(range(clients), 100) for _ in range(3)]
            for victims in rounds:
                for index in victims:
                    streams[index].transport.abortConnection()
                yield gatherResults([streams[i].closed for i in victims])
                reconnects[0] += len(victims)
                yield gatherResults([connect(i) for i in victims])
            stormed[0] = True

        yield gatherResults([publish(), storm()])
        count = published[0]
        yield until(
            reactor, lambda: all(len(seen[i]) >= count for i in range(clients)), 90
        )
        expected = list(range(count))
        for index in range(clients):
            self.assertEqual(seen[index], expected, f"client {index}")
        self.assertGreater(reconnects[0], clients)
        for stream in streams.values():
            stream.transport.loseConnection()


class SlowRequestTests(TestCase):
    """
    Requests that never finish arriving, and connections that die silently.
    """

    timeout = 30

    @inlineCallbacks
    def test_idle_post_body(self) -> Any:
        """
        A POST whose body never comes is dropped after the site's idle
        timeout, while a stream on the same server lives on past it.
        """
        served = Served(self, site_timeout=0.5, keepalive=0.2)
        stream = yield served.open()
        sock = socket.create_connection(("127.0.0.1", served.number))
        self.addCleanup(sock.close)
        sock.sendall(
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        sock.setblocking(False)

        def closed() -> bool:
            try:
                return sock.recv(1024) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        yield until(reactor, closed, 5)
        yield deferLater(reactor, 0.6, lambda: None)
        self.assertIn(stream.session_id, served.endpoint.sessions)
        stream.transport.loseConnection()

    @inlineCallbacks
    def test_trickled_headers(self) -> Any:
        """
        Headers trickled slower than the idle timeout are cut off.
        """
        served = Served(self, site_timeout=0.3)
        sock = socket.create_connection(("127.0.0.1", served.number))
        self.addCleanup(sock.close)
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n")
        yield deferLater(reactor, 0.6, lambda: None)
        sock.setblocking(False)
        try:
            data = sock.recv(1024)
        except BlockingIOError:
            data = None
        self.assertEqual(data, b"")
        self.assertEqual(served.endpoint.sessions, {})

    @inlineCallbacks
    def test_reset_connection_is_forgotten(self) -> Any:
        """
        A client whose connection is reset (no FIN, an RST) is forgotten:
        session, channels and pending calls are cleaned up, and a call in
        flight fails.
        """
        served = Served(self, keepalive=0.05, channels=["news"])
        stream = yield served.open("/sse?channels=news")
        sid = stream.session_id
        call = served.endpoint.run("anything", session_id=sid)
        assert isinstance(call, Deferred)
        failures: list[Failure] = []
        call.addErrback(failures.append)
        sock = stream.transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.transport.abortConnection()
        yield until(reactor, lambda: sid not in served.endpoint.sessions, 5)
        self.assertEqual(served.endpoint.channels["news"].members, {})
        self.assertEqual(len(served.endpoint.calls), 0)
        self.assertEqual(len(failures), 1)
