"""
Tests for server-to-client calls: L{txgraphsse._calls.CallTable} on its own,
and C{request}, C{run}, C{subscribe}, C{unsubscribe} and C{stream_iterable} of
an L{SSEEndpoint} whose sessions are real L{twisted.web.server.Request}s on
L{HTTPChannel}s, driven by a L{MemoryReactorClock}.

The harness here (L{SSEHarness}, L{Stream}, L{HTTPResponse}) is shared with
C{tests.test_graph}.
"""

from __future__ import annotations

import base64
import itertools
import json
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

from attrs import frozen
from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import (
    EventStreamParser,
    RemoteCallError,
    ServerSentEvent,
    SessionClosed,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
)
from txgraphsse._calls import CallTable

_URLSAFE = set(string.ascii_letters + string.digits + "-_")


@frozen
class HTTPResponse:
    """
    An HTTP/1.1 response as a client read it so far.

    @ivar status: the status code.
    @ivar headers: header values by lower-cased name.
    @ivar body: the body, un-chunked when it was chunked.
    @ivar complete: whether the whole body arrived.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes
    complete: bool

    def header(self, name: bytes) -> bytes | None:
        """
        The one value of header C{name}, or L{None}.
        """
        values = self.headers.get(name.lower())
        if values is None:
            return None
        assert len(values) == 1, values
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)


def unchunk(data: bytes) -> tuple[bytes, bool]:
    """
    The payload of a chunked body read so far, and whether its last chunk
    arrived.  A malformed chunk fails the test.
    """
    parts: list[bytes] = []
    while data:
        size_line, separator, rest = data.partition(b"\r\n")
        if not separator:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(parts), True
        if len(rest) < size + 2:
            break
        assert rest[size : size + 2] == b"\r\n", f"bad chunk in {rest!r}"
        parts.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(parts), False


def read_response(raw: bytes) -> HTTPResponse:
    """
    Parse the bytes a server wrote for one response.
    """
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        body, complete = unchunk(rest)
        return HTTPResponse(status, headers, body, complete)
    length = headers.get(b"content-length")
    if length is not None:
        size = int(length[0])
        return HTTPResponse(status, headers, rest[:size], len(rest) >= size)
    return HTTPResponse(status, headers, rest, status in (204, 304))


def run_one_turn(clock: Clock) -> int:
    """
    Run the calls due now that were scheduled before this turn, as a real
    reactor's iteration does (C{Clock.advance(0)} would also run the calls
    they schedule).

    @return: how many calls ran.
    """
    now = clock.seconds()
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= now]
    ran = 0
    for call in due:
        assert isinstance(call, DelayedCall)
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
            ran += 1
    return ran


class Stream:
    """
    One open C{GET /sse}: a real L{HTTPChannel} on a L{StringTransport}.

    @ivar session_id: the id the endpoint gave the session.
    """

    def __init__(
        self,
        harness: SSEHarness,
        protocol: IProtocol,
        transport: StringTransport,
        session_id: str,
    ) -> None:
        self.harness = harness
        self.protocol = protocol
        self.transport = transport
        self.session_id = session_id

    @property
    def client(self) -> SSEClient:
        return self.harness.endpoint.sessions[self.session_id]

    def response(self) -> HTTPResponse:
        return read_response(self.transport.value())

    def events(self) -> list[ServerSentEvent]:
        """
        Every event the stream carried so far, C{setId} first.
        """
        return EventStreamParser().feed(self.response().body)

    def data(self) -> list[str]:
        """
        The data of every event after C{setId}.
        """
        return [event.data for event in self.events()[1:]]

    def messages(self) -> list[Any]:
        """
        The JSON data of every event after C{setId}.
        """
        return [json.loads(data) for data in self.data()]

    def run_requests(self) -> list[list[Any]]:
        """
        The C{args} of every C{runRequest} the stream carried.
        """
        return [
            message["args"]
            for message in self.messages()
            if isinstance(message, dict) and message.get("route") == "runRequest"
        ]

    def hang_up(self) -> None:
        """
        The client goes away: the connection is lost.
        """
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))


class SSEHarness:
    """
    An L{SSEBackend} on a L{MemoryReactorClock}, its endpoint mounted at
    C{/sse} of a L{Site} that runs on the same clock.  Keep-alives are off
    unless asked for, so that C{clock.getDelayedCalls()} shows only what the
    code under test scheduled.
    """

    def __init__(self, **setup: Any) -> None:
        self.clock = MemoryReactorClock()
        self.backend = SSEBackend(reactor=self.clock)
        setup.setdefault("keepalive", 0)
        self.endpoint: SSEEndpoint = self.backend.setup_sse("/sse", **setup)
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        self.site = Site(root, reactor=self.clock, timeout=None)

    def _connect(self, raw: bytes) -> tuple[IProtocol, StringTransport]:
        protocol = self.site.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return protocol, transport

    def open(self) -> Stream:
        """
        Open a session with a real C{GET /sse}.
        """
        before = set(self.endpoint.sessions)
        protocol, transport = self._connect(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        [session_id] = set(self.endpoint.sessions) - before
        stream = Stream(self, protocol, transport, session_id)
        first = json.loads(stream.events()[0].data)
        assert first == {"route": "setId", "args": session_id}, first
        return stream

    def start_post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: bytes = b"application/json",
        headers: dict[bytes, bytes] | None = None,
    ) -> StringTransport:
        """
        C{POST /sse} with C{body} as JSON (or C{raw}) on a new connection.

        @return: the connection's transport, which holds the response once
            the server wrote it.
        """
        data = raw if raw is not None else json.dumps(body).encode("utf-8")
        lines = [
            b"POST /sse HTTP/1.1",
            b"Host: x",
            b"Content-Type: " + content_type,
            b"Content-Length: %d" % len(data),
        ]
        lines.extend(name + b": " + value for name, value in (headers or {}).items())
        _, transport = self._connect(b"\r\n".join(lines) + b"\r\n\r\n" + data)
        return transport

    def post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: bytes = b"application/json",
        headers: dict[bytes, bytes] | None = None,
    ) -> HTTPResponse:
        """
        As L{start_post}, for a response written at once: the response.
        """
        transport = self.start_post(
            body, raw=raw, content_type=content_type, headers=headers
        )
        return read_response(transport.value())

    def reply(self, stream: Stream, callback_id: str, args: Any) -> HTTPResponse:
        """
        POST C{args} as C{stream}'s answer to C{callback_id}.
        """
        return self.post(
            {"args": args, "callbackId": callback_id, "sessionId": stream.session_id}
        )

    def flush(self) -> None:
        """
        End this turn: queued events reach the streams.
        """
        self.clock.advance(0)


def last_request(stream: Stream) -> list[Any]:
    """
    The C{args} of the last C{runRequest} on C{stream}.
    """
    stream.harness.flush()
    requests = stream.run_requests()
    assert requests, stream.messages()
    return requests[-1]


class CallTableTests(SynchronousTestCase):
    """
    L{CallTable} on its own, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table = CallTable(self.clock)

    def test_ids_unguessable_and_unique(self) -> None:
        """
        Every C{callbackId} is URL-safe text carrying at least 128 random
        bits, and no two are alike.
        """
        ids = [self.table.open("s")[0] for _ in range(2000)]
        self.assertEqual(len(set(ids)), len(ids))
        for callback_id in ids:
            self.assertTrue(set(callback_id) <= _URLSAFE, callback_id)
            raw = base64.urlsafe_b64decode(callback_id + "=" * (-len(callback_id) % 4))
            self.assertGreaterEqual(len(raw) * 8, 128)
        # Not a counter: no common prefix beyond chance.
        self.assertGreater(len({callback_id[:3] for callback_id in ids}), 1000)
        self.assertEqual(len(self.table), 2000)
        self.assertEqual(self.table.pending_for("s"), 2000)

    def test_prefixed_ids(self) -> None:
        """
        A node prefix leads each id; the random part is still 128 bits.
        """
        table = CallTable(self.clock, prefix="node7.")
        callback_id, _ = table.open("s")
        self.assertTrue(callback_id.startswith("node7."))
        random_part = callback_id[len("node7.") :]
        raw = base64.urlsafe_b64decode(random_part + "=" * (-len(random_part) % 4))
        self.assertGreaterEqual(len(raw), 16)

    def test_settle_from_its_session(self) -> None:
        """
        The session a call went to settles it: the L{Deferred} fires with the
        answer and the table forgets the call and its timer.
        """
        callback_id, deferred = self.table.open("a")
        self.assertTrue(self.table.settle(callback_id, "a", {"x": 1}))
        self.assertEqual(self.successResultOf(deferred), {"x": 1})
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.pending_for("a"), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.table.latency.count, 1)
        self.assertFalse(self.table.settle(callback_id, "a", 2))

    def test_settle_from_another_session(self) -> None:
        """
        A reply from any other session changes nothing: C{settle} says
        L{False} and the call stays pending, still answerable by its own
        session.
        """
        callback_id, deferred = self.table.open("a")
        self.assertFalse(self.table.settle(callback_id, "b", "forged"))
        self.assertNoResult(deferred)
        self.assertTrue(self.table.is_pending(callback_id, "a"))
        self.assertFalse(self.table.is_pending(callback_id, "b"))
        self.assertEqual(len(self.table), 1)
        self.assertTrue(self.table.settle(callback_id, "a", "real"))
        self.assertEqual(self.successResultOf(deferred), "real")

    def test_refuse(self) -> None:
        """
        C{refuse} fails a call with the given error, only for the session it
        went to, and the table forgets it.
        """
        callback_id, deferred = self.table.open("a")
        error = RemoteCallError("route_failed", "client broke")
        self.assertFalse(self.table.refuse(callback_id, "b", error))
        self.assertNoResult(deferred)
        self.assertTrue(self.table.refuse(callback_id, "a", error))
        self.assertIs(self.failureResultOf(deferred, RemoteCallError).value, error)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.table.refuse(callback_id, "a", error))
        self.assertFalse(self.table.settle(callback_id, "a", 1))

    def test_unknown_id(self) -> None:
        """
        Settling an id the table never gave out is refused.
        """
        self.table.open("a")
        self.assertFalse(self.table.settle("nope", "a", 1))
        self.assertEqual(len(self.table), 1)

    def test_default_timeout(self) -> None:
        """
        Unanswered, a call fails with L{TimeoutError} after 30 seconds, and
        the table forgets it.
        """
        _, deferred = self.table.open("a")
        self.clock.advance(29.9)
        self.assertNoResult(deferred)
        self.clock.advance(0.1)
        self.failureResultOf(deferred, TimeoutError)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.pending_for("a"), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_per_call_timeout(self) -> None:
        """
        A call's own timeout beats the default; other calls keep theirs.
        """
        short_id, short = self.table.open("a", timeout=2)
        _, default = self.table.open("a")
        self.clock.advance(2)
        self.failureResultOf(short, TimeoutError)
        self.assertNoResult(default)
        self.assertFalse(self.table.settle(short_id, "a", 1))
        self.assertEqual(len(self.table), 1)
        self.clock.advance(28)
        self.failureResultOf(default, TimeoutError)
        self.assertEqual(len(self.table), 0)

    def test_many_calls_one_timer(self) -> None:
        """
        Calls opened over time with the default timeout share one timer,
        and each still fails at its own deadline, no sooner, no later.
        """
        calls = []
        for _ in range(3):
            calls.append(self.table.open("a")[1])
            self.clock.advance(5)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(14.9)
        self.assertNoResult(calls[0])
        self.clock.advance(0.1)
        self.failureResultOf(calls[0], TimeoutError)
        self.assertNoResult(calls[1])
        self.clock.advance(5)
        self.failureResultOf(calls[1], TimeoutError)
        self.assertNoResult(calls[2])
        self.clock.advance(5)
        self.failureResultOf(calls[2], TimeoutError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_settled_first_call_moves_the_timer(self) -> None:
        """
        Once the first call is answered, the shared timer serves the next:
        the answered one never times out, and the next does on time.
        """
        first_id, first = self.table.open("a")
        self.clock.advance(10)
        _, second = self.table.open("a")
        self.assertTrue(self.table.settle(first_id, "a", "done"))
        self.assertEqual(self.successResultOf(first), "done")
        self.clock.advance(29.9)
        self.assertNoResult(second)
        self.clock.advance(0.1)
        self.failureResultOf(second, TimeoutError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_callback_opens_a_call(self) -> None:
        """
        A caller that opens another call as its call times out gets it
        timed too, by one timer.
        """
        reopened: list[Deferred[Any]] = []
        _, first = self.table.open("a")
        first.addErrback(lambda _: reopened.append(self.table.open("a")[1]))
        self.clock.advance(30)
        self.assertEqual(len(reopened), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30)
        self.failureResultOf(reopened[0], TimeoutError)

    def test_no_timeout(self) -> None:
        """
        A table without a default, or a call with timeout 0, waits forever
        and schedules nothing.
        """
        table = CallTable(self.clock, None)
        _, deferred = table.open("a")
        _, zero = self.table.open("a", timeout=0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10_000)
        self.assertNoResult(deferred)
        self.assertNoResult(zero)
        deferred.cancel()
        zero.cancel()
        self.failureResultOf(deferred, CancelledError)
        self.failureResultOf(zero, CancelledError)

    def test_cancel(self) -> None:
        """
        Cancelling a call fails it with L{CancelledError}, removes its entry
        and its timer, and a late answer is refused.
        """
        callback_id, deferred = self.table.open("a")
        deferred.cancel()
        self.failureResultOf(deferred, CancelledError)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.pending_for("a"), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.table.settle(callback_id, "a", 1))

    def test_fail_session(self) -> None:
        """
        C{fail_session} fails every call of that session with
        L{SessionClosed}, and only those.
        """
        calls = [self.table.open("a")[1] for _ in range(3)]
        other_id, other = self.table.open("b")
        self.assertEqual(self.table.fail_session("a", "closed"), 3)
        for deferred in calls:
            failure = self.failureResultOf(deferred, SessionClosed)
            self.assertIn("closed", str(failure.value))
        self.assertNoResult(other)
        self.assertEqual(len(self.table), 1)
        self.assertEqual(self.table.pending_for("a"), 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.table.fail_session("a", "again"), 0)
        self.assertTrue(self.table.settle(other_id, "b", None))


class RequestTests(SynchronousTestCase):
    """
    C{request} and C{run} over real streams, answered by real C{POST}s.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.endpoint = self.harness.endpoint
        self.clock = self.harness.clock

    def assertNoCalls(self) -> None:
        """
        The endpoint holds no pending call and no timer.
        """
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_envelope(self) -> None:
        """
        C{request} writes exactly C{{"route":"runRequest","args":[message,
        path, callbackId, sessionId]}} on the session's stream, and the id is
        a pending call of that session.
        """
        stream = self.harness.open()
        message = {"route": "add", "args": [1, 2]}
        deferred = self.endpoint.request(message, session_id=stream.session_id)
        assert isinstance(deferred, Deferred)
        self.harness.flush()
        [event] = stream.events()[1:]
        self.assertEqual(event.type, "message")
        envelope = json.loads(event.data)
        self.assertEqual(list(envelope), ["route", "args"])
        self.assertEqual(envelope["route"], "runRequest")
        sent, path, callback_id, session_id = envelope["args"]
        self.assertEqual(
            envelope,
            {
                "route": "runRequest",
                "args": [message, "/sse", callback_id, stream.session_id],
            },
        )
        self.assertEqual(sent, message)
        self.assertEqual(path, "/sse")
        self.assertEqual(session_id, stream.session_id)
        self.assertTrue(self.endpoint.calls.is_pending(callback_id, session_id))
        self.assertNoResult(deferred)

    def test_reply_settles(self) -> None:
        """
        The session's C{POST} of C{{"args","callbackId","sessionId"}} gets
        C{204} and fires the call with C{args}; nothing is left behind.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("add", [1, 2], session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        response = self.harness.reply(stream, callback_id, {"sum": 3})
        self.assertEqual(response.status, 204)
        self.assertEqual(self.successResultOf(deferred), {"sum": 3})
        self.assertNoCalls()
        again = self.harness.reply(stream, callback_id, {"sum": 4})
        self.assertEqual(again.status, 409)
        self.assertEqual(again.json()["error"]["code"], "not_pending")

    def test_reply_with_header_session(self) -> None:
        """
        The session may be named by the C{X-GraphSSE-Session} header.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        response = self.harness.post(
            {"args": [1], "callbackId": callback_id},
            headers={b"X-GraphSSE-Session": stream.session_id.encode()},
        )
        self.assertEqual(response.status, 204)
        self.assertEqual(self.successResultOf(deferred), [1])

    def test_reply_from_another_session(self) -> None:
        """
        A reply naming another session is refused (C{409 not_pending}) and
        the call stays pending for its own session.
        """
        target = self.harness.open()
        other = self.harness.open()
        deferred = self.endpoint.run("r", session_id=target.session_id)
        _, _, callback_id, _ = last_request(target)
        response = self.harness.reply(other, callback_id, "forged")
        self.assertEqual(response.status, 409)
        self.assertEqual(response.json()["error"]["code"], "not_pending")
        self.assertNoResult(deferred)
        self.assertTrue(self.endpoint.calls.is_pending(callback_id, target.session_id))
        self.assertEqual(self.harness.reply(target, callback_id, "real").status, 204)
        self.assertEqual(self.successResultOf(deferred), "real")
        self.assertEqual(len(self.endpoint.calls), 0)

    def test_error_reply(self) -> None:
        """
        A reply carrying C{"error"} fails the call with L{RemoteCallError}
        (the client's code and message) and gets C{204}; from another
        session it is C{409} and the call stays pending.
        """
        target = self.harness.open()
        other = self.harness.open()
        deferred = self.endpoint.run("r", session_id=target.session_id)
        _, _, callback_id, _ = last_request(target)
        error = {"code": "no_route", "message": "no route 'r'"}
        body = {"args": None, "callbackId": callback_id, "error": error}
        forged = self.harness.post({**body, "sessionId": other.session_id})
        self.assertEqual(forged.status, 409)
        self.assertNoResult(deferred)
        response = self.harness.post({**body, "sessionId": target.session_id})
        self.assertEqual(response.status, 204)
        failure = self.failureResultOf(deferred, RemoteCallError)
        self.assertEqual(
            (failure.value.code, failure.value.message), ("no_route", "no route 'r'")
        )
        self.assertNoCalls()

    def test_error_reply_without_shape(self) -> None:
        """
        An C{"error"} that is not C{{"code","message"}} still fails the call,
        as C{route_failed}.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        response = self.harness.post(
            {
                "args": None,
                "callbackId": callback_id,
                "sessionId": stream.session_id,
                "error": "it broke",
            }
        )
        self.assertEqual(response.status, 204)
        failure = self.failureResultOf(deferred, RemoteCallError)
        self.assertEqual(failure.value.code, "route_failed")
        self.assertIn("it broke", failure.value.message)
        self.assertNoCalls()

    def test_request_only_to_its_session(self) -> None:
        """
        A request to one session is written on that stream only.
        """
        target = self.harness.open()
        other = self.harness.open()
        self.endpoint.run("r", session_id=target.session_id)
        self.harness.flush()
        self.assertEqual(len(target.run_requests()), 1)
        self.assertEqual(other.run_requests(), [])

    def test_run_wraps_route_call(self) -> None:
        """
        C{run(route, args)} asks for C{{"route":route,"args":args}}.
        """
        stream = self.harness.open()
        self.endpoint.run("add", [1, 2], session_id=stream.session_id)
        message, *_ = last_request(stream)
        self.assertEqual(message, {"route": "add", "args": [1, 2]})
        self.endpoint.run("noargs", session_id=stream.session_id)
        message, *_ = last_request(stream)
        self.assertEqual(message, {"route": "noargs", "args": None})

    def test_method_goes_into_message(self) -> None:
        """
        A C{method} is carried inside the message, for C{run} and
        C{request} alike; the caller's dict is not changed.
        """
        stream = self.harness.open()
        self.endpoint.run("counter", 5, method="post", session_id=stream.session_id)
        message, *_ = last_request(stream)
        self.assertEqual(message, {"route": "counter", "args": 5, "method": "post"})
        original = {"route": "counter", "args": None}
        self.endpoint.request(original, method="get", session_id=stream.session_id)
        message, *_ = last_request(stream)
        self.assertEqual(message, {"route": "counter", "args": None, "method": "get"})
        self.assertEqual(original, {"route": "counter", "args": None})

    def test_client_object_calls(self) -> None:
        """
        An L{SSEClient}'s own C{request} and C{run} go to its session, with
        its timeout.
        """
        stream = self.harness.open()
        client = stream.client
        deferred = client.run("r", [1], method="get", timeout=3)
        message, path, callback_id, session_id = last_request(stream)
        self.assertEqual(message, {"route": "r", "args": [1], "method": "get"})
        self.assertEqual((path, session_id), ("/sse", stream.session_id))
        self.clock.advance(3)
        self.failureResultOf(deferred, TimeoutError)
        other = client.request({"route": "q", "args": None})
        _, _, callback_id, _ = last_request(stream)
        self.harness.reply(stream, callback_id, "ok")
        self.assertEqual(self.successResultOf(other), "ok")

    def test_default_timeout(self) -> None:
        """
        Unanswered, a request fails with L{TimeoutError} after 30 s by
        default, and the table forgets it; a late reply gets C{409}.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        self.clock.advance(29.9)
        self.assertNoResult(deferred)
        self.clock.advance(0.1)
        self.failureResultOf(deferred, TimeoutError)
        self.assertNoCalls()
        self.assertEqual(self.harness.reply(stream, callback_id, 1).status, 409)

    def test_per_call_timeout(self) -> None:
        """
        C{timeout=} of one call beats the endpoint's default.
        """
        stream = self.harness.open()
        short = self.endpoint.run("r", session_id=stream.session_id, timeout=1.5)
        long = self.endpoint.run("r", session_id=stream.session_id)
        self.clock.advance(1.5)
        self.failureResultOf(short, TimeoutError)
        self.assertNoResult(long)
        self.assertEqual(len(self.endpoint.calls), 1)
        self.clock.advance(28.5)
        self.failureResultOf(long, TimeoutError)
        self.assertNoCalls()

    def test_endpoint_default_timeout(self) -> None:
        """
        C{setup_sse(request_timeout=...)} sets the endpoint's default; L{None}
        means no limit (and no timer).
        """
        harness = SSEHarness(request_timeout=5)
        stream = harness.open()
        deferred = harness.endpoint.run("r", session_id=stream.session_id)
        harness.clock.advance(4.9)
        self.assertNoResult(deferred)
        harness.clock.advance(0.1)
        self.failureResultOf(deferred, TimeoutError)
        self.assertEqual(len(harness.endpoint.calls), 0)

        forever = SSEHarness(request_timeout=None)
        stream = forever.open()
        waiting = forever.endpoint.run("r", session_id=stream.session_id)
        forever.flush()
        self.assertEqual(forever.clock.getDelayedCalls(), [])
        forever.clock.advance(3600)
        self.assertNoResult(waiting)
        _, _, callback_id, _ = last_request(stream)
        self.assertEqual(forever.reply(stream, callback_id, "late").status, 204)
        self.assertEqual(self.successResultOf(waiting), "late")

    def test_cancel(self) -> None:
        """
        Cancelling a request fails it with L{CancelledError} and removes it;
        the client's later answer is refused with C{409}.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        deferred.cancel()
        self.failureResultOf(deferred, CancelledError)
        self.assertNoCalls()
        response = self.harness.reply(stream, callback_id, 1)
        self.assertEqual(response.status, 409)

    def test_unknown_session(self) -> None:
        """
        A request to a session the endpoint does not hold fails at once with
        L{SessionClosed} and leaves nothing pending.
        """
        deferred = self.endpoint.run("r", session_id="no-such-session")
        self.failureResultOf(deferred, SessionClosed)
        self.assertNoCalls()

    def test_every_session(self) -> None:
        """
        Without a session id, C{request} returns one L{Deferred} per open
        session; each stream gets its own call and each answer settles its
        own L{Deferred}.
        """
        streams = [self.harness.open() for _ in range(3)]
        deferreds = self.endpoint.run("who")
        assert isinstance(deferreds, dict)
        self.assertEqual(set(deferreds), {s.session_id for s in streams})
        ids = set()
        self.harness.flush()
        for stream in streams:
            [(message, _path, callback_id, session_id)] = stream.run_requests()
            self.assertEqual(message, {"route": "who", "args": None})
            self.assertEqual(session_id, stream.session_id)
            ids.add(callback_id)
        self.assertEqual(len(ids), 3)
        for number, stream in enumerate(streams):
            [(_, _, callback_id, _)] = stream.run_requests()
            self.assertEqual(
                self.harness.reply(stream, callback_id, number).status, 204
            )
        for number, stream in enumerate(streams):
            self.assertEqual(self.successResultOf(deferreds[stream.session_id]), number)
        self.assertNoCalls()

    def test_every_session_none_open(self) -> None:
        """
        Without sessions, C{request} to all returns an empty C{dict}.
        """
        self.assertEqual(self.endpoint.request({"route": "r", "args": None}), {})
        self.assertEqual(self.endpoint.subscribe("r", lambda _: None), {})
        self.assertNoCalls()


class SubscribeTests(SynchronousTestCase):
    """
    The server subscribing to client routes.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.endpoint = self.harness.endpoint
        self.stream = self.harness.open()
        self.updates: list[Any] = []

    def subscribe(self, args: Any = None) -> int:
        deferred = self.endpoint.subscribe(
            "clock", self.updates.append, self.stream.session_id, args
        )
        assert isinstance(deferred, Deferred)
        message, path, callback_id, session_id = last_request(self.stream)
        self.assertEqual(
            message,
            {
                "route": "subscribeSSE",
                "args": ["clock", "/sse", args, None, None, self.stream.session_id],
            },
        )
        self.assertEqual((path, session_id), ("/sse", self.stream.session_id))
        self.assertNoResult(deferred)
        self.assertEqual(self.harness.reply(self.stream, callback_id, 7).status, 204)
        sub: int = self.successResultOf(deferred)
        return sub

    def update(self, args: Any, session_id: str | None = None) -> int:
        body = {
            "args": args,
            "callbackId": "clock",
            "sessionId": session_id or self.stream.session_id,
        }
        return self.harness.post(body).status

    def test_subscribe_envelope_and_number(self) -> None:
        """
        C{subscribe} sends C{subscribeSSE} with C{[route, path, args, null,
        null, sessionId]} and fires with the client's subscription number.
        """
        self.assertEqual(self.subscribe(), 7)
        self.assertEqual(len(self.endpoint.calls), 0)

    def test_subscribe_with_args(self) -> None:
        """
        C{args} travel in the third place.
        """
        self.assertEqual(self.subscribe({"every": 5}), 7)

    def test_updates_reach_callback(self) -> None:
        """
        Each later C{POST} of C{{"args":x,"callbackId":route,"sessionId":sid}}
        gets C{204} and calls the callback with C{x}, in order.
        """
        self.subscribe()
        self.assertEqual(self.update({"t": 1}), 204)
        self.assertEqual(self.update([1, 2]), 204)
        self.assertEqual(self.update(None), 204)
        self.assertEqual(self.updates, [{"t": 1}, [1, 2], None])

    def test_update_from_another_session(self) -> None:
        """
        Another session's update of the route is refused with C{409} and
        never reaches the callback.
        """
        self.subscribe()
        other = self.harness.open()
        self.assertEqual(self.update("forged", other.session_id), 409)
        self.assertEqual(self.updates, [])

    def test_update_before_subscribed(self) -> None:
        """
        Until the client has answered the subscription, updates are refused.
        """
        self.endpoint.subscribe("clock", self.updates.append, self.stream.session_id)
        self.assertEqual(self.update(1), 409)
        self.assertEqual(self.updates, [])

    def test_unsubscribe(self) -> None:
        """
        C{unsubscribe} runs the client's C{unsubscribe} with C{[route, sub]},
        fires with a bool, and later updates are refused.
        """
        sub = self.subscribe()
        deferred = self.endpoint.unsubscribe("clock", sub, self.stream.session_id)
        assert isinstance(deferred, Deferred)
        message, _, callback_id, _ = last_request(self.stream)
        self.assertEqual(message, {"route": "unsubscribe", "args": ["clock", sub]})
        self.assertEqual(self.update("late"), 409)
        self.assertEqual(self.harness.reply(self.stream, callback_id, 1).status, 204)
        self.assertIs(self.successResultOf(deferred), True)
        self.assertEqual(self.updates, [])
        self.assertEqual(len(self.endpoint.calls), 0)

    def test_client_object_subscribe(self) -> None:
        """
        An L{SSEClient}'s C{subscribe} and C{unsubscribe} work the same.
        """
        client = self.stream.client
        deferred = client.subscribe("clock", self.updates.append, args=[1])
        message, _, callback_id, _ = last_request(self.stream)
        self.assertEqual(message["args"][:3], ["clock", "/sse", [1]])
        self.harness.reply(self.stream, callback_id, 2)
        self.assertEqual(self.successResultOf(deferred), 2)
        self.assertEqual(self.update("tick"), 204)
        self.assertEqual(self.updates, ["tick"])
        done = client.unsubscribe("clock", 2)
        _, _, callback_id, _ = last_request(self.stream)
        self.harness.reply(self.stream, callback_id, False)
        self.assertIs(self.successResultOf(done), False)

    def test_session_close_forgets_subscriptions(self) -> None:
        """
        When the session closes, its client subscriptions are dropped.
        """
        self.subscribe()
        self.stream.hang_up()
        self.assertEqual(self.endpoint.client_calls._subscriptions, {})


class SessionCloseTests(SynchronousTestCase):
    """
    Pending calls when a session ends.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.endpoint = self.harness.endpoint
        self.clock = self.harness.clock

    def open_calls(self, stream: Stream) -> list[Deferred[Any]]:
        sid = stream.session_id
        calls: list[Deferred[Any]] = [
            self.endpoint.run("a", session_id=sid),  # type: ignore[list-item]
            self.endpoint.request(  # type: ignore[list-item]
                {"route": "b", "args": None}, session_id=sid, timeout=100
            ),
            self.endpoint.subscribe("c", lambda _: None, sid),  # type: ignore[list-item]
            stream.client.run("d"),
        ]
        return calls

    def test_client_hangs_up(self) -> None:
        """
        A session whose client goes away fails all its calls with
        L{SessionClosed}; the other session's calls are untouched; nothing
        is left in the table or on the clock once all are gone.
        """
        gone = self.harness.open()
        staying = self.harness.open()
        calls = self.open_calls(gone)
        kept = self.endpoint.run("x", session_id=staying.session_id)
        self.harness.flush()
        gone.hang_up()
        for deferred in calls:
            self.failureResultOf(deferred, SessionClosed)
        self.assertNoResult(kept)
        self.assertEqual(len(self.endpoint.calls), 1)
        self.assertEqual(self.endpoint.calls.pending_for(gone.session_id), 0)
        staying.hang_up()
        self.failureResultOf(kept, SessionClosed)
        self.harness.flush()
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.endpoint.sessions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_server_closes_session(self) -> None:
        """
        Closing a session from the server fails its calls the same way.
        """
        stream = self.harness.open()
        calls = self.open_calls(stream)
        self.assertTrue(stream.client.terminate())
        for deferred in calls:
            self.failureResultOf(deferred, SessionClosed)
        self.assertTrue(stream.response().complete)
        self.harness.flush()
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endpoint_terminates(self) -> None:
        """
        Terminating the endpoint fails every session's calls.
        """
        streams = [self.harness.open() for _ in range(3)]
        calls = [call for stream in streams for call in self.open_calls(stream)]
        self.endpoint.terminate()
        for deferred in calls:
            self.failureResultOf(deferred, SessionClosed)
        self.harness.flush()
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_call_from_connection_close_callback(self) -> None:
        """
        A call made from C{on_connection_close} to the closing session fails
        at once with L{SessionClosed}; it does not hang or stay in the table.
        """
        made: list[Deferred[Any]] = []

        def closed(
            client: SSEClient, endpoint: SSEEndpoint, session_id: str, request: Any
        ) -> None:
            made.append(client.run("goodbye"))
            made.append(endpoint.run("bye", session_id=session_id))  # type: ignore[arg-type]

        harness = SSEHarness(on_connection_close=closed)
        stream = harness.open()
        stream.hang_up()
        self.assertEqual(len(made), 2)
        for deferred in made:
            self.failureResultOf(deferred, SessionClosed)
        harness.flush()
        self.assertEqual(len(harness.endpoint.calls), 0)
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_call_from_failing_call(self) -> None:
        """
        A call made while the session's calls are being failed (from one of
        their errbacks) fails with L{SessionClosed} too.
        """
        stream = self.harness.open()
        client = stream.client
        retries: list[Deferred[Any]] = []

        def retry(failure: Failure) -> None:
            failure.trap(SessionClosed)
            retries.append(client.run("again"))

        first = self.endpoint.run("r", session_id=stream.session_id)
        assert isinstance(first, Deferred)
        first.addErrback(retry)
        stream.hang_up()
        self.successResultOf(first)
        [again] = retries
        self.failureResultOf(again, SessionClosed)
        self.assertEqual(len(self.endpoint.calls), 0)

    def test_call_while_aborting(self) -> None:
        """
        A call made after the session's connection was aborted, before the
        transport reported the loss, fails at once with L{SessionClosed}: its
        envelope could never be written.  Nothing is left behind.
        """
        stream = self.harness.open()
        stream.client.abort("slow consumer")
        self.assertIn(stream.session_id, self.endpoint.sessions)
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        self.failureResultOf(deferred, SessionClosed)
        self.assertEqual(len(self.endpoint.calls), 0)
        stream.protocol.connectionLost(Failure(ConnectionDone()))
        self.harness.flush()
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reply_after_close(self) -> None:
        """
        Once its session closed, a reply to a failed call names no session:
        C{404 no_session}.
        """
        stream = self.harness.open()
        deferred = self.endpoint.run("r", session_id=stream.session_id)
        _, _, callback_id, _ = last_request(stream)
        stream.hang_up()
        self.failureResultOf(deferred, SessionClosed)
        response = self.harness.reply(stream, callback_id, 1)
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json()["error"]["code"], "no_session")


class StreamIterableTests(SynchronousTestCase):
    """
    C{stream_iterable}: one item per reactor turn, until the session closes.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.endpoint = self.harness.endpoint
        self.clock = self.harness.clock
        self.stream = self.harness.open()
        self.pulled = 0

    def counting(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.pulled += 1
            yield item

    def test_one_item_per_turn(self) -> None:
        """
        A plain iterable is pulled lazily, one item per turn, and each turn
        puts one more event on the stream; the result is the count.
        """
        done = self.endpoint.stream_iterable(
            self.counting(iter(["a", {"b": 1}, [3]])), self.stream.session_id
        )
        self.assertEqual(self.pulled, 1)
        self.assertEqual(self.stream.data(), [])
        seen = []
        for turn in range(1, 4):
            run_one_turn(self.clock)
            self.assertEqual(len(self.stream.data()), turn)
            seen = self.stream.data()
        self.assertEqual(seen, ["a", '{"b":1}', "[3]"])
        self.assertEqual(self.pulled, 3)
        self.assertEqual(self.successResultOf(done), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_named_event(self) -> None:
        """
        C{event=} names every event; the default is C{message}.
        """
        done = self.endpoint.stream_iterable(
            ["x"], self.stream.session_id, event="tick"
        )
        self.harness.flush()
        self.assertEqual(self.successResultOf(done), 1)
        self.assertEqual([e.type for e in self.stream.events()[1:]], ["tick"])

    def test_stops_when_session_closes(self) -> None:
        """
        An endless iterable stops once its session closes: the result is the
        number sent, the iterable is not pulled again, and nothing stays
        scheduled.
        """
        done = self.endpoint.stream_iterable(
            self.counting(itertools.count()), self.stream.session_id
        )
        run_one_turn(self.clock)
        run_one_turn(self.clock)
        self.assertEqual(self.stream.data(), ["0", "1"])
        self.assertNoResult(done)
        self.stream.hang_up()
        pulled = self.pulled
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(done), pulled)
        self.assertEqual(self.pulled, pulled)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failing_iterable(self) -> None:
        """
        An iterable that raises fails the result.
        """

        def broken() -> Iterator[int]:
            yield 1
            raise ZeroDivisionError()

        done = self.endpoint.stream_iterable(broken(), self.stream.session_id)
        self.clock.advance(0)
        self.failureResultOf(done, ZeroDivisionError)
        self.assertEqual(self.stream.data(), ["1"])

    def test_async_iterable(self) -> None:
        """
        An async iterable's items are sent as they come.
        """
        gates: list[Deferred[None]] = []

        async def produce() -> AsyncIterator[dict[str, int]]:
            for n in range(3):
                gate: Deferred[None] = Deferred()
                gates.append(gate)
                await gate
                yield {"n": n}

        done = self.endpoint.stream_iterable(produce(), self.stream.session_id)
        for n in range(3):
            self.assertNoResult(done)
            gates[n].callback(None)
            self.harness.flush()
            self.assertEqual(self.stream.messages(), [{"n": i} for i in range(n + 1)])
        self.assertEqual(self.successResultOf(done), 3)

    def test_async_iterable_stops_when_session_closes(self) -> None:
        """
        An endless async iterable stops at its next item once its session
        closes.
        """
        gates: list[Deferred[None]] = []

        async def produce() -> AsyncIterator[int]:
            for n in itertools.count():
                gate: Deferred[None] = Deferred()
                gates.append(gate)
                await gate
                yield n

        done = self.endpoint.stream_iterable(produce(), self.stream.session_id)
        gates[0].callback(None)
        self.harness.flush()
        self.assertEqual(self.stream.data(), ["0"])
        self.stream.hang_up()
        gates[1].callback(None)
        self.assertEqual(self.successResultOf(done), 1)
        self.assertEqual(len(gates), 2)
        self.harness.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_all_sessions(self) -> None:
        """
        Without a session id, every session gets each item, until the
        endpoint closes.
        """
        other = self.harness.open()
        done = self.endpoint.stream_iterable(self.counting(itertools.count()))
        run_one_turn(self.clock)
        self.assertEqual(self.stream.data(), ["0"])
        self.assertEqual(other.data(), ["0"])
        self.endpoint.terminate()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(done), self.pulled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
