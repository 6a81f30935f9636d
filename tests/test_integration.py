"""
txgraphsse over real sockets on 127.0.0.1: a real C{Site} (plain, or the
examples' C{putChild} site and Klein app), read by treq with unbuffered
responses, parsed by the project's own L{EventStreamParser}.

Every test leaves the reactor clean: its endpoints are terminated, its
streams have ended, its ports stopped listening and its connections closed
before it returns, so that trial finds no DelayedCall and no socket.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import treq
from treq.client import HTTPClient
from twisted.internet import tcp
from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web import http
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txgraphsse import (
    EventStreamParser,
    ServerSentEvent,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
)

#: Seconds any single wait in these tests may take before it fails.
WAIT = 5.0

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """
    Import C{examples/<name>.py} by its path (the examples are scripts, not a
    package), once per process.
    """
    module_name = f"_txgraphsse_example_{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, _EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _clock() -> IReactorTime:
    return cast(IReactorTime, _reactor())


class _CloseStream(Exception):
    """
    Raised in treq's collector to make it drop the connection.
    """


class EventStream:
    """
    One open C{text/event-stream} response, parsed as it arrives.

    @ivar response: the treq response.
    @ivar raw: every body byte received so far.
    @ivar events: every event dispatched so far.
    @ivar parser: the parser (its C{retry} and C{last_event_id}).
    @ivar outcome: once the body has ended, L{None} for a clean end (the
        chunked terminator) or the L{Failure} it ended with.
    """

    def __init__(self, response: IResponse) -> None:
        self.response = response
        self.raw = bytearray()
        self.events: list[ServerSentEvent] = []
        self.parser = EventStreamParser()
        self.ended = False
        self.outcome: Failure | None = None
        self._closing = False
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []
        treq.collect(response, self._received).addBoth(self._end)

    def _received(self, data: bytes) -> None:
        if self._closing:
            raise _CloseStream()
        self.raw += data
        self.events.extend(self.parser.feed(data))
        self._check()

    def _end(self, result: Failure | None) -> None:
        self.ended = True
        self.outcome = result if isinstance(result, Failure) else None
        self._check()
        waiting, self._waiting = self._waiting, []
        for _, deferred in waiting:
            if not deferred.called:
                deferred.errback(
                    AssertionError(f"the stream ended first: {self.outcome}")
                )

    def _check(self) -> None:
        for entry in list(self._waiting):
            predicate, deferred = entry
            if deferred.called:
                self._waiting.remove(entry)
            elif predicate():
                self._waiting.remove(entry)
                deferred.callback(None)

    def until(self, predicate: Callable[[], bool]) -> Deferred[None]:
        """
        Fire once C{predicate()} holds after some bytes arrived; fail if the
        stream ends first or after L{WAIT} seconds.
        """
        if predicate():
            return succeed(None)
        if self.ended:
            raise AssertionError(f"the stream ended first: {self.outcome}")
        deferred: Deferred[None] = Deferred()
        self._waiting.append((predicate, deferred))
        deferred.addTimeout(WAIT, _clock())
        return deferred

    def count(self, n: int) -> Deferred[None]:
        """
        Fire once at least C{n} events have arrived.
        """
        return self.until(lambda: len(self.events) >= n)

    def until_ended(self) -> Deferred[None]:
        """
        Fire once the body has ended, however it ended.
        """
        if self.ended:
            return succeed(None)
        deferred: Deferred[None] = Deferred()
        self._waiting.append((lambda: self.ended, deferred))
        deferred.addTimeout(WAIT, _clock())
        return deferred

    async def session_id(self) -> str:
        """
        The session id of the stream's first event (C{setId}).
        """
        await self.count(1)
        first = self.events[0]
        message = json.loads(first.data)
        assert message["route"] == "setId", message
        return str(message["args"])

    def payloads(self) -> list[tuple[str, Any]]:
        """
        C{(event type, JSON data)} of every event after C{setId}.
        """
        return [(e.type, json.loads(e.data)) for e in self.events[1:]]

    def close(self) -> None:
        """
        Drop the connection when the next bytes arrive, as a client that
        goes away does.
        """
        self._closing = True


class RawHTTP(Protocol):
    """
    A plain TCP client: what the server sends, byte for byte.

    @ivar data: every byte received.
    @ivar lost: fires when the connection closes.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for entry in list(self._waiting):
            predicate, deferred = entry
            if deferred.called or predicate():
                self._waiting.remove(entry)
                if not deferred.called:
                    deferred.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)
        waiting, self._waiting = self._waiting, []
        for _, deferred in waiting:
            if not deferred.called:
                deferred.errback(AssertionError(f"connection lost first: {reason}"))

    def until(self, predicate: Callable[[], bool]) -> Deferred[None]:
        """
        Fire once C{predicate()} holds; fail after L{WAIT} seconds or if the
        connection closes first.
        """
        if predicate():
            return succeed(None)
        deferred: Deferred[None] = Deferred()
        self._waiting.append((predicate, deferred))
        deferred.addTimeout(WAIT, _clock())
        return deferred

    def until_lost(self) -> Deferred[None]:
        """
        Fire when the connection has closed; fail after L{WAIT} seconds.
        """
        waiter: Deferred[None] = Deferred()

        def lost(_: object) -> None:
            if not waiter.called:
                waiter.callback(None)

        self.lost.addBoth(lost)
        waiter.addTimeout(WAIT, _clock())
        return waiter

    def head(self) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
        """
        The status line, the headers (lower-case names) and the body bytes
        so far.
        """
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers, body


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """
    The payload of a chunked body received so far, and whether its
    terminating zero-length chunk has arrived.
    """
    payload = bytearray()
    while body:
        size_line, found, rest = body.partition(b"\r\n")
        if not found:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(payload), rest.startswith(b"\r\n")
        if len(rest) < size + 2:
            break
        assert rest[size : size + 2] == b"\r\n", rest[: size + 2]
        payload += rest[:size]
        body = rest[size + 2 :]
    return bytes(payload), False


def _connections_on(ports: Iterable[int]) -> list[object]:
    """
    The reactor's TCP connections to or from C{ports} (both ends of each).
    """
    wanted = set(ports)
    reactor = _reactor()
    found: list[object] = []
    for selectable in set(reactor.getReaders()) | set(reactor.getWriters()):
        if not isinstance(selectable, tcp.Connection):
            continue
        ends = (selectable.getHost(), selectable.getPeer())
        if any(getattr(end, "port", None) in wanted for end in ends):
            found.append(selectable)
    return found


async def _poll(predicate: Callable[[], bool], what: str) -> None:
    """
    Wait, a few milliseconds at a time and at most L{WAIT} seconds, for
    C{predicate()} to hold.
    """
    clock = _clock()
    deadline = clock.seconds() + WAIT
    while not predicate():
        if clock.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(clock, 0.01, lambda: None)


class _RealSocketCase(TestCase):
    """
    A trial test case with a non-persistent treq client and bookkeeping that
    leaves the reactor as clean as it found it.
    """

    def setUp(self) -> None:
        reactor = _reactor()
        self.pool = HTTPConnectionPool(reactor, False)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self._ports: list[IListeningPort] = []
        self._endpoints: list[SSEEndpoint] = []
        self._streams: list[EventStream] = []
        self._numbers: list[int] = []
        self._raw: list[RawHTTP] = []
        self.addCleanup(self._clean)

    async def _clean(self) -> None:
        for endpoint in self._endpoints:
            endpoint.terminate()
        for stream in self._streams:
            try:
                await stream.until_ended()
            except TimeoutError:
                self.fail("a stream did not end when its endpoint terminated")
        for protocol in self._raw:
            if protocol.transport is not None and protocol.connected:
                protocol.transport.loseConnection()
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        await self.pool.closeCachedConnections()
        await _poll(lambda: not _connections_on(self._numbers), "connections to close")

    def endpoint_site(self, **options: Any) -> tuple[SSEEndpoint, Site]:
        """
        An endpoint at C{/sse} (with C{options} for C{setup_sse}) mounted with
        C{putChild} in a plain C{Site}; terminated in cleanup.
        """
        endpoint = SSEBackend(_clock()).setup_sse("/sse", **options)
        self._endpoints.append(endpoint)
        root = Resource()
        root.putChild(b"sse", endpoint.resource)
        return endpoint, Site(root)

    def listen(self, site: Site) -> str:
        """
        Listen on 127.0.0.1 on a free port; return the base URL.
        """
        port = cast(IReactorTCP, _reactor()).listenTCP(0, site, interface="127.0.0.1")
        return self.track_port(port)

    def track_port(self, port: IListeningPort) -> str:
        """
        Stop C{port} listening in cleanup; return its base URL.
        """
        number: int = port.getHost().port  # type: ignore[attr-defined]
        self._ports.append(port)
        self._numbers.append(number)
        return f"http://127.0.0.1:{number}"

    async def open_stream(
        self, url: str, headers: dict[bytes, list[bytes]] | None = None
    ) -> EventStream:
        """
        C{GET url} and start reading it as an event stream.
        """
        response = await self.http.get(
            url, headers=Headers(headers or {}), unbuffered=True, timeout=WAIT
        )
        stream = EventStream(response)
        self._streams.append(stream)
        return stream

    async def raw(self, url: str, request: bytes) -> RawHTTP:
        """
        Connect to C{url}'s port with a plain TCP client and send C{request}
        as it is.
        """
        number = int(url.rsplit(":", 1)[1])
        endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", number, timeout=WAIT)
        protocol = RawHTTP()
        await connectProtocol(endpoint, protocol)
        self._raw.append(protocol)
        assert protocol.transport is not None
        protocol.transport.write(request)
        return protocol

    RAW_REQUEST = (
        b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lean-test/1\r\n"
        b"Referer: http://127.0.0.1/page\r\nX-Tenant: acme\r\n\r\n"
    )

    async def open_raw(self, **options: Any) -> tuple[SSEEndpoint, SSEClient, RawHTTP]:
        """
        An endpoint (with C{options}) and one stream opened on it by a plain
        TCP client sending L{RAW_REQUEST}, read up to its C{setId}.
        """
        endpoint, site = self.endpoint_site(**options)
        url = self.listen(site)
        raw = await self.raw(url, self.RAW_REQUEST)
        await raw.until(lambda: b"setId" in dechunk(raw.head()[2])[0])
        (session,) = endpoint.sessions.values()
        return endpoint, session, raw

    async def post(self, url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        """
        C{POST} C{body} as JSON; return the status and the decoded JSON
        answer (L{None} for an empty body).
        """
        response = await self.http.post(
            url,
            data=json.dumps(body).encode("utf-8"),
            headers=Headers({b"content-type": [b"application/json"]}),
            timeout=WAIT,
            **kwargs,
        )
        raw = await treq.content(response)
        return response.code, (json.loads(raw) if raw else None)

    async def disconnect(
        self, stream: EventStream, endpoint: SSEEndpoint, session_id: str
    ) -> None:
        """
        Make the client drop C{stream} and wait until the server has seen it.
        """
        stream.close()
        endpoint.send("anyone there?", session_id=session_id)
        await stream.until_ended()
        self.assertIsInstance(stream.outcome, Failure)
        await _poll(lambda: session_id not in endpoint.sessions, "the session to go")


class StreamTests(_RealSocketCase):
    """
    The stream and the back-channel of one endpoint, over TCP.
    """

    async def test_opening_and_end_logged(self) -> None:
        """
        A stream's opening and end are logged at C{info}, with its session
        id's start; with C{log_streams=False}, neither is.
        """
        for logged in (True, False):
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            endpoint, session, raw = await self.open_raw(log_streams=logged)
            assert raw.transport is not None
            raw.transport.loseConnection()
            sessions = endpoint.sessions
            await _poll(lambda s=sessions: not s, "the session to end")  # type: ignore[misc]
            texts = [
                formatEvent(e)
                for e in events
                if e.get("log_namespace", "").startswith("txgraphsse._streams")
            ]
            expected = [
                f"Session {session.id[:8]} opened on /sse from 127.0.0.1",
                f"Session {session.id[:8]} closed: client disconnected",
            ]
            self.assertEqual(texts, expected if logged else [], logged)

    async def test_headers_retry_and_set_id_first(self) -> None:
        """
        C{GET} answers C{200} with the event-stream headers, chunked and with
        no length; the body starts with C{retry:} and then the C{setId}
        message naming a session the endpoint holds.
        """
        endpoint, site = self.endpoint_site(retry=1500)
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        response = stream.response
        self.assertEqual(response.code, 200)
        headers = response.headers
        self.assertEqual(
            headers.getRawHeaders(b"content-type"),
            [b"text/event-stream; charset=utf-8"],
        )
        self.assertEqual(
            headers.getRawHeaders(b"cache-control"), [b"no-cache, no-transform"]
        )
        self.assertEqual(headers.getRawHeaders(b"x-accel-buffering"), [b"no"])
        self.assertIsNone(headers.getRawHeaders(b"content-length"))
        # treq asks for gzip; the stream must not be compressed (Twisted's
        # decoder agent leaves an empty header behind when nothing was).
        self.assertEqual(b"".join(headers.getRawHeaders(b"content-encoding", [])), b"")
        session_id = await stream.session_id()
        self.assertTrue(bytes(stream.raw).startswith(b"retry: 1500\n\n"))
        self.assertEqual(stream.parser.retry, 1500)
        self.assertEqual(stream.events[0].type, "message")
        self.assertGreaterEqual(len(session_id), 22)
        self.assertIn(session_id, endpoint.sessions)

    async def test_session_ids_differ(self) -> None:
        """
        Every stream gets its own session id.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        ids = []
        for _ in range(3):
            stream = await self.open_stream(url + "/sse")
            ids.append(await stream.session_id())
        self.assertEqual(len(set(ids)), 3)
        self.assertEqual(set(endpoint.sessions), set(ids))

    async def test_keepalive_comment(self) -> None:
        """
        An idle stream gets a keep-alive comment at the configured interval;
        the parser dispatches no event for it.
        """
        _, site = self.endpoint_site(keepalive=0.05)
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        await stream.session_id()
        start = len(stream.raw)
        await stream.until(lambda: b":\n\n" in stream.raw[start:])
        self.assertEqual(len(stream.events), 1)

    async def test_broadcast_reaches_every_client(self) -> None:
        """
        C{send} without a session id reaches every open stream, as the
        same event.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        streams = [await self.open_stream(url + "/sse") for _ in range(3)]
        for stream in streams:
            await stream.session_id()
        self.assertEqual(endpoint.send({"n": 1}), 3)
        self.assertEqual(endpoint.send("plain text", event="note"), 3)
        for stream in streams:
            await stream.count(3)
            self.assertEqual(
                [(e.type, e.data) for e in stream.events[1:]],
                [("message", '{"n":1}'), ("note", "plain text")],
            )

    async def test_push_to_one_session(self) -> None:
        """
        C{send(..., session_id=...)} and L{SSEClient.push} reach only that
        session; a broadcast sent after them reaches everyone, so the other
        stream's events show that nothing else arrived before it.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        first = await self.open_stream(url + "/sse")
        second = await self.open_stream(url + "/sse")
        first_id = await first.session_id()
        second_id = await second.session_id()
        self.assertEqual(endpoint.send({"to": "first"}, session_id=first_id), 1)
        endpoint.sessions[second_id].push({"to": "second"}, event="private")
        self.assertEqual(endpoint.send("x", session_id="no-such-session"), 0)
        endpoint.send({"to": "all"})
        await first.count(3)
        await second.count(3)
        self.assertEqual(
            first.payloads(), [("message", {"to": "first"}), ("message", {"to": "all"})]
        )
        self.assertEqual(
            second.payloads(),
            [("private", {"to": "second"}), ("message", {"to": "all"})],
        )

    async def test_channels_by_query(self) -> None:
        """
        C{?channels=} joins named channels: their events, named after the
        channel, reach only members, while the default channel reaches all.
        """
        endpoint, site = self.endpoint_site(channels=["news", "sport"])
        url = self.listen(site)
        news = await self.open_stream(url + "/sse?channels=news")
        both = await self.open_stream(url + "/sse?channels=news,sport")
        plain = await self.open_stream(url + "/sse")
        for stream in (news, both, plain):
            await stream.session_id()
        self.assertEqual(endpoint.channels["news"].broadcast({"headline": 1}), 2)
        self.assertEqual(endpoint.channels["sport"].broadcast({"score": 2}), 1)
        endpoint.send("end")
        for stream in (news, both, plain):
            await stream.until(lambda s=stream: s.events[-1].data == "end")  # type: ignore[misc]
        self.assertEqual(
            [(e.type, e.data) for e in news.events[1:]],
            [("news", '{"headline":1}'), ("message", "end")],
        )
        self.assertEqual(
            [(e.type, e.data) for e in both.events[1:]],
            [("news", '{"headline":1}'), ("sport", '{"score":2}'), ("message", "end")],
        )
        self.assertEqual(
            [(e.type, e.data) for e in plain.events[1:]], [("message", "end")]
        )

    async def test_unknown_channel_refused(self) -> None:
        """
        Asking for a channel the endpoint does not have is a C{403} JSON
        error, and opens no session.
        """
        endpoint, site = self.endpoint_site(channels=["news"])
        url = self.listen(site)
        response = await self.http.get(url + "/sse?channels=nope", timeout=WAIT)
        body = await treq.json_content(response)
        self.assertEqual(response.code, 403)
        self.assertEqual(body["error"]["code"], "forbidden")
        self.assertEqual(endpoint.sessions, {})

    async def test_history_replay_on_reconnect(self) -> None:
        """
        A client that reconnects with the last id it saw in C{Last-Event-ID}
        gets the events it missed, with their ids and in order, before live
        ones, and no C{reset}.
        """
        endpoint, site = self.endpoint_site(channels=["news"], history=10)
        url = self.listen(site)
        news = endpoint.channels["news"]
        first = await self.open_stream(url + "/sse?channels=news")
        session_id = await first.session_id()
        news.broadcast({"n": 1})
        news.broadcast({"n": 2})
        await first.count(3)
        last_id = first.parser.last_event_id
        self.assertTrue(last_id)
        self.assertEqual(first.events[2].last_event_id, last_id)
        await self.disconnect(first, endpoint, session_id)

        news.broadcast({"n": 3})
        news.broadcast({"n": 4})
        again = await self.open_stream(
            url + "/sse?channels=news",
            headers={b"last-event-id": [last_id.encode("ascii")]},
        )
        await again.count(3)
        news.broadcast({"n": 5})
        await again.count(4)
        self.assertEqual(
            again.payloads(),
            [("news", {"n": 3}), ("news", {"n": 4}), ("news", {"n": 5})],
        )
        ids = [e.last_event_id for e in again.events[1:]]
        self.assertEqual(len(set(ids)), 3)
        self.assertNotIn(last_id, ids)

    async def test_replay_by_query(self) -> None:
        """
        C{?lastEventId=} works as the header does, for clients that cannot
        set headers.
        """
        endpoint, site = self.endpoint_site(history=10)
        url = self.listen(site)
        first = await self.open_stream(url + "/sse")
        await first.session_id()
        endpoint.send({"n": 1})
        endpoint.send({"n": 2})
        await first.count(3)
        again = await self.open_stream(
            url + "/sse?lastEventId=" + first.events[1].last_event_id
        )
        await again.count(2)
        self.assertEqual(again.payloads(), [("message", {"n": 2})])

    async def test_unknown_last_event_id_resets(self) -> None:
        """
        An id the server does not know is "too old": a C{reset} event that
        quotes it comes before everything still kept.
        """
        endpoint, site = self.endpoint_site(history=10)
        url = self.listen(site)
        endpoint.send({"n": 1})
        endpoint.send({"n": 2})
        stream = await self.open_stream(
            url + "/sse", headers={b"last-event-id": [b"not-an-id"]}
        )
        await stream.count(4)
        self.assertEqual(
            stream.payloads(),
            [
                ("reset", {"route": "reset", "args": {"lastEventId": "not-an-id"}}),
                ("message", {"n": 1}),
                ("message", {"n": 2}),
            ],
        )

    async def test_history_too_short_resets(self) -> None:
        """
        When more events came after the client's id than the history keeps,
        the replay starts with C{reset} and holds only what is kept.
        """
        endpoint, site = self.endpoint_site(history=2)
        url = self.listen(site)
        first = await self.open_stream(url + "/sse")
        session_id = await first.session_id()
        endpoint.send({"n": 1})
        await first.count(2)
        last_id = first.parser.last_event_id
        await self.disconnect(first, endpoint, session_id)
        for n in (2, 3, 4):
            endpoint.send({"n": n})
        again = await self.open_stream(
            url + "/sse", headers={b"last-event-id": [last_id.encode("ascii")]}
        )
        await again.count(4)
        self.assertEqual(
            [t for t, _ in again.payloads()], ["reset", "message", "message"]
        )
        self.assertEqual([d for _, d in again.payloads()[1:]], [{"n": 3}, {"n": 4}])

    async def test_client_disconnect_removes_session(self) -> None:
        """
        When the client drops the connection, the server removes the
        session, says why, and calls C{on_connection_close}.
        """
        closed: list[str] = []

        def on_close(
            client: SSEClient, endpoint: SSEEndpoint, session_id: str, request: Request
        ) -> None:
            closed.append(session_id)

        endpoint, site = self.endpoint_site(on_connection_close=on_close)
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        other = await self.open_stream(url + "/sse")
        session_id = await stream.session_id()
        other_id = await other.session_id()
        session = endpoint.sessions[session_id]
        await self.disconnect(stream, endpoint, session_id)
        self.assertEqual(closed, [session_id])
        self.assertFalse(session.is_connected)
        self.assertEqual(session.close_reason, "client disconnected")
        self.assertEqual(list(endpoint.sessions), [other_id])
        self.assertEqual(endpoint.channels["message"].session_count, 1)

    async def test_post_ping(self) -> None:
        """
        C{POST {"route":"ping"}} answers C{{"args":"pong"}} as JSON.
        """
        _, site = self.endpoint_site()
        url = self.listen(site)
        response = await self.http.post(
            url + "/sse",
            data=b'{"route":"ping"}',
            headers=Headers({b"content-type": [b"application/json"]}),
            timeout=WAIT,
        )
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders(b"content-type")[0].startswith(
                b"application/json"
            )
        )
        self.assertEqual(await treq.json_content(response), {"args": "pong"})

    async def test_post_needs_json(self) -> None:
        """
        A C{POST} that is not C{application/json} (a cross-site form) is
        refused with C{415}.
        """
        _, site = self.endpoint_site()
        url = self.listen(site)
        response = await self.http.post(
            url + "/sse",
            data=b"route=ping",
            headers=Headers({b"content-type": [b"application/x-www-form-urlencoded"]}),
            timeout=WAIT,
        )
        body = await treq.json_content(response)
        self.assertEqual(
            (response.code, body["error"]["code"]), (415, "bad_content_type")
        )

    async def test_server_request_answered_by_client(self) -> None:
        """
        A server-to-client request goes out as a C{runRequest} envelope on
        the stream; the client's C{POST} of the result, quoting the callback
        id and its session, fires the server's L{Deferred}.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        session_id = await stream.session_id()
        answer = endpoint.request(
            {"route": "add", "args": [1, 2]}, session_id=session_id
        )
        assert isinstance(answer, Deferred)
        await stream.count(2)
        kind, envelope = stream.payloads()[0]
        self.assertEqual(kind, "message")
        self.assertEqual(envelope["route"], "runRequest")
        message, path, callback_id, sid = envelope["args"]
        self.assertEqual(
            (message, path, sid), ({"route": "add", "args": [1, 2]}, "/sse", session_id)
        )
        status, _ = await self.post(
            url + "/sse",
            {"args": 3, "callbackId": callback_id, "sessionId": session_id},
        )
        self.assertIn(status, (200, 204))
        self.assertEqual(await answer, 3)

    async def test_head_opens_no_session(self) -> None:
        """
        C{HEAD} answers the stream's headers with an empty body and opens no
        session.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        response = await self.http.head(url + "/sse", timeout=WAIT)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/event-stream; charset=utf-8"],
        )
        self.assertEqual(await treq.content(response), b"")
        self.assertEqual(endpoint.sessions, {})
        self.assertEqual(endpoint.counters.sessions_opened, 0)

    async def test_http11_stream_is_chunked_and_kept_alive(self) -> None:
        """
        On the wire, an HTTP/1.1 stream is chunk-framed with C{Connection:
        keep-alive} and no length; terminating the endpoint ends it with the
        zero-length chunk and leaves the connection open for the next
        request.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        raw = await self.raw(url, b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await raw.until(lambda: b"setId" in dechunk(raw.head()[2])[0])
        status, headers, body = raw.head()
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"connection"], [b"keep-alive"])
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertNotIn(b"content-length", headers)
        payload, ended = dechunk(body)
        self.assertTrue(payload.startswith(b"retry: 2000\n\nevent: message\n"))
        self.assertFalse(ended)
        endpoint.terminate()
        await raw.until(lambda: dechunk(raw.head()[2])[1])
        self.assertFalse(raw.lost.called)
        self.assertEqual(endpoint.sessions, {})

    async def test_connection_close_is_honoured(self) -> None:
        """
        A client that sends C{Connection: close} is told C{close}, not
        C{keep-alive}, and the server closes the connection after the
        stream's zero-length chunk.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        raw = await self.raw(
            url,
            b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        await raw.until(lambda: b"setId" in dechunk(raw.head()[2])[0])
        _, headers, _ = raw.head()
        self.assertEqual(headers[b"connection"], [b"close"])
        endpoint.terminate()
        await raw.until_lost()
        self.assertTrue(dechunk(raw.head()[2])[1])

    async def test_http10_stream_ends_with_the_connection(self) -> None:
        """
        An HTTP/1.0 stream is not chunked and carries no C{Connection:
        keep-alive}; it ends when the server closes the connection.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        raw = await self.raw(url, b"GET /sse HTTP/1.0\r\n\r\n")
        await raw.until(lambda: b"setId" in raw.head()[2])
        status, headers, body = raw.head()
        self.assertTrue(status.startswith(b"HTTP/1.0 200"), status)
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertNotEqual(headers.get(b"connection"), [b"keep-alive"])
        self.assertTrue(body.startswith(b"retry: 2000\n\n"))
        endpoint.send("last")
        await raw.until(lambda: raw.head()[2].endswith(b"data: last\n\n"))
        endpoint.terminate()
        await raw.until_lost()


class LeanStreamTests(_RealSocketCase):
    """
    What an open stream lets go of, and how its first bytes leave: ten
    thousand idle streams hold only what they still need.
    """

    async def test_request_keeps_only_what_the_access_log_needs(self) -> None:
        """
        C{on_connection} sees every request header; afterwards the stream's
        request keeps only C{User-Agent} and C{Referer} (what Twisted's
        access log writes when it ends), no response headers (they are on
        the wire) and no body file.
        """
        seen: list[bytes | None] = []

        def opened(client: SSEClient, *_: object) -> None:
            seen.append(client.http_request.getHeader(b"x-tenant"))

        endpoint, session, raw = await self.open_raw(on_connection=opened)
        self.assertEqual(seen, [b"acme"])
        request = session.http_request
        self.assertEqual(
            sorted(name for name, _ in request.requestHeaders.getAllRawHeaders()),
            [b"Referer", b"User-Agent"],
        )
        self.assertEqual(list(request.responseHeaders.getAllRawHeaders()), [])
        self.assertIsNone(request.content)
        line = http.combinedLogFormatter("-", request)
        self.assertIn('"http://127.0.0.1/page" "lean-test/1"', line)
        # The stream still works, and still ends cleanly.
        endpoint.send("still here", session_id=session.id)
        await raw.until(lambda: b"still here" in dechunk(raw.head()[2])[0])
        endpoint.terminate()
        await raw.until(lambda: dechunk(raw.head()[2])[1])

    async def test_keep_request_headers(self) -> None:
        """
        C{keep_request_headers} names the headers kept; L{None} keeps all.
        """
        _, session, _ = await self.open_raw(keep_request_headers=[b"X-Tenant"])
        headers = session.http_request.requestHeaders
        self.assertEqual(
            [name for name, _ in headers.getAllRawHeaders()], [b"X-Tenant"]
        )
        _, session, _ = await self.open_raw(keep_request_headers=None)
        headers = session.http_request.requestHeaders
        self.assertEqual(headers.getRawHeaders(b"x-tenant"), [b"acme"])
        self.assertEqual(headers.getRawHeaders(b"host"), [b"127.0.0.1"])


class SiteEmbedTests(_RealSocketCase):
    """
    C{examples/site_embed.py}: the endpoint under C{putChild} in a Site.
    """

    async def test_streams_beside_other_resources(self) -> None:
        """
        The example's site streams ticks on the C{ticks} channel at C{/sse}
        and still serves its other resources.
        """
        example = load_example("site_embed")
        endpoint, site = example.build_site(SSEBackend(_clock()))
        self._endpoints.append(endpoint)
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse?channels=ticks")
        await stream.session_id()
        ticks = example.start_ticks(endpoint, _clock(), 0.02)
        self.addCleanup(lambda: ticks.running and ticks.stop())
        await stream.count(3)
        ticks.stop()
        (first, first_data), (second, second_data) = stream.payloads()[:2]
        self.assertEqual((first, second), ("ticks", "ticks"))
        self.assertEqual((first_data["tick"], second_data["tick"]), (1, 2))
        hello = await self.http.get(url + "/hello", timeout=WAIT)
        self.assertEqual(await treq.content(hello), b"hello, world\n")
        page = await self.http.get(url + "/", timeout=WAIT)
        self.assertIn(b"EventSource", await treq.content(page))
        status, body = await self.post(url + "/sse", {"route": "ping"})
        self.assertEqual((status, body), (200, {"args": "pong"}))

    async def test_main_serves_until_stopped(self) -> None:
        """
        C{main} listens where C{argv} says and ticks; stopping it sends open
        streams a last C{shutdown} event, ends them cleanly, and fires
        C{main}'s L{Deferred}.
        """
        example = load_example("site_embed")
        servers: list[Any] = []
        argv = ["--port", "0", "--interface", "127.0.0.1", "--interval", "0.02"]
        finished = example.main(_reactor(), argv, on_ready=servers.append)
        [server] = servers
        self._endpoints.append(server.endpoint)
        self.addCleanup(server.stop)
        self.assertEqual(server.port.getHost().host, "127.0.0.1")
        self.track_port(server.port)
        stream = await self.open_stream(server.url + "?channels=ticks")
        await stream.count(2)
        self.assertEqual(stream.events[1].type, "ticks")
        self.assertFalse(finished.called)
        await server.stop()
        self.assertTrue(finished.called)
        await stream.until_ended()
        self.assertIsNone(stream.outcome)
        self.assertEqual(stream.events[-1].type, "shutdown")
        self.assertFalse(server.ticks.running)


class KleinEmbedTests(_RealSocketCase):
    """
    C{examples/klein_embed.py}: the endpoint as a Klein route with
    C{branch=True}.
    """

    async def test_streams_in_klein(self) -> None:
        """
        Klein renders the endpoint's resource without finishing the request:
        the stream stays open and gets ticks, the back-channel answers, the
        app's own JSON route sees the session, and the paths below C{/sse}
        reach the endpoint (its browser client, or its JSON 404).
        """
        example = load_example("klein_embed")
        tick_app = example.TickApp(SSEBackend(_clock()))
        self._endpoints.append(tick_app.endpoint)
        url = self.listen(Site(tick_app.app.resource()))
        stream = await self.open_stream(url + "/sse?channels=ticks")
        session_id = await stream.session_id()
        self.assertEqual(tick_app.tick(), 1)
        self.assertEqual(tick_app.tick(), 1)
        await stream.count(3)
        self.assertEqual(
            stream.payloads(), [("ticks", {"tick": 1}), ("ticks", {"tick": 2})]
        )
        status = await self.http.get(url + "/status", timeout=WAIT)
        self.assertEqual(await treq.json_content(status), {"sessions": 1, "ticks": 2})
        code, body = await self.post(url + "/sse", {"route": "ping"})
        self.assertEqual((code, body), (200, {"args": "pong"}))
        code, body = await self.post(
            url + "/sse", {"route": "echo", "args": ["hi"], "sessionId": session_id}
        )
        self.assertEqual((code, body), (200, {"args": "hi"}))
        client_js = await self.http.get(url + "/sse/client.js", timeout=WAIT)
        self.assertEqual(client_js.code, 200)
        self.assertEqual(
            client_js.headers.getRawHeaders(b"content-type"),
            [b"text/javascript; charset=utf-8"],
        )
        self.assertTrue(await treq.content(client_js))
        below = await self.http.get(url + "/sse/nothing/here", timeout=WAIT)
        self.assertEqual(below.code, 404)
        self.assertEqual((await treq.json_content(below))["error"]["code"], "no_route")

    async def test_main_serves_until_stopped(self) -> None:
        """
        The Klein example's C{main} ticks on its own and, once stopped, ends
        the stream after a C{shutdown} event and fires its L{Deferred}.
        """
        example = load_example("klein_embed")
        servers: list[Any] = []
        argv = ["--port", "0", "--interface", "127.0.0.1", "--interval", "0.02"]
        finished = example.main(_reactor(), argv, on_ready=servers.append)
        [server] = servers
        self._endpoints.append(server.app.endpoint)
        self.addCleanup(server.stop)
        self.track_port(server.port)
        stream = await self.open_stream(server.url + "/sse?channels=ticks")
        await stream.count(2)
        self.assertEqual(stream.events[1].type, "ticks")
        await server.stop()
        self.assertTrue(finished.called)
        await stream.until_ended()
        self.assertIsNone(stream.outcome)
        self.assertEqual(stream.events[-1].type, "shutdown")
