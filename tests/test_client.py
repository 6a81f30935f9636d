"""
Tests for L{txgraphsse.client}: the Python L{EventSource} and
L{GraphSSEClient}.

Timing (reconnection, backoff, C{Retry-After}, the idle watchdog) is driven
by a L{MemoryReactorClock} and a fake L{IAgent} whose responses the tests
write by hand.  Everything else runs over real sockets on 127.0.0.1 against
a real txgraphsse server, and leaves the reactor as it found it: every client
is terminated, every endpoint closed, every port stopped and every
connection gone before a test returns.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, cast

from attrs import fields
from treq.client import HTTPClient
from twisted.internet import tcp
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from txgraphsse import (
    AccessDenied,
    Limits,
    RemoteCallError,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
)
from txgraphsse._client._source import StreamOptions
from txgraphsse._client._waiters import Waiters
from txgraphsse.client import (
    ClientClosed,
    Connection,
    EventSource,
    GraphSSEClient,
    IdleTimeout,
    ReadyState,
    RemoteError,
    ServerSentEvent,
    UnknownRoute,
)

from ._layout import PACKAGE, ROOT, module_name, package_imports
from .servers import HoldNext

#: Seconds any single wait over real sockets may take before the test fails.
WAIT = 5.0

URL = "http://example.test/sse"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# In memory: a fake agent and responses written by hand


class FakeBodyTransport:
    """
    The transport a body protocol gets: stopping it ends the body as a lost
    connection does.
    """

    def __init__(self, response: FakeResponse) -> None:
        self._response = response
        self.stopped = False

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._response.lose(ConnectionLost("dropped by the client"))

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IResponse)
class FakeResponse:
    """
    A response whose body the test writes; with C{body}, the whole body is
    there at once.
    """

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    request = None
    previousResponse = None

    def __init__(
        self,
        code: int,
        headers: dict[bytes, list[bytes]] | None = None,
        body: bytes | None = None,
    ) -> None:
        self.code = code
        self.headers = Headers(headers or {})
        self.length = UNKNOWN_LENGTH if body is None else len(body)
        self._body = body
        self.protocol: Any = None
        self.transport = FakeBodyTransport(self)
        self.ended = False

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        if self._body is not None and not self.ended:
            if self._body:
                protocol.dataReceived(self._body)
            self.lose(ResponseDone())

    def write(self, data: bytes) -> None:
        assert not self.ended
        self.protocol.dataReceived(data)

    def finish(self) -> None:
        self.lose(ResponseDone())

    def lose(self, reason: Exception) -> None:
        if self.ended:
            return
        self.ended = True
        if not isinstance(reason, ResponseDone):
            reason = ResponseFailed([Failure(reason)])
        self.protocol.connectionLost(Failure(reason))

    def setPreviousResponse(self, response: IResponse) -> None:
        pass


class FakeRequest:
    """
    One request the fake agent got; the test answers it.
    """

    def __init__(self, method: bytes, uri: bytes, headers: Headers) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.cancelled = False
        self.deferred: Deferred[IResponse] = Deferred(self._cancel)

    def _cancel(self, _: object) -> None:
        self.cancelled = True

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None

    def stream(self, code: int = 200) -> FakeResponse:
        """
        Answer with an open C{text/event-stream} body.
        """
        response = FakeResponse(code, {b"content-type": [b"text/event-stream"]})
        self.deferred.callback(response)
        return response

    def answer(
        self,
        code: int,
        body: bytes = b"",
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> FakeResponse:
        """
        Answer with a complete body.
        """
        response = FakeResponse(code, headers, body)
        self.deferred.callback(response)
        return response


@implementer(IAgent)
class FakeAgent:
    """
    Records each request and lets the test answer it.
    """

    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: Any = None,
    ) -> Deferred[IResponse]:
        request = FakeRequest(method, uri, headers or Headers())
        self.requests.append(request)
        return request.deferred

    @property
    def last(self) -> FakeRequest:
        return self.requests[-1]


class _MemoryCase(SynchronousTestCase):
    """
    An L{EventSource} on a memory clock and a fake agent, no jitter.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.agent = FakeAgent()
        self.errors: list[Failure] = []
        self.closes: list[Failure | None] = []

    def source(self, **options: Any) -> EventSource:
        options.setdefault("jitter", 0.0)
        source = EventSource(URL, self.clock, agent=self.agent, **options)
        source.on_error = self.errors.append
        source.on_close = self.closes.append
        self.addCleanup(source.close)
        return source

    def connect_after(self, source: EventSource, delay: float) -> None:
        """
        Assert that the next request goes out exactly C{delay} seconds from
        now, not before.
        """
        count = len(self.agent.requests)
        self.clock.advance(delay - 0.001)
        self.assertEqual(len(self.agent.requests), count, "reconnected too early")
        self.clock.advance(0.001)
        self.assertEqual(len(self.agent.requests), count + 1, "did not reconnect")

    def timers(self) -> list[IDelayedCall]:
        return [call for call in self.clock.getDelayedCalls() if call.active()]


class EventSourceRequestTests(_MemoryCase):
    """
    What the stream's C{GET} asks for.
    """

    def test_headers(self) -> None:
        """
        The C{GET} accepts C{text/event-stream}, asks for no caching and no
        compression, carries the caller's headers, and has no
        C{Last-Event-ID} the first time.
        """
        self.source(headers={"Authorization": "Bearer x"})
        request = self.agent.last
        self.assertEqual(request.method, b"GET")
        self.assertEqual(request.uri, URL.encode("ascii"))
        self.assertEqual(
            request.header(b"accept"), b"text/event-stream, application/json"
        )
        self.assertEqual(request.header(b"cache-control"), b"no-cache")
        self.assertEqual(request.header(b"accept-encoding"), b"identity")
        self.assertEqual(request.header(b"authorization"), b"Bearer x")
        self.assertIsNone(request.header(b"last-event-id"))

    def test_last_event_id_given(self) -> None:
        """
        A source told to resume sends C{Last-Event-ID} on its first request.
        """
        self.source(last_event_id="chat:7")
        self.assertEqual(self.agent.last.header(b"last-event-id"), b"chat:7")

    def test_start_later(self) -> None:
        """
        With C{start=False} nothing is requested until L{EventSource.start};
        starting twice requests once.
        """
        source = self.source(start=False)
        self.assertEqual(self.agent.requests, [])
        source.start()
        source.start()
        self.assertEqual(len(self.agent.requests), 1)

    def test_bad_url(self) -> None:
        """
        Only C{http} and C{https} URLs are accepted, and a last event id
        cannot smuggle a header line in.
        """
        self.assertRaises(ValueError, EventSource, "ftp://x/sse", self.clock)
        self.assertRaises(
            ValueError, EventSource, URL, self.clock, last_event_id="1\r\nX: y"
        )


class EventSourceDispatchTests(_MemoryCase):
    """
    Events reach the handlers of their name.
    """

    def test_events_by_name(self) -> None:
        """
        Each event goes to the handlers of its type only; an event without
        a name is a C{message}; multi-line data is joined with C{\\n}.
        """
        source = self.source()
        messages: list[ServerSentEvent] = []
        news: list[ServerSentEvent] = []
        source.add_handler("message", messages.append)
        source.add_handler("news", news.append)
        body = self.agent.last.stream()
        body.write(
            b"data: one\n\nevent: news\ndata: a\ndata: b\n\nevent: other\ndata: x\n\n"
        )
        self.assertEqual([e.data for e in messages], ["one"])
        self.assertEqual([(e.type, e.data) for e in news], [("news", "a\nb")])

    def test_split_anywhere(self) -> None:
        """
        Bytes split at any point, even inside a UTF-8 character or a CRLF,
        make the same events.
        """
        source = self.source()
        seen: list[str] = []
        source.add_handler("message", lambda e: seen.append(e.data))
        body = self.agent.last.stream()
        for byte in "data: héllo\r\n\r\ndata: 2\r\n\r\n".encode():
            body.write(bytes([byte]))
        self.assertEqual(seen, ["héllo", "2"])

    def test_open_state_and_when_open(self) -> None:
        """
        The source is CONNECTING until the stream answers, then OPEN;
        C{when_open} fires then, C{on_open} is called, and a C{when_open}
        asked while open fires at once.
        """
        source = self.source()
        opened: list[None] = []
        source.on_open = lambda: opened.append(None)
        waiting = source.when_open()
        self.assertEqual(source.ready_state, ReadyState.CONNECTING)
        self.assertNoResult(waiting)
        self.agent.last.stream()
        self.assertEqual(source.ready_state, EventSource.OPEN)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(opened, [None])
        self.assertIsNone(self.successResultOf(source.ready))

    def test_handler_failure_isolated(self) -> None:
        """
        A handler that raises is logged; the other handlers and the later
        events still run.
        """
        source = self.source()
        seen: list[str] = []

        def broken(event: ServerSentEvent) -> None:
            raise RuntimeError("boom")

        source.add_handler("message", broken)
        source.add_handler("message", lambda e: seen.append(e.data))
        self.agent.last.stream().write(b"data: 1\n\ndata: 2\n\n")
        self.assertEqual(seen, ["1", "2"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_remove_handler(self) -> None:
        """
        A removed handler gets nothing more; removing it twice says so.
        """
        source = self.source()
        seen: list[str] = []
        source.add_handler("message", seen.append)  # type: ignore[arg-type]
        self.assertTrue(source.remove_handler("message", seen.append))  # type: ignore[arg-type]
        self.assertFalse(source.remove_handler("message", seen.append))  # type: ignore[arg-type]
        self.agent.last.stream().write(b"data: 1\n\n")
        self.assertEqual(seen, [])

    def test_close_in_handler(self) -> None:
        """
        A handler that closes the source stops the dispatch of the events
        that came in the same chunk, and the stream is dropped.
        """
        source = self.source()
        seen: list[str] = []

        def first(event: ServerSentEvent) -> None:
            seen.append(event.data)
            source.close()

        source.add_handler("message", first)
        body = self.agent.last.stream()
        body.write(b"data: 1\n\ndata: 2\n\n")
        self.assertEqual(seen, ["1"])
        self.assertTrue(body.transport.stopped)
        self.assertEqual(source.ready_state, ReadyState.CLOSED)

    def test_last_event_id_tracked(self) -> None:
        """
        C{last_event_id} follows the events' ids, an id-only block, and an
        empty C{id:} that resets it.
        """
        source = self.source()
        body = self.agent.last.stream()
        body.write(b"id: 1\ndata: a\n\n")
        self.assertEqual(source.last_event_id, "1")
        body.write(b"id: 2\n\n")
        self.assertEqual(source.last_event_id, "2")
        body.write(b"id\ndata: b\n\n")
        self.assertEqual(source.last_event_id, "")

    def test_bom_skipped(self) -> None:
        """
        A UTF-8 byte order mark at the start of a stream is not part of the
        first line, whatever id the source resumes from.
        """
        source = self.source(last_event_id="5")
        seen: list[ServerSentEvent] = []
        source.add_handler("message", seen.append)
        self.agent.last.stream().write(b"\xef\xbb\xbfdata: x\n\n")
        self.assertEqual([(e.data, e.last_event_id) for e in seen], [("x", "5")])


class EventSourceReconnectTests(_MemoryCase):
    """
    When and how the source reconnects.
    """

    def test_reconnect_after_end(self) -> None:
        """
        When the server ends the stream, the source reports it, waits the
        stream's C{retry:} and reconnects with C{Last-Event-ID}.
        """
        source = self.source()
        body = self.agent.last.stream()
        body.write(b"retry: 500\n\nid: 7\ndata: x\n\n")
        self.assertEqual(source.retry, 500)
        body.finish()
        self.assertEqual(source.ready_state, ReadyState.CONNECTING)
        self.assertEqual(len(self.errors), 1)
        self.errors[0].trap(ResponseDone)
        self.connect_after(source, 0.5)
        self.assertEqual(self.agent.last.header(b"last-event-id"), b"7")

    def test_default_retry(self) -> None:
        """
        Without C{retry:} from the stream, the source waits 2 s.
        """
        source = self.source()
        self.agent.last.stream().finish()
        self.connect_after(source, 2.0)

    def test_id_kept_by_events_without_id(self) -> None:
        """
        A new stream whose events carry no id keeps the id the source had:
        the next reconnection sends it again.
        """
        source = self.source(retry=100)
        body = self.agent.last.stream()
        body.write(b"id: 42\ndata: x\n\n")
        body.finish()
        self.clock.advance(0.1)
        seen: list[ServerSentEvent] = []
        source.add_handler("message", seen.append)
        body = self.agent.last.stream()
        body.write(b"data: no id\n\n")
        self.assertEqual(seen[0].last_event_id, "42")
        body.finish()
        self.clock.advance(0.2)
        self.assertEqual(self.agent.last.header(b"last-event-id"), b"42")

    def test_backoff_doubles_and_caps(self) -> None:
        """
        Each failure in a row doubles the wait, up to C{max_backoff}; a
        stream that ends without sending anything is one more failure, and
        one that sent something starts over from C{retry}.
        """
        source = self.source(max_backoff=20.0)
        for delay in (2.0, 4.0, 8.0):
            self.agent.last.deferred.errback(ConnectionRefusedError())
            self.connect_after(source, delay)
        self.agent.last.stream().finish()
        self.connect_after(source, 16.0)
        for delay in (20.0, 20.0):
            self.agent.last.deferred.errback(ConnectionRefusedError())
            self.connect_after(source, delay)
        body = self.agent.last.stream()
        body.write(b":\n\n")
        body.finish()
        self.connect_after(source, 2.0)
        self.assertTrue(
            all(f.check(ConnectionRefusedError, ResponseDone) for f in self.errors)
        )

    def test_jitter(self) -> None:
        """
        With jitter, each wait is the computed one stretched by up to that
        fraction, and not always by the same amount.
        """
        source = self.source(jitter=0.25)
        waits = {source.backoff() for _ in range(50)}
        self.assertTrue(all(2.0 <= wait <= 2.5 for wait in waits), waits)
        self.assertGreater(len(waits), 1)

    def test_retry_after_on_503(self) -> None:
        """
        A C{503} is retried, after its C{Retry-After} rather than the usual
        wait, and reported as a L{RemoteError} with the server's code.
        """
        source = self.source()
        self.agent.last.answer(
            503,
            b'{"error":{"code":"unavailable","message":"too many sessions"}}',
            {b"retry-after": [b"7"], b"content-type": [b"application/json"]},
        )
        self.assertEqual(source.ready_state, ReadyState.CONNECTING)
        error = self.errors[-1].value
        assert isinstance(error, RemoteError)
        self.assertEqual(
            (error.status, error.code, error.message),
            (503, "unavailable", "too many sessions"),
        )
        self.connect_after(source, 7.0)

    def test_retry_after_date(self) -> None:
        """
        C{Retry-After} may be an HTTP date.
        """
        self.clock.advance(1_000_000_000)
        source = self.source()
        self.agent.last.answer(
            503, b"", {b"retry-after": [b"Sun, 09 Sep 2001 01:47:00 GMT"]}
        )
        # 1_000_000_000 is 2001-09-09 01:46:40 UTC: twenty seconds before.
        self.connect_after(source, 20.0)

    def test_503_without_retry_after(self) -> None:
        """
        A C{503} that names no wait counts as a failure: the usual backoff.
        """
        source = self.source()
        self.agent.last.answer(503)
        self.connect_after(source, 2.0)
        self.agent.last.answer(503)
        self.connect_after(source, 4.0)

    def test_204_stops(self) -> None:
        """
        A C{204} stops the source for good: CLOSED, no timer, C{on_close}
        with a L{RemoteError}, and C{when_open} fails.
        """
        source = self.source()
        waiting = source.when_open()
        self.agent.last.answer(204)
        self.assertEqual(source.ready_state, ReadyState.CLOSED)
        self.assertEqual(self.timers(), [])
        error = self.failureResultOf(waiting, RemoteError).value
        self.assertEqual((error.status, error.code), (204, "closed"))
        self.assertEqual(len(self.closes), 1)
        self.clock.advance(3600)
        self.assertEqual(len(self.agent.requests), 1)
        self.failureResultOf(source.when_open(), RemoteError)

    def test_other_status_stops(self) -> None:
        """
        Any other refusal stops the source too, with the server's JSON
        error.
        """
        source = self.source()
        self.agent.last.answer(
            403, b'{"error":{"code":"forbidden","message":"not you"}}'
        )
        self.assertEqual(source.ready_state, ReadyState.CLOSED)
        reason = self.closes[0]
        assert reason is not None
        error = reason.value
        assert isinstance(error, RemoteError)
        self.assertEqual(
            (error.status, error.code, error.message), (403, "forbidden", "not you")
        )
        self.assertEqual(str(error), "403 forbidden: not you")

    def test_not_an_event_stream_stops(self) -> None:
        """
        A C{200} that is not C{text/event-stream} stops the source.
        """
        source = self.source()
        self.agent.last.answer(200, b"<html>", {b"content-type": [b"text/html"]})
        self.assertEqual(source.ready_state, ReadyState.CLOSED)
        assert self.closes[0] is not None
        self.assertEqual(self.closes[0].value.code, "bad_content_type")

    def test_event_stream_with_parameters(self) -> None:
        """
        C{text/event-stream; charset=utf-8} is an event stream.
        """
        source = self.source()
        response = FakeResponse(
            200, {b"content-type": [b"Text/Event-Stream; charset=utf-8"]}
        )
        self.agent.last.deferred.callback(response)
        self.assertEqual(source.ready_state, ReadyState.OPEN)


class EventSourceIdleTests(_MemoryCase):
    """
    The idle watchdog.
    """

    def test_keepalive_comments_keep_it(self) -> None:
        """
        Keep-alive comments count as traffic: the stream stays up as long
        as they come within C{idle_timeout}.
        """
        source = self.source(idle_timeout=45.0)
        body = self.agent.last.stream()
        for _ in range(5):
            self.clock.advance(40)
            body.write(b":\n\n")
        self.assertEqual(source.ready_state, ReadyState.OPEN)
        self.assertFalse(body.transport.stopped)

    def test_silence_drops(self) -> None:
        """
        C{idle_timeout} seconds without a byte drop the stream, report
        L{IdleTimeout}, and reconnect after the usual wait.
        """
        source = self.source(idle_timeout=45.0)
        body = self.agent.last.stream()
        body.write(b"data: x\n\n")
        self.clock.advance(44.9)
        self.assertFalse(body.transport.stopped)
        self.clock.advance(0.1)
        self.assertTrue(body.transport.stopped)
        self.assertTrue(self.errors[-1].check(IdleTimeout))
        self.assertEqual(len(self.errors), 1)
        self.connect_after(source, 2.0)

    def test_silent_headers(self) -> None:
        """
        A server that never answers the C{GET} is given up on after
        C{idle_timeout} too: the request is cancelled and retried.
        """
        source = self.source(idle_timeout=10.0)
        first = self.agent.last
        self.clock.advance(10.0)
        self.assertTrue(first.cancelled)
        self.assertTrue(self.errors[-1].check(IdleTimeout))
        self.connect_after(source, 2.0)

    def test_no_watchdog(self) -> None:
        """
        With C{idle_timeout=None} a quiet stream is left alone.
        """
        source = self.source(idle_timeout=None)
        body = self.agent.last.stream()
        self.clock.advance(3600)
        self.assertFalse(body.transport.stopped)
        self.assertEqual(source.ready_state, ReadyState.OPEN)
        self.assertEqual(self.timers(), [])


class EventSourceCloseTests(_MemoryCase):
    """
    L{EventSource.close} leaves nothing behind.
    """

    def test_close_open_stream(self) -> None:
        """
        Closing an open stream drops its connection, cancels the watchdog,
        and fires once the body's connection is gone.
        """
        source = self.source()
        body = self.agent.last.stream()
        done = source.close()
        self.assertTrue(body.transport.stopped)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.timers(), [])
        self.assertEqual(source.ready_state, ReadyState.CLOSED)
        self.assertEqual(self.closes, [None])
        self.assertEqual(self.errors, [])

    def test_close_while_waiting(self) -> None:
        """
        Closing between two attempts cancels the reconnection timer.
        """
        source = self.source()
        self.agent.last.stream().finish()
        self.assertEqual(len(self.timers()), 1)
        self.successResultOf(source.close())
        self.assertEqual(self.timers(), [])
        self.clock.advance(60)
        self.assertEqual(len(self.agent.requests), 1)

    def test_close_while_requesting(self) -> None:
        """
        Closing while the C{GET} is on its way cancels it; a C{when_open}
        still waiting fails with L{ClientClosed}.
        """
        source = self.source()
        waiting = source.when_open()
        self.successResultOf(source.close())
        self.assertTrue(self.agent.last.cancelled)
        self.failureResultOf(waiting, ClientClosed)
        self.assertEqual(self.timers(), [])
        self.assertEqual(self.errors, [])

    def test_close_twice(self) -> None:
        """
        Closing again does nothing more; starting a closed source fails.
        """
        source = self.source()
        self.successResultOf(source.close())
        self.successResultOf(source.close())
        self.assertEqual(self.closes, [None])
        self.assertRaises(ClientClosed, source.start)

    def test_cancel_when_open(self) -> None:
        """
        A cancelled C{when_open} is forgotten; the others still fire.
        """
        source = self.source()
        cancelled = source.when_open()
        kept = source.when_open()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.agent.last.stream()
        self.successResultOf(kept)


class StreamOptionsTests(SynchronousTestCase):
    """
    L{EventSource} and L{GraphSSEClient} take the same stream settings,
    L{StreamOptions}, and a client hands them to every source it opens.
    """

    def test_same_names_and_defaults(self) -> None:
        """
        Each constructor's keyword arguments, but for those of its own, are
        the fields of L{StreamOptions}, in their order and with their
        defaults.
        """
        options = [(f.name, f.default) for f in fields(StreamOptions)]
        own = {
            EventSource: {"last_event_id", "retry", "start"},
            GraphSSEClient: {"routes", "max_answer", "get_token"},
        }
        for cls, names in own.items():
            parameters = inspect.signature(cls.__init__).parameters.values()
            shared = [
                (p.name, p.default)
                for p in parameters
                if p.kind is p.KEYWORD_ONLY and p.name not in names
            ]
            self.assertEqual(shared, options, cls.__name__)

    def test_settings_reach_the_source(self) -> None:
        """
        A client's settings are those of the sources it opens, its headers
        joined by the connection's; setting one changes it for the
        connections made after, not for those already made.
        """
        clock = MemoryReactorClock()
        agent = FakeAgent()
        client = GraphSSEClient(
            clock,
            agent=agent,
            headers={"X-Client": "1"},
            idle_timeout=7.0,
            max_backoff=3.0,
            jitter=0.5,
        )
        self.addCleanup(client.terminate)
        first = client.connect(URL, headers={"X-Connection": "2"})
        first.addErrback(lambda failure: failure.trap(ClientClosed))
        source = client.connections[0].source
        self.assertEqual(
            (source.idle_timeout, source.max_backoff, source.jitter), (7.0, 3.0, 0.5)
        )
        self.assertEqual(agent.last.header(b"x-client"), b"1")
        self.assertEqual(agent.last.header(b"x-connection"), b"2")
        self.assertEqual(
            (client.idle_timeout, client.max_backoff, client.jitter), (7.0, 3.0, 0.5)
        )
        client.idle_timeout = None
        client.max_backoff = 9.0
        client.jitter = 0.0
        second = client.connect(URL)
        second.addErrback(lambda failure: failure.trap(ClientClosed))
        later = client.connections[1].source
        self.assertEqual(
            (later.idle_timeout, later.max_backoff, later.jitter), (None, 9.0, 0.0)
        )
        self.assertEqual(
            (source.idle_timeout, source.max_backoff, source.jitter), (7.0, 3.0, 0.5)
        )
        self.assertEqual(agent.last.header(b"x-client"), b"1")
        self.assertIsNone(agent.last.header(b"x-connection"))


class LocalRouteTests(SynchronousTestCase):
    """
    Which function a message runs on one of the client's own routes: the
    verb rule the server follows too, with the client's own L{UnknownRoute}.
    """

    def setUp(self) -> None:
        self.client = GraphSSEClient(MemoryReactorClock(), agent=FakeAgent())
        self.addCleanup(self.client.terminate)

    def unknown(self, name: str, method: str | None = None) -> str:
        failure = self.failureResultOf(
            self.client.call_local(name, None, method), UnknownRoute
        )
        return str(failure.value)

    def test_object_verbs(self) -> None:
        """
        An object route answers its public methods; without a C{method}, its
        C{post}, else its C{__call__}, else its C{get}.
        """

        class Counter:
            def post(self) -> str:
                return "post"

            def get(self) -> str:
                return "get"

            def bump(self, n: int) -> int:
                return n + 1

        class Getter:
            def get(self) -> str:
                return "get"

        self.client.add_route("counter", Counter())
        self.client.add_route("getter", Getter())
        self.assertEqual(
            self.successResultOf(self.client.call_local("counter")), "post"
        )
        self.assertEqual(
            self.successResultOf(self.client.call_local("counter", None, "get")), "get"
        )
        self.assertEqual(
            self.successResultOf(self.client.call_local("counter", [1], "bump")), 2
        )
        self.assertEqual(self.successResultOf(self.client.call_local("getter")), "get")

    def test_function_verbs(self) -> None:
        """
        A function route answers no C{method}, C{get} and C{post}, and no
        other verb.
        """
        self.client.add_route("double", lambda n: n * 2)
        for method in (None, "get", "post"):
            self.assertEqual(
                self.successResultOf(self.client.call_local("double", 3, method)), 6
            )
        self.assertEqual(self.unknown("double", "put"), "double.put")

    def test_unknown_names(self) -> None:
        """
        A missing route, a missing or private verb, and an object with no
        default verb each fail with L{UnknownRoute}, named as before.
        """

        class Bare:
            kind = "bare"

            def _secret(self) -> str:
                return "secret"

        self.client.add_route("bare", Bare())
        self.assertEqual(self.unknown("nope"), "no route 'nope' here")
        self.assertEqual(self.unknown("bare"), "bare")
        self.assertEqual(self.unknown("bare", "_secret"), "bare._secret")
        self.assertEqual(self.unknown("bare", "kind"), "bare.kind")
        self.assertEqual(self.unknown("bare", "missing"), "bare.missing")


class WaitersTests(SynchronousTestCase):
    """
    L{Waiters}, which every waiting call of the client (a stream's opening, a
    session id, a subscription, the last connection's end) is made of.
    """

    def test_fire_reaches_every_waiter_once(self) -> None:
        """
        C{fire} gives its value to every waiter, in the order they came, and
        forgets them: a second C{fire} reaches none of them again, and a
        C{wait} after it waits for the next one.
        """
        waiters: Waiters[str] = Waiters()
        seen: list[tuple[str, str]] = []
        first, second = waiters.wait(), waiters.wait()
        first.addCallback(lambda value: seen.append(("first", value)))
        second.addCallback(lambda value: seen.append(("second", value)))
        self.assertEqual(len(waiters), 2)
        waiters.fire("one")
        self.assertEqual(seen, [("first", "one"), ("second", "one")])
        self.assertEqual(len(waiters), 0)
        waiters.fire("two")
        self.assertEqual(seen, [("first", "one"), ("second", "one")])
        later = waiters.wait()
        self.assertNoResult(later)
        waiters.fire("three")
        self.assertEqual(self.successResultOf(later), "three")

    def test_fail_reaches_every_waiter_once(self) -> None:
        """
        C{fail} fails every waiter with its failure and forgets them: a
        second C{fail} (or a C{fire}) reaches none of them again.
        """
        waiters: Waiters[None] = Waiters()
        first, second = waiters.wait(), waiters.wait()
        failure = Failure(ClientClosed("gone"))
        waiters.fail(failure)
        self.assertIs(self.failureResultOf(first, ClientClosed), failure)
        self.assertIs(self.failureResultOf(second, ClientClosed), failure)
        self.assertEqual(len(waiters), 0)
        waiters.fail(Failure(ZeroDivisionError()))
        waiters.fire(None)
        self.assertEqual(len(waiters), 0)

    def test_cancel_removes_the_waiter(self) -> None:
        """
        A cancelled waiter fails with L{CancelledError} and leaves the list;
        the others still get the value, and the cancelled one is not
        settled again.
        """
        waiters: Waiters[int] = Waiters()
        cancelled, kept = waiters.wait(), waiters.wait()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual(len(waiters), 1)
        waiters.fire(7)
        self.assertEqual(self.successResultOf(kept), 7)
        self.assertEqual(len(waiters), 0)
        # Cancelling a waiter already settled changes nothing.
        kept.cancel()
        self.assertEqual(len(waiters), 0)


# The client's layout

#: The client's private modules, from the bottom up: each may import only
#: those before it (and what it needs of a later one, it names in a
#: Protocol).
CLIENT_LAYERS = (
    "txgraphsse._client._waiters",
    "txgraphsse._client._handlers",
    "txgraphsse._client._watchdog",
    "txgraphsse._client._http",
    "txgraphsse._client._attempt",
    "txgraphsse._client._source",
    "txgraphsse._client._routes",
    "txgraphsse._client._post",
    "txgraphsse._client._tokens",
    "txgraphsse._client._batch",
    "txgraphsse._client._subscriptions",
    "txgraphsse._client._serving",
    "txgraphsse._client._connection",
    "txgraphsse._client._graph",
    "txgraphsse._client._api",
)

#: The modules of the package the client shares with the server: the wire,
#: and the rule of which verb a message runs.  No other module of the
#: package (none of the server's) may be imported by the client.
SHARED_WIRE = {
    "txgraphsse._parser",
    "txgraphsse._messages",
    "txgraphsse._encoder",
    "txgraphsse._verbs",
}


class ClientLayoutTests(SynchronousTestCase):
    """
    The client's modules: what they may import, and in what order.
    """

    def test_layers_are_the_package(self) -> None:
        """
        L{CLIENT_LAYERS} names every module of C{txgraphsse._client}, so
        that the tests below see them all.
        """
        found = {
            module_name(path)
            for path in (PACKAGE / "_client").glob("*.py")
            if path.name != "__init__.py"
        }
        self.assertEqual(found, set(CLIENT_LAYERS))

    def test_no_server_modules(self) -> None:
        """
        The client (its face and its private package) imports of txgraphsse
        only its own modules and the shared wire, never a server module;
        and the check sees the wire imports it does make.
        """
        paths = [PACKAGE / "client.py", *sorted((PACKAGE / "_client").glob("*.py"))]
        seen: set[str] = set()
        offences = []
        for path in paths:
            for target in package_imports(path):
                seen.add(target)
                own = target.startswith("txgraphsse._client.")
                if not own and target not in SHARED_WIRE:
                    offences.append(f"{module_name(path)} imports {target}")
        self.assertEqual(offences, [])
        self.assertIn("txgraphsse._verbs", seen)
        self.assertIn("txgraphsse._messages", seen)
        self.assertIn("txgraphsse._parser", seen)

    def test_layers_import_downwards(self) -> None:
        """
        Each client module imports only the client modules below it, so
        there is no circle among them, even through an import inside a
        function or under C{TYPE_CHECKING}.
        """
        offences = []
        for index, name in enumerate(CLIENT_LAYERS):
            path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
            below = set(CLIENT_LAYERS[:index])
            for target in package_imports(path):
                if target.startswith("txgraphsse._client") and target not in below:
                    offences.append(f"{name} imports {target}")
        self.assertEqual(offences, [])
        self.assertEqual(package_imports(PACKAGE / "_client" / "__init__.py"), set())


# Over real sockets


def _connections_on(port: int) -> list[tcp.Connection]:
    """
    The reactor's TCP connections to or from C{port}.
    """
    found = []
    reactor = _reactor()
    for selectable in set(reactor.getReaders()) | set(reactor.getWriters()):
        if isinstance(selectable, tcp.Connection):
            ends = (selectable.getHost(), selectable.getPeer())
            if any(getattr(end, "port", None) == port for end in ends):
                found.append(selectable)
    return found


def _client_connections_to(port: int) -> list[tcp.Connection]:
    """
    The reactor's client-side TCP connections to C{port}.
    """
    return [
        c
        for c in _connections_on(port)
        if isinstance(c, tcp.Client) and getattr(c.getPeer(), "port", None) == port
    ]


#: Modules whose timers belong to a client: ours, treq's and Twisted's HTTP
#: client (its connection pool), and client endpoints.
_CLIENT_MODULES = (
    "txgraphsse._client.",
    "txgraphsse.client",
    "treq.",
    "twisted.web.client",
    "twisted.web._newclient",
    "twisted.internet.endpoints",
)


def client_timers() -> list[IDelayedCall]:
    """
    The reactor's active timers that belong to an HTTP client.
    """
    found = []
    for call in _reactor().getDelayedCalls():
        module = getattr(call.func, "__module__", None) or ""
        if call.active() and module.startswith(_CLIENT_MODULES):
            found.append(call)
    return found


async def until(predicate: Callable[[], bool], what: str) -> None:
    """
    Wait, a few milliseconds at a time and at most L{WAIT} seconds, for
    C{predicate()} to hold.
    """
    clock = cast(IReactorTime, _reactor())
    deadline = clock.seconds() + WAIT
    while not predicate():
        if clock.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(clock, 0.005, lambda: None)


async def failure_of(deferred: Deferred[Any]) -> Failure:
    """
    The failure C{deferred} ends with (within L{WAIT} seconds).
    """
    try:
        result = await within(deferred)
    except Exception:
        return Failure()
    raise AssertionError(f"it did not fail: {result!r}")


def within(deferred: Deferred[Any]) -> Deferred[Any]:
    """
    C{deferred}, failing with L{TimeoutError} after L{WAIT} seconds.
    """
    return deferred.addTimeout(WAIT, cast(IReactorTime, _reactor()))


class Recorder(Resource):
    """
    Records each request's method, headers and body, then lets the
    endpoint's resource answer it.
    """

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[bytes, Headers, bytes]] = []

    def render(self, request: Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        request.content.seek(0)
        assert request.method is not None
        self.seen.append((request.method, request.requestHeaders.copy(), body))
        return self.inner.render(request)

    def posts(self) -> list[tuple[Headers, Any]]:
        return [(h, json.loads(b)) for m, h, b in self.seen if m == b"POST"]

    def gets(self) -> list[Headers]:
        return [h for m, h, _ in self.seen if m == b"GET"]


class Refuse(Resource):
    """
    Answers every C{GET} with a status and nothing else.
    """

    isLeaf = True

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.count = 0

    def render_GET(self, request: Request) -> bytes:
        self.count += 1
        request.setResponseCode(self.status)
        return b""


class Silent(Resource):
    """
    Never answers a C{GET}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        self.waiting.append(request)
        return NOT_DONE_YET


class _RealCase(TestCase):
    """
    A real server on 127.0.0.1, and bookkeeping that leaves the reactor as
    clean as it found it.
    """

    def setUp(self) -> None:
        self.reactor = _reactor()
        self.backend = SSEBackend(self.reactor)
        self.backend.add_route("add", lambda a, b: a + b)
        self._ports: list[IListeningPort] = []
        self._numbers: list[int] = []
        self._endpoints: list[SSEEndpoint] = []
        self._clients: list[GraphSSEClient] = []
        self._sources: list[EventSource] = []
        self._pools: list[HTTPConnectionPool] = []
        self.addCleanup(self._clean)

    async def _clean(self) -> None:
        for client in self._clients:
            await within(client.terminate())
        for source in self._sources:
            await within(source.close())
        for pool in self._pools:
            await pool.closeCachedConnections()
        for endpoint in self._endpoints:
            endpoint.terminate()
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        for number in self._numbers:
            await until(
                lambda n=number: not _connections_on(n),  # type: ignore[misc]
                "connections to close",
            )

    def serve(self, resource: Resource, name: bytes = b"sse") -> str:
        """
        Mount C{resource} at C{/name} in a L{Site} on a free port; return
        its URL.
        """
        root = Resource()
        root.putChild(name, resource)
        return f"{self.listen(Site(root))}/{name.decode()}"

    def listen(self, site: Site) -> str:
        """
        Listen on a free port of 127.0.0.1 until cleanup; return the base
        URL.
        """
        port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        self._ports.append(port)
        self._numbers.append(port.getHost().port)
        return f"http://127.0.0.1:{self._numbers[-1]}"

    def endpoint(self, path: str = "/sse", **options: Any) -> SSEEndpoint:
        options.setdefault("retry", 50)
        endpoint = self.backend.setup_sse(path, **options)
        self._endpoints.append(endpoint)
        return endpoint

    def client(self, **options: Any) -> GraphSSEClient:
        client = GraphSSEClient(self.reactor, **options)
        self._clients.append(client)
        return client

    def source(self, url: str, **options: Any) -> EventSource:
        source = EventSource(url, self.reactor, **options)
        self._sources.append(source)
        return source

    def port_of(self, url: str) -> int:
        return int(url.split(":")[2].split("/")[0])


class EventSourceNetworkTests(_RealCase):
    """
    L{EventSource} against a real txgraphsse server.
    """

    async def test_events_by_name(self) -> None:
        """
        The server's C{setId}, plain messages and named events reach the
        handlers of their names; the server is told the stream's headers.
        """
        endpoint = self.endpoint()
        recorder = Recorder(endpoint.resource)
        url = self.serve(recorder)
        source = self.source(url)
        messages: list[ServerSentEvent] = []
        news: list[ServerSentEvent] = []
        source.add_handler("message", messages.append)
        source.add_handler("news", news.append)
        await within(source.when_open())
        await until(lambda: messages, "setId")
        first = json.loads(messages[0].data)
        self.assertEqual(first["route"], "setId")
        session_id = first["args"]
        self.assertIn(session_id, endpoint.sessions)
        self.assertEqual(source.retry, 50)
        endpoint.send({"n": 1}, session_id=session_id)
        endpoint.send("headline", event="news", session_id=session_id)
        await until(lambda: news, "the news event")
        self.assertEqual(json.loads(messages[1].data), {"n": 1})
        self.assertEqual([e.data for e in news], ["headline"])
        headers = recorder.gets()[0]
        self.assertEqual(
            headers.getRawHeaders(b"accept"), [b"text/event-stream, application/json"]
        )
        self.assertNotIn(
            b"gzip", b"".join(headers.getRawHeaders(b"accept-encoding", []))
        )

    async def test_reconnect_with_last_event_id(self) -> None:
        """
        When the server closes the session, the source reconnects on its
        own, sends the last event id it saw, and the server replays what it
        missed.
        """
        endpoint = self.endpoint(history=10)
        url = self.serve(endpoint.resource)
        source = self.source(url)
        seen: list[ServerSentEvent] = []
        source.add_handler("message", seen.append)
        opened: list[None] = []
        source.on_open = lambda: opened.append(None)
        await until(lambda: len(endpoint.sessions) == 1 and seen, "a session")
        endpoint.send("one")
        await until(lambda: any(e.data == "one" for e in seen), "event one")
        last_id = source.last_event_id
        self.assertNotEqual(last_id, "")
        [session] = endpoint.sessions.values()
        session.close()
        await until(lambda: len(opened) == 2, "the second stream")
        await until(lambda: len(endpoint.sessions) == 1, "the second session")
        [again] = endpoint.sessions.values()
        self.assertIsNot(again, session)
        self.assertEqual(again.last_event_id, last_id)
        endpoint.send("two")
        await until(lambda: any(e.data == "two" for e in seen), "event two")
        self.assertEqual([e.data for e in seen].count("one"), 1)

    async def test_204_stops(self) -> None:
        """
        A C{204} stops the source for good: it asks once, then never again.
        """
        refuse = Refuse(204)
        url = self.serve(refuse)
        source = self.source(url, retry=10)
        failure = await failure_of(source.when_open())
        self.assertIsInstance(failure, Failure)
        self.assertEqual(failure.value.status, 204)
        self.assertEqual(source.ready_state, ReadyState.CLOSED)
        await deferLater(self.reactor, 0.1, lambda: None)
        self.assertEqual(refuse.count, 1)

    async def test_retry_after_from_server(self) -> None:
        """
        A server over its session limit answers C{503} with C{Retry-After};
        the source waits that long and gets in once there is room.
        """
        endpoint = self.endpoint(limits=Limits(max_sessions=1, retry_after=1))
        url = self.serve(endpoint.resource)
        first = self.source(url)
        await within(first.when_open())
        second = self.source(url)
        errors: list[Failure] = []
        second.on_error = errors.append
        await until(lambda: errors, "the refusal")
        error = errors[0].value
        assert isinstance(error, RemoteError)
        self.assertEqual((error.status, error.code), (503, "unavailable"))
        self.assertEqual(second.ready_state, ReadyState.CONNECTING)
        await first.close()
        started = self.reactor.seconds()
        await within(second.when_open())
        self.assertGreater(self.reactor.seconds() - started, 0.5)

    async def test_with_treq_client(self) -> None:
        """
        A source can read through a treq L{HTTPClient} given to it.
        """
        endpoint = self.endpoint()
        url = self.serve(endpoint.resource)
        pool = HTTPConnectionPool(self.reactor, False)
        self._pools.append(pool)
        source = self.source(
            url, http_client=HTTPClient(Agent(self.reactor, pool=pool))
        )
        seen: list[ServerSentEvent] = []
        source.add_handler("message", seen.append)
        await until(lambda: seen, "setId")
        self.assertEqual(json.loads(seen[0].data)["route"], "setId")

    async def test_close_leaves_nothing(self) -> None:
        """
        Once C{close} has fired, the source holds no socket and no timer,
        and the server sees the session end.
        """
        endpoint = self.endpoint()
        url = self.serve(endpoint.resource)
        source = self.source(url)
        seen: list[ServerSentEvent] = []
        source.add_handler("message", seen.append)
        await until(lambda: seen, "setId")
        self.assertNotEqual(client_timers(), [])
        self.assertNotEqual(_client_connections_to(self.port_of(url)), [])
        await source.close()
        self.assertEqual(_client_connections_to(self.port_of(url)), [])
        await until(lambda: not endpoint.sessions, "the session to end")
        self.assertEqual(client_timers(), [])


class ConnectedCase(_RealCase):
    """
    A client connected to a real txgraphsse server.
    """

    async def connected(
        self, headers: dict[str, str] | None = None, **options: Any
    ) -> tuple[GraphSSEClient, Connection, SSEEndpoint, Recorder]:
        """
        A client (with C{headers}) connected to a fresh endpoint (recorded),
        with a route.
        """
        endpoint = self.endpoint(**options)
        recorder = Recorder(endpoint.resource)
        url = self.serve(recorder)
        client = self.client(headers=headers)
        client.add_route("hello", lambda name: f"hello {name}")
        connection = await within(client.connect(url))
        return client, connection, endpoint, recorder

    def session(self, endpoint: SSEEndpoint, connection: Connection) -> SSEClient:
        assert connection.session_id is not None
        return endpoint.sessions[connection.session_id]


class GraphSSEClientTests(ConnectedCase):
    """
    L{GraphSSEClient} against a real txgraphsse server.
    """

    async def test_connect_learns_session(self) -> None:
        """
        C{connect} fires once the server's C{setId} arrived, with a
        connection that knows the session id the server holds.
        """
        client, connection, endpoint, _ = await self.connected()
        self.assertIsInstance(connection, Connection)
        self.assertIn(connection.session_id, endpoint.sessions)
        self.assertEqual(client.connections, [connection])
        self.assertIs(client.connection, connection)
        self.assertEqual(client.session_id, connection.session_id)

    async def test_run_ping(self) -> None:
        """
        C{run} calls a server route and fires with its result.
        """
        client, connection, _, _ = await self.connected()
        self.assertEqual(await within(client.run("ping")), "pong")
        self.assertEqual(await within(connection.run("add", [2, 3])), 5)
        self.assertEqual(await within(connection.run("echo", "x")), "x")

    async def test_posts_carry_session(self) -> None:
        """
        Every C{POST} is JSON and names the session in the header and in the
        body; the client's headers go with the stream and every C{POST}.
        """
        client, connection, _, recorder = await self.connected(
            headers={"X-Token": "t1"}
        )
        await within(client.run("ping"))
        await within(client.post("echo", [1]))
        await within(client.send({"route": "ping"}))
        posts = recorder.posts()
        self.assertEqual(len(posts), 3)
        self.assertEqual(recorder.gets()[0].getRawHeaders(b"x-token"), [b"t1"])
        for headers, body in posts:
            self.assertEqual(headers.getRawHeaders(b"x-token"), [b"t1"])
            self.assertEqual(
                headers.getRawHeaders(b"content-type"), [b"application/json"]
            )
            self.assertEqual(
                headers.getRawHeaders(b"x-graphsse-session"),
                [connection.session_id.encode() if connection.session_id else b""],
            )
            self.assertEqual(body["sessionId"], connection.session_id)
        self.assertEqual(posts[0][1]["route"], "ping")
        self.assertEqual(posts[1][1]["args"], [1])

    async def test_post_and_send_answers(self) -> None:
        """
        C{post} fires with L{None} once the server answered; C{send} fires
        with the server's JSON answer.
        """
        client, _, _, _ = await self.connected()
        self.assertIsNone(await within(client.post("add", [1, 1])))
        self.assertEqual(
            await within(client.send({"route": "add", "args": [1, 2]})), {"args": 3}
        )

    async def test_remote_errors(self) -> None:
        """
        A refusal fails with L{RemoteError}: the status, the server's code
        and message.
        """
        self.backend.add_route("broken", lambda: 1 / 0)
        client, _, _, _ = await self.connected()
        unknown = await failure_of(client.run("nope"))
        self.assertEqual((unknown.value.status, unknown.value.code), (404, "no_route"))
        broken = await failure_of(client.run("broken"))
        self.assertEqual(
            (broken.value.status, broken.value.code), (500, "route_failed")
        )
        self.assertIn("'broken' failed", broken.value.message)
        self.assertNotIn("ZeroDivisionError", broken.value.message)
        self.flushLoggedErrors(ZeroDivisionError)

    async def test_client_request(self) -> None:
        """
        C{request} fires with the result from the C{POST}'s answer; the copy
        that comes on the stream reaches no handler.
        """
        client, connection, _, recorder = await self.connected()
        stray: list[Any] = []
        client.add_handler("message", lambda data, event, conn: stray.append(data))
        self.assertEqual(
            await within(connection.request({"route": "add", "args": [4, 5]})), 9
        )
        _, body = recorder.posts()[-1]
        self.assertEqual(body["route"], "runRequest")
        message, path, _callback_id, session_id = body["args"]
        self.assertEqual((message, path), ({"route": "add", "args": [4, 5]}, "/sse"))
        self.assertEqual(session_id, connection.session_id)
        # The stream's copy arrives before a message sent after it.
        self.session(self._endpoints[0], connection).send("marker")
        await until(lambda: stray, "the marker")
        self.assertEqual(stray, ["marker"])

    async def test_server_post_runs_route(self) -> None:
        """
        The server's C{post} runs the client's route, with its arguments
        spread.
        """
        client, connection, endpoint, _ = await self.connected()
        called: Deferred[tuple[Any, ...]] = Deferred()
        client.add_route("notify", lambda *args: called.callback(args))
        endpoint.post("notify", [1, "two"], session_id=connection.session_id)
        self.assertEqual(await within(called), (1, "two"))

    async def test_server_run(self) -> None:
        """
        The server's C{run} and C{request} fire with the client's answers,
        from plain, Deferred-returning and C{async def} routes, and from a
        route object's verb picked by C{method}.
        """
        client, connection, endpoint, _ = await self.connected()
        sid = connection.session_id

        @client.route()
        def twice(n: int) -> Deferred[int]:
            return succeed(n * 2)

        @client.route("later")
        async def later(n: int) -> int:
            await deferLater(self.reactor, 0.01, lambda: None)
            return n + 1

        class Counter:
            value = 10

            def get(self) -> int:
                return self.value

            def bump(self, by: int) -> int:
                self.value += by
                return self.value

        client.add_route("counter", Counter())
        self.assertEqual(
            await within(endpoint.run("hello", "ann", session_id=sid)), "hello ann"
        )
        self.assertEqual(await within(endpoint.run("twice", 4, session_id=sid)), 8)
        self.assertEqual(await within(endpoint.run("later", 1, session_id=sid)), 2)
        self.assertEqual(
            await within(
                endpoint.request({"route": "hello", "args": ["bo"]}, session_id=sid)
            ),
            "hello bo",
        )
        self.assertEqual(
            await within(endpoint.run("counter", [5], method="bump", session_id=sid)),
            15,
        )
        self.assertEqual(
            await within(endpoint.run("counter", method="get", session_id=sid)), 15
        )

    async def test_server_run_failures(self) -> None:
        """
        A request for a route the client lacks, or for one that raises, is
        answered at once with an C{error} member, and the server's call
        fails with the client's code.
        """
        client, connection, endpoint, recorder = await self.connected()
        sid = connection.session_id

        def broken() -> None:
            raise KeyError("gone")

        client.add_route("broken", broken)
        failure = await failure_of(endpoint.run("missing", session_id=sid))
        self.assertTrue(failure.check(RemoteCallError))
        self.assertEqual(failure.value.code, "no_route")
        _, body = recorder.posts()[-1]
        self.assertEqual(
            (body["args"], body["sessionId"], body["error"]["code"]),
            (None, sid, "no_route"),
        )
        failure = await failure_of(endpoint.run("broken", session_id=sid))
        self.assertEqual(failure.value.code, "route_failed")
        self.assertIn("KeyError", failure.value.message)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(
            await within(endpoint.run("hello", "x", session_id=sid)), "hello x"
        )

    async def test_server_subscribe(self) -> None:
        """
        The server's C{subscribe} to a client route gets every output of
        that route, whether the client runs it itself or the server posts
        it, until the server unsubscribes.
        """
        client, connection, endpoint, _ = await self.connected()
        sid = connection.session_id
        client.add_route("level", lambda n: n * 10)
        updates: list[Any] = []
        sub = await within(endpoint.subscribe("level", updates.append, session_id=sid))
        self.assertIsInstance(sub, int)
        self.assertEqual(await within(client.call_local("level", 1)), 10)
        await until(lambda: updates == [10], "the first update")
        endpoint.post("level", [2], session_id=sid)
        await until(lambda: updates == [10, 20], "the second update")
        self.assertTrue(
            await within(endpoint.unsubscribe("level", sub, session_id=sid))
        )
        await within(client.call_local("level", 3))
        await deferLater(self.reactor, 0.1, lambda: None)
        self.assertEqual(updates, [10, 20])
        self.assertFalse(
            await within(endpoint.unsubscribe("level", sub, session_id=sid))
        )

    async def test_server_subscription_updates_in_order(self) -> None:
        """
        A route's updates reach the server's subscriber in the order the
        route made them, even when the server is slow to take the first:
        the next is not sent before it is answered.
        """
        endpoint = self.endpoint()
        held = HoldNext(endpoint.resource, self.reactor)
        held.hold(b'"callbackId":"level"', 0.3)
        client = self.client()
        client.add_route("level", lambda n: n)
        connection = await within(client.connect(self.serve(held)))
        sid = connection.session_id
        updates: list[Any] = []
        await within(endpoint.subscribe("level", updates.append, session_id=sid))
        for n in range(1, 5):
            await within(client.call_local("level", n))
        await until(lambda: len(updates) == 4, "every update")
        self.assertEqual(updates, [1, 2, 3, 4])
        self.assertEqual(held.held, 1)

    async def test_server_subscribe_unknown_route(self) -> None:
        """
        The server cannot subscribe to a route the client lacks.
        """
        _, connection, endpoint, _ = await self.connected()
        failure = await failure_of(
            endpoint.subscribe(
                "missing", lambda _: None, session_id=connection.session_id
            )
        )
        self.assertTrue(failure.check(RemoteCallError))
        self.assertEqual(failure.value.code, "no_route")

    async def test_client_subscribe(self) -> None:
        """
        The client's C{subscribe} to a server route gets each output of the
        route as it runs on the server; after C{unsubscribe}, none.
        """
        client, connection, endpoint, _ = await self.connected()
        updates: list[Any] = []
        sub = await within(client.subscribe("add", updates.append))
        self.assertIsInstance(sub, int)
        self.assertEqual(await self.backend.call("add", 1, 2), 3)
        await until(lambda: updates == [3], "the update")
        self.assertTrue(await within(client.unsubscribe("add", sub)))
        await self.backend.call("add", 2, 2)
        marker: list[Any] = []
        client.add_handler("message", lambda data, event, conn: marker.append(data))
        self.session(endpoint, connection).send("marker")
        await until(lambda: marker, "the marker")
        self.assertEqual(updates, [3])

    async def test_client_unsubscribe_unknown(self) -> None:
        """
        Unsubscribing from what was never subscribed answers false.
        """
        client, _, _, _ = await self.connected()
        self.assertFalse(await within(client.unsubscribe("add", 12345)))

    async def test_subscribe_twice(self) -> None:
        """
        Two callbacks on one route share one server subscription: each gets
        every update once; ending one keeps the other.
        """
        client, _, _, recorder = await self.connected()
        first: list[Any] = []
        second: list[Any] = []
        one = await within(client.subscribe("add", first.append))
        two = await within(client.subscribe("add", second.append))
        self.assertNotEqual(one, two)
        subscribes = [
            b for _, b in recorder.posts() if b.get("route") == "subscribeSSE"
        ]
        self.assertEqual(len(subscribes), 1)
        await self.backend.call("add", 1, 1)
        await until(lambda: first and second, "the updates")
        self.assertTrue(await within(client.unsubscribe("add", one)))
        await self.backend.call("add", 2, 2)
        await until(lambda: len(second) == 2, "the second update")
        self.assertEqual((first, second), ([2], [2, 4]))

    async def test_subscription_survives_reconnect(self) -> None:
        """
        After the stream reconnects (a new session), the client subscribes
        again by itself and its callback keeps getting updates.
        """
        client, connection, endpoint, recorder = await self.connected()

        def subscribes() -> list[Any]:
            posts = recorder.posts()
            return [b for _, b in posts if b.get("route") == "subscribeSSE"]

        updates: list[Any] = []
        await within(client.subscribe("add", updates.append))
        old = connection.session_id
        sessions: list[str | None] = []
        client.on_session = lambda conn: sessions.append(conn.session_id)
        self.session(endpoint, connection).close()
        await until(lambda: sessions, "a new session")
        self.assertNotEqual(connection.session_id, old)
        # The dispatcher subscribes as it reads the POST: once recorded, done.
        await until(
            lambda: len(subscribes()) == 2 and subscribes()[1]["sessionId"] != old,
            "the new subscription",
        )
        await self.backend.call("add", 5, 5)
        await until(lambda: updates == [10], "the update")

    async def test_two_endpoints(self) -> None:
        """
        One client connects to two endpoints: two connections, each with
        its own session, both serving the client's routes and calling their
        own server.
        """
        first = self.endpoint("/a")
        second = self.endpoint("/b")
        root = Resource()
        root.putChild(b"a", first.resource)
        root.putChild(b"b", second.resource)
        base = self.listen(Site(root))
        client = self.client()
        client.add_route("whoami", lambda: "client")
        a = await within(client.connect(base + "/a"))
        b = await within(client.connect(base + "/b"))
        self.assertEqual(client.connections, [a, b])
        self.assertNotEqual(a.session_id, b.session_id)
        self.assertEqual(list(first.sessions), [a.session_id])
        self.assertEqual(list(second.sessions), [b.session_id])
        self.assertEqual((a.path, b.path), ("/a", "/b"))
        self.assertEqual(
            await within(first.run("whoami", session_id=a.session_id)), "client"
        )
        self.assertEqual(
            await within(second.run("whoami", session_id=b.session_id)), "client"
        )
        self.assertEqual(await within(b.request({"route": "add", "args": [1, 2]})), 3)
        updates: list[Any] = []
        client.add_route("tick", lambda n: n)
        await within(second.subscribe("tick", updates.append, session_id=b.session_id))
        await within(client.call_local("tick", 7))
        await until(lambda: updates == [7], "the update through /b")
        await within(a.terminate())
        self.assertEqual(client.connections, [b])
        self.assertEqual(await within(client.run("ping")), "pong")

    async def test_application_data(self) -> None:
        """
        What the server sends that is not the framework's own reaches the
        client's handlers, parsed when it is JSON, by event name.
        """
        client, connection, endpoint, _ = await self.connected(channels=["news"])
        got: list[tuple[str, Any]] = []
        client.add_handler(
            "message", lambda data, event, conn: got.append(("message", data))
        )
        client.add_handler(
            "alert", lambda data, event, conn: got.append(("alert", data))
        )
        session = self.session(endpoint, connection)
        session.send({"x": 1})
        session.send("plain text")
        session.send([1, 2], event="alert")
        await until(lambda: len(got) == 3, "three events")
        self.assertEqual(
            got, [("message", {"x": 1}), ("message", "plain text"), ("alert", [1, 2])]
        )

    async def test_connect_refused(self) -> None:
        """
        A server that refuses the stream fails C{connect} with its
        L{RemoteError}, and the connection is dropped.
        """

        def authorize(request: Request) -> Any:
            raise AccessDenied("no entry")

        endpoint = self.endpoint(authorize=authorize)
        url = self.serve(endpoint.resource)
        client = self.client()
        failure = await failure_of(client.connect(url))
        self.assertIsInstance(failure, Failure)
        self.assertEqual((failure.value.status, failure.value.code), (403, "forbidden"))
        self.assertEqual(client.connections, [])

    async def test_call_local(self) -> None:
        """
        C{call_local} runs a route here and fails with L{UnknownRoute} for
        one the client lacks.
        """
        client = self.client()
        client.add_route("double", lambda n: n * 2)
        self.assertEqual(await client.call_local("double", 4), 8)
        failure = await failure_of(client.call_local("nope"))
        self.assertTrue(failure.check(UnknownRoute))
        self.assertRaises(ValueError, client.add_route, "_private", lambda: None)
        self.assertTrue(client.remove_route("double"))
        self.assertFalse(client.remove_route("double"))

    async def test_no_connection(self) -> None:
        """
        Calls on a client without a connection fail with L{ClientClosed}.
        """
        client = self.client()
        failure = await failure_of(client.run("ping"))
        self.assertTrue(failure.check(ClientClosed))
        calls: list[Callable[[], Deferred[Any]]] = [
            lambda: client.send({"route": "ping"}),
            lambda: client.post("ping"),
            lambda: client.request({"route": "ping"}),
            lambda: client.subscribe("ping", lambda _: None),
            lambda: client.unsubscribe("ping", 1),
        ]
        for call in calls:
            failure = await failure_of(call())
            self.assertTrue(failure.check(ClientClosed))

    async def test_terminate_leaves_nothing(self) -> None:
        """
        C{terminate} fails the calls still waiting with L{ClientClosed},
        closes every socket the client opened and leaves no timer; the
        server sees the session end.
        """
        hanging: Deferred[None] = Deferred()
        self.backend.add_route("hang", lambda: hanging)
        client, connection, endpoint, _ = await self.connected()
        await within(client.run("ping"))
        waiting = client.run("hang")
        await until(
            lambda: len(_client_connections_to(self.port_of(connection.url))) >= 2,
            "the POST",
        )
        await within(client.terminate())
        failure = await failure_of(waiting)
        self.assertTrue(failure.check(ClientClosed), failure)
        self.assertEqual(_client_connections_to(self.port_of(connection.url)), [])
        self.assertEqual(client.connections, [])
        self.assertTrue(connection.closed)
        failure = await failure_of(client.connect(connection.url))
        self.assertTrue(failure.check(ClientClosed))
        await until(lambda: not endpoint.sessions, "the session to end")
        self.assertEqual(client_timers(), [])
        hanging.callback(None)

    async def test_terminate_while_connecting(self) -> None:
        """
        Terminating a client whose stream has not answered yet fails
        C{connect} with L{ClientClosed} and leaves no socket; cancelling
        C{connect} gives up on the connection too.
        """
        silent = Silent()
        url = self.serve(silent)
        client = self.client()
        abandoned = client.connect(url)
        await until(lambda: len(silent.waiting) == 1, "the first request")
        abandoned.cancel()
        self.failureResultOf(abandoned, CancelledError)
        self.assertEqual(client.connections, [])
        pending = client.connect(url)
        await until(lambda: len(silent.waiting) == 2, "the second request")
        await within(client.terminate())
        failure = await failure_of(pending)
        self.assertTrue(failure.check(ClientClosed))
        self.assertEqual(_client_connections_to(self.port_of(url)), [])
        self.assertEqual(client_timers(), [])
