"""
Tests for L{txgraphsse._session}, through a real L{twisted.web.server.Request}
on an L{HTTPChannel}: headers, the preamble, keep-alives, disconnects, the
one-write-per-turn path, backpressure and closing.

The harness here (L{SSEServer}, L{StreamConnection}) is shared with
C{tests.test_channel}.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txgraphsse import (
    EventStreamParser,
    IBroker,
    ServerSentEvent,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
    encode_event,
)
from txgraphsse._encoder import KEEPALIVE, chunk

#: The last chunk of a chunked response.
LAST_CHUNK = b"0\r\n\r\n"


class RecordingTransport(StringTransport):
    """
    A L{StringTransport} that counts its writes and, like a real transport,
    tells its protocol when the connection is lost.

    @ivar writes: how many times C{write} or C{writeSequence} was called.
    @ivar protocol: the protocol told of a lost connection.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.protocol: IProtocol | None = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.writes += 1
        super().writeSequence(data)

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        super().loseConnection()
        self.connected = False
        if self.protocol is not None:
            error = ConnectionAborted() if self.disconnected else ConnectionDone()
            self.protocol.connectionLost(Failure(error))


@frozen
class Response:
    """
    An HTTP/1.x response as the client read it so far.

    @ivar status: the status code.
    @ivar headers: header values by lower-cased name.
    @ivar chunks: the body's chunks (C{[body]} when it is not chunked).
    @ivar complete: whether a chunked body ended with its last chunk.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    chunks: list[bytes]
    complete: bool

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: bytes) -> bytes | None:
        """
        The one value of header C{name}, or L{None}.
        """
        values = self.headers.get(name.lower())
        if values is None:
            return None
        assert len(values) == 1, values
        return values[0]


def parse_response(raw: bytes) -> Response:
    """
    Parse the bytes a server wrote, strictly: a malformed chunk fails.
    """
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete head in {raw!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers.setdefault(name.lower(), []).append(value)
    if headers.get(b"transfer-encoding") != [b"chunked"]:
        return Response(status, headers, [rest] if rest else [], False)
    chunks = []
    complete = False
    while rest:
        size_line, separator, rest = rest.partition(b"\r\n")
        assert separator, f"incomplete chunk size line {size_line!r}"
        size = int(size_line, 16)
        assert rest[size : size + 2] == b"\r\n", f"bad chunk in {rest!r}"
        if size == 0:
            complete = True
            assert rest == b"\r\n", f"bytes after the last chunk: {rest!r}"
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return Response(status, headers, chunks, complete)


class StreamConnection:
    """
    One client connection to an L{SSEServer}: a real L{HTTPChannel} on a
    L{RecordingTransport}, fed one raw request.

    @ivar request: the request, while the channel still holds it.
    """

    def __init__(self, site: Site, raw_request: bytes) -> None:
        self.transport = RecordingTransport()
        protocol = site.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(self.transport)
        # Site wraps the HTTPChannel to negotiate HTTP/2; the HTTPChannel is
        # the transport's producer and the requests' channel.
        channel = getattr(protocol, "_channel", protocol)
        assert isinstance(channel, HTTPChannel)
        self.channel = channel
        self.transport.protocol = protocol
        protocol.dataReceived(raw_request)
        self.request: Request | None = channel.requests[0] if channel.requests else None

    def response(self) -> Response:
        return parse_response(self.transport.value())

    def events(self) -> list[ServerSentEvent]:
        """
        Every event the stream carried so far.
        """
        return EventStreamParser().feed(self.response().body)

    def data(self) -> list[Any]:
        """
        The JSON data of every event after the C{setId} one.
        """
        return [json.loads(event.data) for event in self.events()[1:]]

    @property
    def session_id(self) -> str:
        first = self.events()[0]
        message = json.loads(first.data)
        assert message["route"] == "setId", first
        session_id = message["args"]
        assert isinstance(session_id, str)
        return session_id

    def written_since(self, mark: int) -> bytes:
        """
        The bytes written after C{mark} (a length of C{transport.value()}).
        """
        written: bytes = self.transport.value()
        return written[mark:]

    def disconnect(self) -> None:
        """
        The client goes away: the transport loses the connection.
        """
        self.transport.loseConnection()


class SSEServer:
    """
    An L{SSEBackend} on a L{MemoryReactorClock} with one endpoint mounted at
    C{/sse}, and the callbacks it made.
    """

    def __init__(
        self,
        broker: Callable[[MemoryReactorClock], IBroker] | None = None,
        **options: Any,
    ) -> None:
        """
        @param broker: makes the backend's broker from the clock (an
            in-memory one if not given).
        @param options: for C{setup_sse}.
        """
        self.clock = MemoryReactorClock()
        self.backend = SSEBackend(
            reactor=self.clock, broker=None if broker is None else broker(self.clock)
        )
        self.opened: list[tuple[Any, ...]] = []
        self.closed: list[tuple[Any, ...]] = []
        self.endpoint_closed: list[SSEEndpoint] = []
        options.setdefault("on_connection", lambda *args: self.opened.append(args))
        options.setdefault(
            "on_connection_close", lambda *args: self.closed.append(args)
        )
        options.setdefault("on_close", self.endpoint_closed.append)
        self.endpoint = self.backend.setup_sse("/sse", **options)
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        # No idle timeout: the only delayed calls are the endpoint's own.
        self.site = Site(root, reactor=self.clock, timeout=None)

    def connect(
        self,
        query: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] = (),
        method: bytes = b"GET",
        version: bytes = b"HTTP/1.1",
    ) -> StreamConnection:
        lines = [method + b" /sse" + query + b" " + version, b"Host: example.com"]
        lines.extend(name + b": " + value for name, value in headers)
        raw = b"\r\n".join(lines) + b"\r\n\r\n"
        return StreamConnection(self.site, raw)

    def session(self, connection: StreamConnection) -> SSEClient:
        return self.endpoint.sessions[connection.session_id]

    def turn(self) -> None:
        """
        End the reactor turn: the outbox writes.
        """
        self.clock.advance(0)


class HeaderTests(SynchronousTestCase):
    """
    The response that opens a stream.
    """

    def test_headers(self) -> None:
        """
        A stream answers 200 with PROTOCOL.md's headers, chunked on HTTP/1.1,
        with no Content-Length and no content coding even when the client
        asks for gzip.
        """
        server = SSEServer()
        response = server.connect(headers=[(b"Accept-Encoding", b"gzip")]).response()
        self.assertEqual(response.status, 200)
        self.assertEqual(
            response.header(b"content-type"), b"text/event-stream; charset=utf-8"
        )
        self.assertEqual(response.header(b"cache-control"), b"no-cache, no-transform")
        self.assertEqual(response.header(b"x-accel-buffering"), b"no")
        self.assertEqual(response.header(b"connection"), b"keep-alive")
        self.assertEqual(response.header(b"transfer-encoding"), b"chunked")
        self.assertIsNone(response.header(b"content-length"))
        self.assertIsNone(response.header(b"content-encoding"))
        self.assertFalse(response.complete)

    def test_http10(self) -> None:
        """
        On HTTP/1.0 the stream is not chunked and says no keep-alive; its
        events are written as they are, and the body ends with the
        connection.
        """
        server = SSEServer()
        connection = server.connect(version=b"HTTP/1.0")
        response = connection.response()
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"connection"))
        self.assertIsNone(response.header(b"transfer-encoding"))
        self.assertIsNone(response.header(b"content-length"))
        self.assertTrue(response.body.startswith(b"retry: 2000\n\n"))
        server.endpoint.send({"n": 1})
        server.turn()
        self.assertTrue(connection.response().body.endswith(b'data: {"n":1}\n\n'))
        server.session(connection).close()
        self.assertTrue(connection.transport.disconnecting)
        self.assertNotIn(LAST_CHUNK, connection.transport.value())

    def test_preamble(self) -> None:
        """
        The first bytes of the body are the C{retry:} field and then the
        C{setId} message carrying the session id, in one chunk.
        """
        server = SSEServer(retry=1234)
        connection = server.connect()
        session_id = connection.session_id
        self.assertEqual(
            connection.response().chunks,
            [
                b"retry: 1234\n\nevent: message\ndata: "
                b'{"route":"setId","args":"' + session_id.encode() + b'"}\n\n'
            ],
        )
        self.assertEqual(list(server.endpoint.sessions), [session_id])
        parser = EventStreamParser()
        parser.feed(connection.response().body)
        self.assertEqual(parser.retry, 1234)

    def test_session_ids(self) -> None:
        """
        Session ids carry at least 128 random bits, differ per session and
        reach their own stream only.
        """
        server = SSEServer()
        connections = [server.connect() for _ in range(50)]
        ids = [connection.session_id for connection in connections]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(set(server.endpoint.sessions), set(ids))
        for session_id in ids:
            raw = base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
            self.assertGreaterEqual(len(raw) * 8, 128)
        server.endpoint.send("hello")
        server.turn()
        for connection in connections[1:]:
            self.assertNotIn(ids[0].encode(), connection.transport.value())

    def test_on_connection(self) -> None:
        """
        C{on_connection} gets C{(client, endpoint, session_id, request)} once
        the stream is open.
        """
        server = SSEServer()
        connection = server.connect()
        session = server.session(connection)
        self.assertEqual(
            server.opened,
            [(session, server.endpoint, session.id, connection.request)],
        )
        self.assertIs(session.http_request, connection.request)
        self.assertTrue(session.is_connected)

    def test_head(self) -> None:
        """
        HEAD answers the stream's headers and finishes, without a body,
        without a session, without a keep-alive timer, and without a
        Content-Length that would claim the stream is empty.
        """
        server = SSEServer(keepalive=5)
        connection = server.connect(method=b"HEAD")
        response = connection.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(
            response.header(b"content-type"), b"text/event-stream; charset=utf-8"
        )
        self.assertEqual(response.header(b"cache-control"), b"no-cache, no-transform")
        self.assertEqual(response.header(b"x-accel-buffering"), b"no")
        self.assertIsNone(response.header(b"content-length"))
        self.assertEqual(response.body, b"")
        self.assertEqual(connection.channel.requests, [])
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(server.opened, [])
        self.assertEqual(server.clock.getDelayedCalls(), [])
        # The connection serves the next request.
        connection.channel.dataReceived(
            b"GET /sse HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        self.assertEqual(len(server.endpoint.sessions), 1)


class LastEventIdTests(SynchronousTestCase):
    """
    L{SSESession.last_event_id} is what the client said it saw last.
    """

    def test_header(self) -> None:
        """
        The C{Last-Event-ID} header is kept as text.
        """
        server = SSEServer()
        connection = server.connect(headers=[(b"Last-Event-ID", b"abc.12")])
        self.assertEqual(server.session(connection).last_event_id, "abc.12")

    def test_query(self) -> None:
        """
        Without the header, the C{lastEventId} query argument counts.
        """
        server = SSEServer()
        connection = server.connect(query=b"?lastEventId=q%C3%A9.3")
        self.assertEqual(server.session(connection).last_event_id, "q\xe9.3")

    def test_header_wins(self) -> None:
        """
        The header, which a browser sends on its own, wins over the query.
        """
        server = SSEServer()
        connection = server.connect(
            query=b"?lastEventId=old", headers=[(b"Last-Event-ID", b"new")]
        )
        self.assertEqual(server.session(connection).last_event_id, "new")

    def test_none(self) -> None:
        """
        A first connection has no last event id.
        """
        server = SSEServer()
        self.assertIsNone(server.session(server.connect()).last_event_id)


class KeepaliveTests(SynchronousTestCase):
    """
    Keep-alive comments come from one timer per endpoint.
    """

    def test_interval(self) -> None:
        """
        A keep-alive comment arrives every C{keepalive} seconds, as one
        chunk, and not before.
        """
        server = SSEServer(keepalive=5)
        connection = server.connect()
        server.turn()
        mark = len(connection.transport.value())
        server.clock.advance(4.9)
        self.assertEqual(connection.written_since(mark), b"")
        server.clock.advance(0.1)
        server.turn()
        self.assertEqual(connection.written_since(mark), chunk(KEEPALIVE))
        server.clock.advance(5)
        server.turn()
        self.assertEqual(connection.written_since(mark), chunk(KEEPALIVE) * 2)
        self.assertEqual(len(connection.events()), 1)

    def test_one_timer(self) -> None:
        """
        However many sessions are open, the endpoint has one pending timer,
        and each keep-alive is one write per session.
        """
        server = SSEServer(keepalive=5)
        first = server.connect()
        server.turn()
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        connections = [first] + [server.connect() for _ in range(20)]
        server.turn()
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        writes = [c.transport.writes for c in connections]
        server.clock.advance(5)
        server.turn()
        self.assertEqual(
            [c.transport.writes - w for c, w in zip(connections, writes, strict=True)],
            [1] * len(connections),
        )
        for connection in connections:
            self.assertTrue(connection.transport.value().endswith(chunk(KEEPALIVE)))

    def test_stops_with_last_session(self) -> None:
        """
        The timer stops when the last session closes, and starts again with
        the next session, counting its interval from then.
        """
        server = SSEServer(keepalive=5)
        connections = [server.connect() for _ in range(3)]
        server.turn()
        connections[0].disconnect()
        server.session(connections[1]).close()
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        connections[2].disconnect()
        self.assertEqual(server.clock.getDelayedCalls(), [])
        server.clock.advance(3)
        again = server.connect()
        mark = len(again.transport.value())
        server.clock.advance(4.9)
        self.assertEqual(again.written_since(mark), b"")
        server.clock.advance(0.1)
        server.turn()
        self.assertEqual(again.written_since(mark), chunk(KEEPALIVE))

    def test_disabled(self) -> None:
        """
        C{keepalive=0} sends no keep-alives and keeps no timer.
        """
        server = SSEServer(keepalive=0)
        connection = server.connect()
        server.turn()
        self.assertEqual(server.clock.getDelayedCalls(), [])
        mark = len(connection.transport.value())
        server.clock.advance(3600)
        self.assertEqual(connection.written_since(mark), b"")


class DisconnectTests(SynchronousTestCase):
    """
    A client that goes away is forgotten everywhere.
    """

    def assertForgotten(
        self,
        server: SSEServer,
        connection: StreamConnection,
        session: SSEClient,
        request: Request | None,
    ) -> None:
        self.assertNotIn(session.id, server.endpoint.sessions)
        for channel in server.endpoint.channels.values():
            self.assertNotIn(session, channel.members)
        self.assertEqual(session.channels, ())
        self.assertFalse(session.is_connected)
        self.assertEqual(
            server.closed, [(session, server.endpoint, session.id, request)]
        )
        self.assertEqual(server.endpoint.stats()["cluster_sessions"], 0)

    def test_lose_connection(self) -> None:
        """
        When the transport loses the connection, the session leaves the
        endpoint and every channel, and C{on_connection_close} gets
        C{(client, endpoint, session_id, request)}.
        """
        server = SSEServer(channels=["a", "b"])
        connection = server.connect(query=b"?channels=a,b")
        session = server.session(connection)
        self.assertEqual(session.channels, ("message", "a", "b"))
        connection.disconnect()
        self.assertForgotten(server, connection, session, connection.request)
        self.assertEqual(session.close_reason, "client disconnected")

    def test_channel_connection_lost(self) -> None:
        """
        C{HTTPChannel.connectionLost} has the same effect.
        """
        server = SSEServer(channels=["a"])
        connection = server.connect(query=b"?channels=a")
        session = server.session(connection)
        connection.channel.connectionLost(Failure(ConnectionLost()))
        self.assertForgotten(server, connection, session, connection.request)

    def test_nothing_written_after(self) -> None:
        """
        Events queued before the disconnect and sent after it do not reach
        the dead transport, and count only the live sessions.
        """
        server = SSEServer()
        gone, staying = server.connect(), server.connect()
        server.endpoint.send("before")
        gone.disconnect()
        mark = len(gone.transport.value())
        self.assertEqual(server.endpoint.send("after"), 1)
        server.turn()
        self.assertEqual(gone.written_since(mark), b"")
        self.assertEqual([e.data for e in staying.events()[1:]], ["before", "after"])

    def test_callback_failure_logged(self) -> None:
        """
        An C{on_connection_close} that raises is logged; the session is
        still forgotten.
        """

        def broken(*args: object) -> None:
            raise RuntimeError("broken callback")

        server = SSEServer(on_connection_close=broken)
        connection = server.connect()
        connection.disconnect()
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WriteTests(SynchronousTestCase):
    """
    Pushes and broadcasts, written once per session per reactor turn.
    """

    def test_push(self) -> None:
        """
        L{SSESession.push} reaches its own session only, at the end of the
        turn, with JSON, text or UTF-8 bytes and the given fields.
        """
        server = SSEServer()
        target, other = server.connect(), server.connect()
        session = server.session(target)
        mark_target = len(target.transport.value())
        mark_other = len(other.transport.value())
        session.push({"a": [1, "\xe9"]})
        session.push("plain\ntext", event="note", id="7")
        session.push("\u2603".encode())
        self.assertEqual(target.written_since(mark_target), b"")
        server.turn()
        self.assertEqual(
            target.written_since(mark_target),
            chunk(
                encode_event('{"a":[1,"\xe9"]}')
                + encode_event("plain\ntext", "note", "7")
                + encode_event("\u2603")
            ),
        )
        self.assertEqual(other.written_since(mark_other), b"")

    def test_push_refused(self) -> None:
        """
        A push with an event name or id the wire cannot carry raises
        L{ValueError} and queues nothing.
        """
        server = SSEServer(keepalive=0)
        connection = server.connect()
        session = server.session(connection)
        mark = len(connection.transport.value())
        self.assertRaises(ValueError, session.push, "x", event="a\nb")
        self.assertRaises(ValueError, session.push, "x", id="a\0b")
        self.assertEqual(server.clock.getDelayedCalls(), [])
        server.turn()
        self.assertEqual(connection.written_since(mark), b"")

    def test_send_to_session(self) -> None:
        """
        C{endpoint.send(..., session_id=)} and C{client.send} reach one
        session and count it; an unknown id counts none.
        """
        server = SSEServer()
        target, other = server.connect(), server.connect()
        self.assertEqual(server.endpoint.send([1], session_id=target.session_id), 1)
        self.assertEqual(server.session(target).send([2], event="two"), 1)
        self.assertEqual(server.endpoint.send([3], session_id="nope"), 0)
        server.turn()
        self.assertEqual(target.data(), [[1], [2]])
        self.assertEqual(target.events()[2].type, "two")
        self.assertEqual(other.data(), [])

    def test_broadcast_one_write_per_turn(self) -> None:
        """
        C{endpoint.send} reaches every session; 20 events in one turn are
        one transport write per session, in order.
        """
        server = SSEServer()
        connections = [server.connect() for _ in range(5)]
        writes = [c.transport.writes for c in connections]
        for n in range(20):
            self.assertEqual(server.endpoint.send({"n": n}), 5)
        self.assertEqual([c.transport.writes for c in connections], writes)
        server.turn()
        for connection, before in zip(connections, writes, strict=True):
            self.assertEqual(connection.transport.writes - before, 1)
            self.assertEqual(connection.data(), [{"n": n} for n in range(20)])

    def test_mixed_turn_one_write(self) -> None:
        """
        Broadcasts and a push in one turn are still one write for the pushed
        session, in the order they were sent.
        """
        server = SSEServer()
        pushed, other = server.connect(), server.connect()
        writes = (pushed.transport.writes, other.transport.writes)
        for n in range(10):
            server.endpoint.send(n)
        server.session(pushed).push("only you")
        for n in range(10, 20):
            server.endpoint.send(n)
        server.turn()
        self.assertEqual(pushed.transport.writes - writes[0], 1)
        self.assertEqual(other.transport.writes - writes[1], 1)
        self.assertEqual(
            [e.data for e in pushed.events()[1:]],
            [str(n) for n in range(10)]
            + ["only you"]
            + [str(n) for n in range(10, 20)],
        )
        self.assertEqual(other.data(), list(range(20)))

    def test_turns_are_separate_writes(self) -> None:
        """
        Events of two turns are two writes.
        """
        server = SSEServer()
        connection = server.connect()
        before = connection.transport.writes
        server.endpoint.send(1)
        server.turn()
        server.endpoint.send(2)
        server.turn()
        self.assertEqual(connection.transport.writes - before, 2)
        self.assertEqual(connection.data(), [1, 2])


class BackpressureTests(SynchronousTestCase):
    """
    A paused transport holds events in the session's bounded backlog.
    """

    def test_pause_and_resume(self) -> None:
        """
        While the channel is paused, events wait (a keep-alive does not: the
        held bytes are sign of life enough); on resume they are written in
        order, in one write, and other sessions are not held up.
        """
        server = SSEServer(keepalive=5)
        slow, fast = server.connect(), server.connect()
        server.turn()
        slow.channel.pauseProducing()
        mark = len(slow.transport.value())
        writes = slow.transport.writes
        for n in range(3):
            server.endpoint.send(n)
            server.turn()
        server.clock.advance(5)
        server.session(slow).push("pushed")
        server.turn()
        self.assertEqual(slow.written_since(mark), b"")
        self.assertEqual(fast.data(), [0, 1, 2])
        slow.channel.resumeProducing()
        self.assertEqual(slow.transport.writes - writes, 1)
        self.assertEqual(
            slow.written_since(mark),
            chunk(
                encode_event("0")
                + encode_event("1")
                + encode_event("2")
                + encode_event("pushed")
            ),
        )
        server.endpoint.send(3)
        server.turn()
        self.assertEqual(
            [e.data for e in slow.events()[1:]], ["0", "1", "2", "pushed", "3"]
        )

    def test_within_backlog(self) -> None:
        """
        Up to C{max_backlog} bytes may wait without consequence.
        """
        event = encode_event("x" * 40)
        server = SSEServer(max_backlog=len(event) * 3, overflow="disconnect")
        connection = server.connect()
        connection.channel.pauseProducing()
        for _ in range(3):
            server.endpoint.send("x" * 40)
            server.turn()
        self.assertFalse(connection.transport.disconnecting)
        connection.channel.resumeProducing()
        self.assertEqual(len(connection.events()), 4)

    def test_disconnect_policy(self) -> None:
        """
        Past C{max_backlog}, the C{disconnect} policy aborts the connection
        and forgets the session.
        """
        event = encode_event("x" * 40)
        server = SSEServer(max_backlog=len(event) * 3, overflow="disconnect")
        connection, other = server.connect(), server.connect()
        session = server.session(connection)
        connection.channel.pauseProducing()
        mark = len(connection.transport.value())
        for _ in range(4):
            server.endpoint.send("x" * 40)
            server.turn()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.written_since(mark), b"")
        self.assertEqual(list(server.endpoint.sessions), [other.session_id])
        self.assertEqual(session.close_reason, "slow consumer")
        self.assertEqual(len(server.closed), 1)
        self.assertEqual(len(other.events()), 5)

    def test_drop_oldest_policy(self) -> None:
        """
        Past C{max_backlog}, the C{drop_oldest} policy drops the oldest
        events, keeps the connection, and on resume sends a C{missed} event
        before the events it kept.
        """
        size = len(encode_event("event 0"))
        server = SSEServer(max_backlog=size * 3, overflow="drop_oldest")
        connection = server.connect()
        connection.channel.pauseProducing()
        for n in range(6):
            server.endpoint.send(f"event {n}")
            server.turn()
        self.assertFalse(connection.transport.disconnecting)
        self.assertEqual(connection.events()[1:], [])
        connection.channel.resumeProducing()
        events = connection.events()[1:]
        self.assertEqual(events[0].type, "missed")
        self.assertEqual(json.loads(events[0].data), {"route": "missed", "args": None})
        self.assertEqual(
            [e.data for e in events[1:]], ["event 3", "event 4", "event 5"]
        )
        server.endpoint.send("event 6")
        server.turn()
        self.assertEqual(
            [e.type for e in connection.events()[1:]], ["missed"] + ["message"] * 4
        )
        self.assertEqual(
            [e.data for e in connection.events()[2:]],
            ["event 3", "event 4", "event 5", "event 6"],
        )
        self.assertIn(connection.session_id, server.endpoint.sessions)

    def test_drop_oldest_without_overflow(self) -> None:
        """
        Without an overflow, C{drop_oldest} sends no C{missed} event.
        """
        server = SSEServer(overflow="drop_oldest")
        connection = server.connect()
        connection.channel.pauseProducing()
        server.endpoint.send("a")
        server.turn()
        connection.channel.resumeProducing()
        self.assertEqual([e.type for e in connection.events()], ["message"] * 2)


class CloseTests(SynchronousTestCase):
    """
    Ending streams from the server.
    """

    def test_close(self) -> None:
        """
        C{close()} finishes the response with its last chunk, forgets the
        session, and tells C{on_connection_close}; the connection stays open
        for the next request.
        """
        server = SSEServer(keepalive=5)
        connection = server.connect()
        session = server.session(connection)
        session.close()
        response = connection.response()
        self.assertTrue(response.complete)
        self.assertTrue(connection.transport.value().endswith(LAST_CHUNK))
        self.assertFalse(connection.transport.disconnecting)
        self.assertFalse(session.is_connected)
        self.assertEqual(session.close_reason, "closed by server")
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(
            server.closed, [(session, server.endpoint, session.id, connection.request)]
        )
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_close_idempotent(self) -> None:
        """
        A second C{close()} writes nothing, raises nothing and reports
        nothing.
        """
        server = SSEServer()
        connection = server.connect()
        session = server.session(connection)
        session.close()
        value = connection.transport.value()
        session.close()
        self.assertFalse(session.terminate())
        server.turn()
        self.assertEqual(connection.transport.value(), value)
        self.assertEqual(len(server.closed), 1)

    def test_close_after_disconnect(self) -> None:
        """
        Closing a session whose client went away does nothing and raises
        nothing.
        """
        server = SSEServer()
        connection = server.connect()
        session = server.session(connection)
        connection.disconnect()
        value = connection.transport.value()
        session.close()
        self.assertEqual(connection.transport.value(), value)
        self.assertEqual(len(server.closed), 1)

    def test_close_with_final(self) -> None:
        """
        C{close(final)} writes the final events before the last chunk.
        """
        server = SSEServer()
        connection = server.connect()
        server.session(connection).close(encode_event("bye", "goodbye"))
        response = connection.response()
        self.assertTrue(response.complete)
        self.assertEqual(response.chunks[-1], encode_event("bye", "goodbye"))

    def test_close_delivers_queued(self) -> None:
        """
        Events sent to a session earlier in the turn in which it is closed
        are written before the stream ends.
        """
        server = SSEServer()
        connection = server.connect()
        client = server.session(connection)
        self.assertEqual(server.endpoint.send("to all"), 1)
        self.assertEqual(client.send("last words"), 1)
        self.assertTrue(client.terminate())
        server.turn()
        response = connection.response()
        self.assertTrue(response.complete)
        self.assertEqual(
            [e.data for e in connection.events()[1:]], ["to all", "last words"]
        )

    def test_close_while_paused(self) -> None:
        """
        A stream closed while its transport is paused still gets the events
        it held back, and the final ones, before its last chunk.
        """
        server = SSEServer()
        connection = server.connect()
        connection.channel.pauseProducing()
        server.endpoint.send("held")
        server.turn()
        server.session(connection).close(encode_event("bye", "goodbye"))
        response = connection.response()
        self.assertTrue(response.complete)
        self.assertEqual(
            [(e.type, e.data) for e in connection.events()[1:]],
            [("message", "held"), ("goodbye", "bye")],
        )

    def test_close_overflowing(self) -> None:
        """
        A close whose last events overflow a paused stream's backlog under
        the C{disconnect} policy aborts it instead, without error.
        """
        server = SSEServer(max_backlog=100, overflow="disconnect")
        connection = server.connect()
        session = server.session(connection)
        connection.channel.pauseProducing()
        server.endpoint.send("x" * 200)
        session.close()
        self.assertTrue(connection.transport.disconnected)
        self.assertFalse(connection.response().complete)
        self.assertEqual(session.close_reason, "slow consumer")
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(len(server.closed), 1)

    def test_close_drop_oldest_while_paused(self) -> None:
        """
        A paused C{drop_oldest} stream that lost events says so with a
        C{missed} event when it is closed, before what it kept.
        """
        size = len(encode_event("event 0"))
        server = SSEServer(max_backlog=size * 2, overflow="drop_oldest")
        connection = server.connect()
        connection.channel.pauseProducing()
        for n in range(4):
            server.endpoint.send(f"event {n}")
            server.turn()
        server.session(connection).close()
        self.assertTrue(connection.response().complete)
        self.assertEqual(
            [(e.type, e.data) for e in connection.events()[2:]],
            [("message", "event 2"), ("message", "event 3")],
        )
        self.assertEqual(connection.events()[1].type, "missed")

    def test_terminate(self) -> None:
        """
        C{endpoint.terminate()} delivers what was queued, ends every stream,
        stops the timer, tells C{on_close}, refuses new streams with 503,
        and happens once.
        """
        server = SSEServer(channels=["a"], keepalive=5)
        connections = [server.connect(query=b"?channels=a") for _ in range(3)]
        server.endpoint.send("last")
        self.assertTrue(server.endpoint.terminate())
        for connection in connections:
            self.assertTrue(connection.response().complete)
            self.assertEqual([e.data for e in connection.events()[1:]], ["last"])
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(server.endpoint.channels["a"].members, {})
        self.assertEqual(len(server.closed), 3)
        self.assertEqual(server.endpoint_closed, [server.endpoint])
        self.assertEqual(server.clock.getDelayedCalls(), [])
        self.assertFalse(server.endpoint.terminate())
        self.assertEqual(server.endpoint_closed, [server.endpoint])
        refused = server.connect().response()
        self.assertEqual(refused.status, 503)
        self.assertEqual(json.loads(refused.body)["error"]["code"], "unavailable")
        self.assertEqual(server.endpoint.sessions, {})

    def test_client_terminate(self) -> None:
        """
        C{client.terminate()} closes that stream only and says whether it
        was open.
        """
        server = SSEServer()
        closing, staying = server.connect(), server.connect()
        self.assertTrue(server.session(closing).terminate())
        self.assertTrue(closing.response().complete)
        self.assertFalse(staying.response().complete)
        self.assertEqual(list(server.endpoint.sessions), [staying.session_id])
