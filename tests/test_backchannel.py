"""
Tests for the back-channel (PROTOCOL.md section 2 and its error table) over
real sockets on 127.0.0.1: a L{Site} listening on the real reactor, streams
read with C{treq.get(..., unbuffered=True)} and L{treq.collect} into an
L{EventStreamParser}, and C{POST}s made with treq.

One test (at least) per row of the body table and per row of the error
table, then many concurrent server-to-client calls and a client that dies
while calls are pending.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from typing import Any

import treq
from attrs import frozen
from twisted.internet import reactor
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredSemaphore,
    gatherResults,
)
from twisted.internet.interfaces import IAddress, IReactorTCP
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import (
    Caller,
    EventStreamParser,
    Limits,
    RemoteCallError,
    ServerSentEvent,
    SessionClosed,
    SSEBackend,
    Value,
)

#: How long a test waits for one expected thing before it fails.
WAIT = 10.0


class _HangUp(Exception):
    """
    Raised from a stream's collector to make the client drop the connection.
    """


@frozen
class Reply:
    """
    The answer to a C{POST}.
    """

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class TrackingSite(Site):
    """
    A L{Site} that knows when every connection it served has closed.
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self._lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Any:
        protocol = super().buildProtocol(addr)
        assert protocol is not None
        lost: Deferred[None] = Deferred()
        self._lost.append(lost)
        original = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                original(reason)
            finally:
                lost.callback(None)

        protocol.connectionLost = connectionLost
        return protocol

    def all_closed(self) -> Deferred[Any]:
        """
        Fires once every connection so far has closed.
        """
        return DeferredList([d for d in self._lost if not d.called])


class LiveStream:
    """
    An open C{GET /sse} read by treq.

    @ivar events: every event so far, C{setId} first.
    @ivar session_id: the id from C{setId}.
    @ivar done: fires (or fails) when the response ends.
    """

    def __init__(self, response: Any) -> None:
        self.response = response
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []
        self.session_id = ""
        self._waiters: list[tuple[Callable[[list[Any]], Any], Deferred[Any]]] = []
        self.hang_up_when: Callable[[list[Any]], bool] | None = None
        self.done: Deferred[None] = treq.collect(response, self._received)

    def messages(self) -> list[Any]:
        """
        The data of every event, as JSON where it is JSON.
        """
        out = []
        for event in self.events:
            try:
                out.append(json.loads(event.data))
            except ValueError:
                out.append(event.data)
        return out

    def _received(self, data: bytes) -> None:
        new = self.parser.feed(data)
        if not new:
            return
        self.events.extend(new)
        messages = self.messages()
        for waiter in list(self._waiters):
            check, deferred = waiter
            found = check(messages)
            if found is not None and found is not False:
                self._waiters.remove(waiter)
                deferred.callback(found)
        if self.hang_up_when is not None and self.hang_up_when(messages):
            raise _HangUp()

    def until(self, check: Callable[[list[Any]], Any]) -> Deferred[Any]:
        """
        Fire with what C{check(messages)} returns once that is neither
        L{None} nor L{False}; fail after L{WAIT} seconds.
        """
        found = check(self.messages())
        if found is not None and found is not False:
            deferred: Deferred[Any] = Deferred()
            deferred.callback(found)
            return deferred
        deferred = Deferred()
        self._waiters.append((check, deferred))
        return deferred.addTimeout(WAIT, reactor)

    def until_message(self, match: Callable[[Any], bool]) -> Deferred[Any]:
        """
        Fire with the first message for which C{match} is true.
        """

        def check(messages: list[Any]) -> Any:
            for message in messages:
                if match(message):
                    return message
            return None

        return self.until(check)

    def run_requests(self) -> list[list[Any]]:
        """
        The C{args} of every C{runRequest} received.
        """
        return [
            message["args"]
            for message in self.messages()
            if isinstance(message, dict) and message.get("route") == "runRequest"
        ]

    async def next_run_request(self, seen: int = 0) -> list[Any]:
        """
        The args of the C{runRequest} after the first C{seen} ones.
        """

        def check(messages: list[Any]) -> Any:
            found = [
                m["args"]
                for m in messages
                if isinstance(m, dict) and m.get("route") == "runRequest"
            ]
            return found[seen] if len(found) > seen else None

        result: list[Any] = await self.until(check)
        return result


def is_reply(callback_id: Any) -> Callable[[Any], bool]:
    """
    Matches C{{"args":..,"callbackId":callback_id}} on a stream.
    """

    def match(message: Any) -> bool:
        return (
            isinstance(message, dict)
            and "route" not in message
            and message.get("callbackId") == callback_id
        )

    return match


class BackChannelCase(TestCase):
    """
    A backend with a few routes, its endpoint at C{/sse} of a real server.
    """

    def setUp(self) -> None:
        self.backend = SSEBackend(reactor=reactor)
        self.endpoint = self.backend.setup_sse("/sse")
        self.small = self.backend.setup_sse("/small", limits=Limits(max_body=64))
        self.limited = self.backend.setup_sse(
            "/limited",
            limits=Limits(calls_per_second=0.001, call_burst=2, max_sessions=1),
        )
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        root.putChild(b"small", self.small.resource)
        root.putChild(b"limited", self.limited.resource)
        self.site = TrackingSite(root)
        tcp: IReactorTCP = reactor
        self.port = tcp.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.url = self.base + "/sse"
        self.pool = HTTPConnectionPool(reactor, False)
        self.streams: list[LiveStream] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))

        backend = self.backend
        backend.add_route("add", lambda a, b: a + b)
        backend.add_route("counter", Value(0))
        backend.add_route("secret", lambda: "s3cret")
        backend.restrict(["secret"])

        def whoami(*, caller: Caller) -> str | None:
            return None if caller.session is None else str(caller.session.id)

        backend.add_route("whoami", whoami)

        def boom(*args: Any) -> None:
            raise ValueError("boom went the route")

        backend.add_route("boom", boom)

    async def _clean_up(self) -> None:
        self.endpoint.terminate()
        self.small.terminate()
        self.limited.terminate()
        for stream in self.streams:
            await stream.done.addErrback(lambda f: f.trap(_HangUp))
        await self.pool.closeCachedConnections()
        await self.port.stopListening()
        await self.site.all_closed()

    async def open_stream(self, path: str = "/sse") -> LiveStream:
        """
        Open a session; wait for its C{setId}.
        """
        response = await treq.get(self.base + path, unbuffered=True, pool=self.pool)
        self.assertEqual(response.code, 200)
        stream = LiveStream(response)
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        endpoint = self.backend.endpoints[path]
        self.assertIn(stream.session_id, endpoint.sessions)
        return stream

    async def post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
        path: str = "/sse",
    ) -> Reply:
        """
        C{POST} C{body} as JSON (or C{raw} bytes).
        """
        data = raw if raw is not None else json.dumps(body).encode("utf-8")
        sent: dict[str, str] = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        response = await treq.post(
            self.base + path, data=data, headers=sent, pool=self.pool
        )
        content = await treq.content(response)
        return Reply(response.code, response.headers, content)

    def assertJSON(self, reply: Reply) -> None:
        """
        C{reply} says it is JSON.
        """
        [content_type] = reply.headers.getRawHeaders(b"content-type") or [b""]
        self.assertEqual(content_type.split(b";")[0].strip(), b"application/json")

    def assertAnswer(self, reply: Reply, status: int, body: Any) -> None:
        """
        C{reply} is a JSON answer C{status} with exactly C{body}.
        """
        self.assertEqual((reply.status, reply.json()), (status, body), reply.body)
        self.assertJSON(reply)

    def assertError(self, reply: Reply, status: int, code: str) -> str:
        """
        C{reply} is exactly C{{"error":{"code":code,"message":..}}} with
        C{status}, as JSON, with a one-line message for a person (and, for
        a route that failed, the C{id} of the log line that says more).

        @return: the message.
        """
        self.assertEqual(reply.status, status, reply.body)
        self.assertJSON(reply)
        body = reply.json()
        self.assertEqual(list(body), ["error"])
        keys = sorted(body["error"])
        self.assertIn(keys, [["code", "message"], ["code", "id", "message"]])
        self.assertEqual(body["error"]["code"], code)
        message = body["error"]["message"]
        self.assertIsInstance(message, str)
        self.assertTrue(message)
        self.assertNotIn("\n", message)
        return str(message)


class BodyTableTests(BackChannelCase):
    """
    One test per row of PROTOCOL.md section 2's table, and its variants.
    """

    async def test_route_call(self) -> None:
        """
        C{{"route":R,"args":A}} runs R and answers C{200 {"args":result}}; an
        array is spread, another value is one argument, null is none.
        """
        self.assertAnswer(
            await self.post({"route": "add", "args": [1, 2]}), 200, {"args": 3}
        )
        self.assertAnswer(
            await self.post({"route": "echo", "args": "one"}), 200, {"args": "one"}
        )
        self.assertAnswer(
            await self.post({"route": "echo", "args": None}), 200, {"args": None}
        )
        self.assertAnswer(await self.post({"route": "ping"}), 200, {"args": "pong"})

    async def test_route_call_with_method(self) -> None:
        """
        C{"method"} picks the verb: C{post} sets a L{Value}, C{get} reads it.
        """
        self.assertAnswer(
            await self.post({"route": "counter", "args": 5, "method": "post"}),
            200,
            {"args": 5},
        )
        self.assertAnswer(
            await self.post({"route": "counter", "args": None, "method": "get"}),
            200,
            {"args": 5},
        )
        self.assertEqual(
            self.successResultOf(self.backend.call("counter", method="get")), 5
        )

    async def test_run_request(self) -> None:
        """
        C{runRequest} runs its message and answers C{200
        {"args":result,"callbackId":cid}}; the same is pushed on the
        session's stream.
        """
        stream = await self.open_stream()
        reply = await self.post(
            {
                "route": "runRequest",
                "args": [
                    {"route": "add", "args": [2, 3]},
                    "/sse",
                    "cid-1",
                    stream.session_id,
                ],
            }
        )
        self.assertAnswer(reply, 200, {"args": 5, "callbackId": "cid-1"})
        pushed = await stream.until_message(is_reply("cid-1"))
        self.assertEqual(pushed, {"args": 5, "callbackId": "cid-1"})

    async def test_run_request_with_method_and_number_id(self) -> None:
        """
        The wrapped message may carry C{method}; a numeric C{callbackId}
        comes back as it was.
        """
        stream = await self.open_stream()
        reply = await self.post(
            {
                "route": "runRequest",
                "args": [
                    {"route": "counter", "args": 9, "method": "post"},
                    "/sse",
                    17,
                    stream.session_id,
                ],
            }
        )
        self.assertAnswer(reply, 200, {"args": 9, "callbackId": 17})
        self.assertEqual(await stream.until_message(is_reply(17)), reply.json())

    async def test_run_request_without_session(self) -> None:
        """
        A C{runRequest} that names no session is answered in the body only.
        """
        stream = await self.open_stream()
        reply = await self.post(
            {"route": "runRequest", "args": [{"route": "ping"}, "/sse", "x", None]}
        )
        self.assertAnswer(reply, 200, {"args": "pong", "callbackId": "x"})
        self.endpoint.send("marker", session_id=stream.session_id)
        await stream.until_message(lambda m: m == "marker")
        self.assertFalse([m for m in stream.messages() if is_reply("x")(m)])

    async def test_reply_settles_request(self) -> None:
        """
        C{{"args","callbackId","sessionId"}} settles the server's pending
        request to that session: C{204}, and the L{Deferred} fires with the
        args.
        """
        stream = await self.open_stream()
        deferred = self.endpoint.run("double", 21, session_id=stream.session_id)
        assert isinstance(deferred, Deferred)
        message, path, callback_id, session_id = await stream.next_run_request()
        self.assertEqual(message, {"route": "double", "args": 21})
        self.assertEqual((path, session_id), ("/sse", stream.session_id))
        reply = await self.post(
            {"args": 42, "callbackId": callback_id, "sessionId": stream.session_id}
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual(reply.body, b"")
        self.assertEqual(await deferred, 42)
        self.assertEqual(len(self.endpoint.calls), 0)

    async def test_reply_from_another_session(self) -> None:
        """
        A reply naming a session the call did not go to is C{409
        not_pending}, and the call stays pending for its own session.
        """
        target = await self.open_stream()
        other = await self.open_stream()
        deferred = self.endpoint.run("r", session_id=target.session_id)
        assert isinstance(deferred, Deferred)
        _, _, callback_id, _ = await target.next_run_request()
        reply = await self.post(
            {"args": "forged", "callbackId": callback_id, "sessionId": other.session_id}
        )
        self.assertError(reply, 409, "not_pending")
        self.assertFalse(deferred.called)
        self.assertTrue(self.endpoint.calls.is_pending(callback_id, target.session_id))
        reply = await self.post(
            {"args": "real", "callbackId": callback_id, "sessionId": target.session_id}
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual(await deferred, "real")

    async def test_error_reply_fails_request(self) -> None:
        """
        C{{"args":null,"callbackId","sessionId","error":{"code","message"}}}
        fails the server's pending request with L{RemoteCallError}: C{204}.
        """
        stream = await self.open_stream()
        deferred = self.endpoint.run("missing", session_id=stream.session_id)
        assert isinstance(deferred, Deferred)
        _, _, callback_id, _ = await stream.next_run_request()
        reply = await self.post(
            {
                "args": None,
                "callbackId": callback_id,
                "sessionId": stream.session_id,
                "error": {"code": "no_route", "message": "no route 'missing'"},
            }
        )
        self.assertEqual(reply.status, 204)
        error = await self.assertFailure(deferred, RemoteCallError)
        self.assertEqual(
            (error.code, error.message), ("no_route", "no route 'missing'")
        )
        self.assertEqual(len(self.endpoint.calls), 0)

    async def test_reply_delivers_subscription_update(self) -> None:
        """
        Where C{callbackId} names a client route the server subscribed to on
        that session, the args go to the subscriber (C{204}).
        """
        stream = await self.open_stream()
        updates: list[Any] = []
        deferred = self.endpoint.subscribe(
            "sensor", updates.append, session_id=stream.session_id
        )
        assert isinstance(deferred, Deferred)
        message, _, callback_id, _ = await stream.next_run_request()
        self.assertEqual(
            message,
            {
                "route": "subscribeSSE",
                "args": ["sensor", "/sse", None, None, None, stream.session_id],
            },
        )
        sid = stream.session_id
        reply = await self.post(
            {"args": 4, "callbackId": callback_id, "sessionId": sid}
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual(await deferred, 4)
        for value in ({"t": 20.5}, [1, 2]):
            reply = await self.post(
                {"args": value, "callbackId": "sensor", "sessionId": sid}
            )
            self.assertEqual(reply.status, 204)
        self.assertEqual(updates, [{"t": 20.5}, [1, 2]])

    async def test_subscribe_sse(self) -> None:
        """
        C{subscribeSSE} answers C{{"args":n}}; then every output of the route
        run by the server or by the session itself is pushed as
        C{{"args":output,"callbackId":route}}.
        """
        stream = await self.open_stream()
        reply = await self.post(
            {
                "route": "subscribeSSE",
                "args": ["add", "/sse", None, None, None, stream.session_id],
            }
        )
        self.assertEqual(reply.status, 200)
        self.assertJSON(reply)
        self.assertEqual(list(reply.json()), ["args"])
        self.assertIsInstance(reply.json()["args"], int)
        self.assertEqual(self.successResultOf(self.backend.call("add", 1, 2)), 3)
        sid = stream.session_id
        await self.post({"route": "add", "args": [10, 20], "sessionId": sid})
        await self.post(
            {"route": "add", "args": [3, 4], "sessionId": sid},
            content_type="application/json; charset=utf-8",
        )

        def outputs(messages: list[Any]) -> list[Any] | None:
            found = [m["args"] for m in messages if is_reply("add")(m)]
            return found if len(found) == 3 else None

        self.assertEqual(await stream.until(outputs), [3, 30, 7])

    async def test_subscribe_sse_session_by_header(self) -> None:
        """
        C{subscribeSSE} with only C{[route, path]} takes the session from
        C{X-GraphSSE-Session}.
        """
        stream = await self.open_stream()
        reply = await self.post(
            {"route": "subscribeSSE", "args": ["add", "/sse"]},
            headers={"X-GraphSSE-Session": stream.session_id},
        )
        self.assertEqual(reply.status, 200)
        self.backend.call("add", 2, 2)
        self.assertEqual(
            await stream.until_message(is_reply("add")),
            {"args": 4, "callbackId": "add"},
        )

    async def test_unsubscribe(self) -> None:
        """
        C{unsubscribe} answers C{{"args":true}}, then C{{"args":false}};
        outputs are no longer pushed.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        reply = await self.post(
            {"route": "subscribeSSE", "args": ["add", "/sse", None, None, None, sid]}
        )
        sub = reply.json()["args"]
        body = {"route": "unsubscribe", "args": ["add", sub], "sessionId": sid}
        self.assertAnswer(await self.post(body), 200, {"args": True})
        self.assertAnswer(await self.post(body), 200, {"args": False})
        self.backend.call("add", 1, 1)
        self.endpoint.send("marker", session_id=sid)
        await stream.until_message(lambda m: m == "marker")
        self.assertEqual([m for m in stream.messages() if is_reply("add")(m)], [])
        self.assertEqual(self.endpoint.observers.of(sid), [])

    async def test_unsubscribe_only_own(self) -> None:
        """
        A session cannot end another session's subscription: C{false}, and
        the other keeps getting outputs.
        """
        owner = await self.open_stream()
        other = await self.open_stream()
        reply = await self.post(
            {
                "route": "subscribeSSE",
                "args": ["add", "/sse", None, None, None, owner.session_id],
            }
        )
        sub = reply.json()["args"]
        self.assertAnswer(
            await self.post(
                {
                    "route": "unsubscribe",
                    "args": ["add", sub],
                    "sessionId": other.session_id,
                }
            ),
            200,
            {"args": False},
        )
        self.backend.call("add", 5, 5)
        self.assertEqual(
            await owner.until_message(is_reply("add")),
            {"args": 10, "callbackId": "add"},
        )

    async def test_session_named_by_body_or_header(self) -> None:
        """
        The session is named by C{"sessionId"} in the body or by the
        C{X-GraphSSE-Session} header; either is enough.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        self.assertAnswer(
            await self.post({"route": "whoami", "sessionId": sid}), 200, {"args": sid}
        )
        self.assertAnswer(
            await self.post({"route": "whoami"}, headers={"X-GraphSSE-Session": sid}),
            200,
            {"args": sid},
        )
        self.assertAnswer(await self.post({"route": "whoami"}), 200, {"args": None})
        deferred = self.endpoint.run("r", session_id=sid)
        assert isinstance(deferred, Deferred)
        _, _, callback_id, _ = await stream.next_run_request()
        reply = await self.post(
            {"args": "by header", "callbackId": callback_id},
            headers={"X-GraphSSE-Session": sid},
        )
        self.assertEqual(reply.status, 204)
        self.assertEqual(await deferred, "by header")


class ErrorTableTests(BackChannelCase):
    """
    One test per row of PROTOCOL.md's error table.
    """

    async def test_bad_json(self) -> None:
        """
        A body that is not JSON is C{400 bad_json}.
        """
        for raw in (b"{not json", b"", b"\xff\xfe", b'{"route": "ping"'):
            self.assertError(await self.post(raw=raw), 400, "bad_json")
        deep = b"[" * 200 + b"]" * 200
        self.assertError(await self.post(raw=deep), 400, "bad_json")

    async def test_bad_message(self) -> None:
        """
        JSON of no shape of the table is C{400 bad_message}: not an object,
        neither route nor callbackId, args of the wrong shape, or arguments
        that do not fit the route.  (An array is a batch: each of its
        messages that has no shape is refused on its own.)
        """
        stream = await self.open_stream()
        sid = stream.session_id
        bodies: list[Any] = [
            "ping",
            3,
            None,
            {},
            {"args": 1},
            {"route": 5},
            {"route": ""},
            {"route": "ping", "method": 3},
            {"route": "ping", "sessionId": 3},
            {"route": "runRequest", "args": "nope"},
            {"route": "runRequest", "args": [{"route": "ping"}, "/sse"]},
            {"route": "runRequest", "args": ["ping", "/sse", "c", sid]},
            {"route": "runRequest", "args": [{"route": "ping"}, "/sse", None, sid]},
            {"route": "runRequest", "args": [{"route": "ping"}, "/sse", True, sid]},
            {"route": "runRequest", "args": [{"args": 1}, "/sse", "c", sid]},
            {
                "route": "runRequest",
                "args": [{"route": "runRequest", "args": []}, "/sse", "c", sid],
            },
            {"route": "subscribeSSE", "args": "add"},
            {"route": "subscribeSSE", "args": []},
            {"route": "subscribeSSE", "args": [5, "/sse", None, None, None, sid]},
            {"route": "subscribeSSE", "args": ["add", "/sse"]},
            {"route": "unsubscribe", "args": ["add"], "sessionId": sid},
            {"route": "unsubscribe", "args": ["add", "1"], "sessionId": sid},
            {"route": "unsubscribe", "args": ["add", True], "sessionId": sid},
            {"args": 1, "callbackId": "c"},
            {"route": "add", "args": [1, 2, 3]},
            {"route": "add", "args": 1},
        ]
        for body in bodies:
            reply = await self.post(body)
            self.assertError(reply, 400, "bad_message")
        batch = await self.post(bodies[:5])
        self.assertEqual(batch.status, 200)
        self.assertEqual(
            [entry["error"]["code"] for entry in json.loads(batch.body)],
            ["bad_message"] * 5,
        )
        self.assertIn(sid, self.endpoint.sessions)

    async def test_forbidden(self) -> None:
        """
        A restricted route is C{403 forbidden}, called directly, through
        C{runRequest}, or subscribed to.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        self.assertError(await self.post({"route": "secret"}), 403, "forbidden")
        self.assertError(
            await self.post(
                {"route": "runRequest", "args": [{"route": "secret"}, "/sse", "c", sid]}
            ),
            403,
            "forbidden",
        )
        self.assertError(
            await self.post(
                {
                    "route": "subscribeSSE",
                    "args": ["secret", "/sse", None, None, None, sid],
                }
            ),
            403,
            "forbidden",
        )
        self.assertEqual(self.successResultOf(self.backend.call("secret")), "s3cret")

    async def test_no_route(self) -> None:
        """
        An unknown route or verb is C{404 no_route}, as is a path below the
        endpoint.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        self.assertError(await self.post({"route": "nope"}), 404, "no_route")
        self.assertError(
            await self.post({"route": "counter", "method": "explode"}), 404, "no_route"
        )
        self.assertError(
            await self.post(
                {
                    "route": "subscribeSSE",
                    "args": ["nope", "/sse", None, None, None, sid],
                }
            ),
            404,
            "no_route",
        )
        self.assertError(
            await self.post({"route": "ping"}, path="/sse/deeper"), 404, "no_route"
        )

    async def test_no_session(self) -> None:
        """
        A session id the server does not hold is C{404 no_session}, in the
        body or the header, for every kind of message.
        """
        ghost = "A" * 22
        bodies: list[Any] = [
            {"route": "ping", "sessionId": ghost},
            {"args": 1, "callbackId": "c", "sessionId": ghost},
            {"route": "subscribeSSE", "args": ["add", "/sse", None, None, None, ghost]},
            {"route": "unsubscribe", "args": ["add", 1], "sessionId": ghost},
            {"route": "runRequest", "args": [{"route": "ping"}, "/sse", "c", ghost]},
        ]
        for body in bodies:
            self.assertError(await self.post(body), 404, "no_session")
        self.assertError(
            await self.post({"route": "ping"}, headers={"X-GraphSSE-Session": ghost}),
            404,
            "no_session",
        )

    async def test_not_pending(self) -> None:
        """
        A reply to a request that is not pending for that session is C{409
        not_pending}.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        for callback_id in ("never-sent", 12, None, ["x"]):
            self.assertError(
                await self.post(
                    {"args": 1, "callbackId": callback_id, "sessionId": sid}
                ),
                409,
                "not_pending",
            )

    async def test_too_large(self) -> None:
        """
        A body over the configured limit is C{413 too_large}.
        """
        reply = await self.post({"route": "echo", "args": "x" * 100}, path="/small")
        self.assertError(reply, 413, "too_large")
        self.assertAnswer(
            await self.post({"route": "ping"}, path="/small"), 200, {"args": "pong"}
        )

    async def test_rate_limited(self) -> None:
        """
        A session's calls over the configured rate are C{429 rate_limited},
        with C{Retry-After}, and do not run; callers without a session have
        their own budget.
        """
        stream = await self.open_stream("/limited")
        ran: list[Any] = []
        self.backend.subscribe("echo", ran.append)
        body = {"route": "echo", "args": 1, "sessionId": stream.session_id}
        for _ in range(2):
            reply = await self.post(body, path="/limited")
            self.assertAnswer(reply, 200, {"args": 1})
        reply = await self.post(body, path="/limited")
        self.assertError(reply, 429, "rate_limited")
        self.assertEqual(reply.headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertEqual(ran, [1, 1])
        reply = await self.post({"route": "ping"}, path="/limited")
        self.assertAnswer(reply, 200, {"args": "pong"})

    async def test_unavailable(self) -> None:
        """
        A stream over the session limit is refused with C{503 unavailable}
        and C{Retry-After}, as JSON; the open session is not disturbed.
        """
        stream = await self.open_stream("/limited")
        response = await treq.get(self.base + "/limited", pool=self.pool)
        content = await treq.content(response)
        reply = Reply(response.code, response.headers, content)
        self.assertError(reply, 503, "unavailable")
        self.assertEqual(reply.headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertIn(stream.session_id, self.limited.sessions)
        self.assertFalse(stream.done.called)

    async def test_bad_content_type(self) -> None:
        """
        Anything but C{application/json} is C{415 bad_content_type}: plain
        text, form posts, or no type at all; nothing runs.
        """
        ran: list[Any] = []
        self.backend.subscribe("echo", ran.append)
        body = json.dumps({"route": "echo", "args": 1}).encode()
        for content_type in (
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            None,
        ):
            reply = await self.post(raw=body, content_type=content_type)
            self.assertError(reply, 415, "bad_content_type")
        # Real form posts, as a cross-site <form> would send them.
        for extra in (
            {},
            {"files": {"upload": ("m.json", "application/json", io.BytesIO(body))}},
        ):
            response = await treq.post(
                self.url, data={"route": "echo", "args": "1"}, pool=self.pool, **extra
            )
            content = await treq.content(response)
            reply = Reply(response.code, response.headers, content)
            self.assertError(reply, 415, "bad_content_type")
        self.assertEqual(ran, [])

    async def test_route_failed(self) -> None:
        """
        A route that raises is C{500 route_failed}: the message names the
        route and the error id, without the exception's text, a traceback or
        file paths; the error is logged; the session lives on, its stream
        open and its next call answered.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        reply = await self.post({"route": "boom", "args": [1], "sessionId": sid})
        message = self.assertError(reply, 500, "route_failed")
        self.assertIn("'boom'", message)
        self.assertIn(reply.json()["error"]["id"], message)
        self.assertNotIn("boom went the route", message)
        text = reply.body.decode("utf-8")
        for leak in ("Traceback", 'File "', ".py", __file__, "line ", "/work/"):
            self.assertNotIn(leak, text)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertAnswer(
            await self.post({"route": "add", "args": [1, 1], "sessionId": sid}),
            200,
            {"args": 2},
        )
        self.assertIn(sid, self.endpoint.sessions)
        self.assertTrue(self.endpoint.sessions[sid].is_connected)
        self.endpoint.send("still here", session_id=sid)
        await stream.until_message(lambda m: m == "still here")
        self.assertFalse(stream.done.called)

    async def test_route_failed_async(self) -> None:
        """
        An C{async def} route that raises, and a result that is not JSON,
        are C{500 route_failed} too.
        """

        async def later() -> None:
            raise KeyError("missing")

        self.backend.add_route("later", later)
        self.backend.add_route("opaque", lambda: object())
        message = self.assertError(
            await self.post({"route": "later"}), 500, "route_failed"
        )
        self.assertIn("'later'", message)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        reply = await self.post({"route": "opaque"})
        message = self.assertError(reply, 500, "route_failed")
        self.assertNotIn("object at 0x", reply.body.decode())
        self.assertEqual(self.successResultOf(self.backend.call("ping")), "pong")


class LoadTests(BackChannelCase):
    """
    Many calls at once, and a client that dies with calls pending.
    """

    async def test_thousand_concurrent_requests(self) -> None:
        """
        1,000 requests to one session at once, answered by C{POST}s in
        shuffled order (50 at a time), each resolve with their own answer.
        """
        count = 1000
        stream = await self.open_stream()
        sid = stream.session_id
        deferreds = [
            self.endpoint.run("work", {"n": n}, session_id=sid) for n in range(count)
        ]
        self.assertEqual(len(self.endpoint.calls), count)
        requests = await stream.until(
            lambda messages: (
                stream.run_requests() if len(stream.run_requests()) >= count else None
            )
        )
        self.assertEqual(len(requests), count)
        self.assertEqual(len({args[2] for args in requests}), count)
        random.shuffle(requests)
        semaphore = DeferredSemaphore(50)

        async def answer(args: list[Any]) -> None:
            message, _, callback_id, _ = args
            n = message["args"]["n"]
            reply = await self.post(
                {"args": {"square": n * n}, "callbackId": callback_id, "sessionId": sid}
            )
            self.assertEqual(reply.status, 204)

        await gatherResults(
            [
                semaphore.run(lambda a=args: Deferred.fromCoroutine(answer(a)))
                for args in requests
            ]
        )
        results = await gatherResults(deferreds)  # type: ignore[arg-type]
        self.assertEqual(results, [{"square": n * n} for n in range(count)])
        self.assertEqual(len(self.endpoint.calls), 0)

    async def test_session_killed_mid_request(self) -> None:
        """
        A client that drops its stream while server requests are pending:
        every request fails with L{SessionClosed}, and the endpoint keeps no
        call, client subscription or server subscription of that session.
        """
        stream = await self.open_stream()
        sid = stream.session_id
        # The server subscribes to a client route (answered) ...
        updates: list[Any] = []
        subscribed = self.endpoint.subscribe("sensor", updates.append, session_id=sid)
        assert isinstance(subscribed, Deferred)
        _, _, callback_id, _ = await stream.next_run_request()
        await self.post({"args": 1, "callbackId": callback_id, "sessionId": sid})
        self.assertEqual(await subscribed, 1)
        # ... and the client to a server route.
        reply = await self.post(
            {"route": "subscribeSSE", "args": ["add", "/sse", None, None, None, sid]}
        )
        self.assertEqual(reply.status, 200)
        self.assertIn((sid, "sensor"), self.endpoint.client_calls._subscriptions)
        self.assertIn(sid, self.endpoint.observers._owned)
        owned = self.backend.graph.routes["add"].owned
        self.assertEqual([len(subs) for subs in owned.values()], [1])

        # The client dies on reading the third of three requests (the
        # subscribeSSE above was the first runRequest it read).
        stream.hang_up_when = lambda messages: len(stream.run_requests()) >= 4
        pending = [self.endpoint.run("work", n, session_id=sid) for n in range(3)]
        for deferred in pending:
            await self.assertFailure(deferred, SessionClosed)  # type: ignore[arg-type]
        await self.assertFailure(stream.done, _HangUp)
        self.assertNotIn(sid, self.endpoint.sessions)
        self.assertEqual(len(self.endpoint.calls), 0)
        self.assertEqual(self.endpoint.calls.pending_for(sid), 0)
        self.assertEqual(
            [key for key in self.endpoint.client_calls._subscriptions if key[0] == sid],
            [],
        )
        self.assertNotIn(sid, self.endpoint.observers._owned)
        self.assertEqual(self.backend.graph.routes["add"].owned, {})
        late = await self.post({"args": 2, "callbackId": "sensor", "sessionId": sid})
        self.assertError(late, 404, "no_session")
        self.assertEqual(updates, [])
