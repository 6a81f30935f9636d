"""
Tests for quick requests (L{txgraphsse._quick}): the plainest back-channel
C{POST}s and stream C{GET}s, read by an L{SSESite}'s channel and answered
without a Twisted C{Request}.  Over real sockets on 127.0.0.1, each is
answered as the ordinary path answers it; what is not plain goes the
ordinary way, on the same connection; pipelined requests are answered in
order; deadlines and C{Connection: close} hold; a quick stream is counted,
timed and ended as an ordinary one.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import (
    CORSPolicy,
    Limits,
    SSEBackend,
    SSEEndpoint,
    SSESite,
)
from txgraphsse._auth import CallableAuthorizer
from txgraphsse._inbound import GuardedRequest
from txgraphsse._quick import parse_head, quick_resource
from txgraphsse.api import ServerAPIResource

from .test_integration import RawHTTP, _clock, _reactor, _RealSocketCase, dechunk


class _CountedRequest(GuardedRequest):
    """
    A Twisted request that counts itself: a quick request makes none.
    """

    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _CountedRequest.made += 1
        super().__init__(*args, **kwargs)


def responses(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """
    The responses in C{data}, one after another: status line, headers
    (lower-case names, the last of each) and body (by C{Content-Length}, or
    chunked).
    """
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data
        status, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            body, data = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            body, _ = dechunk(rest)
            data = rest[rest.index(b"0\r\n\r\n") + 5 :]
        else:
            body, data = rest, b""
        found.append((status, headers, body))
    return found


def post(body: bytes, *headers: bytes, path: bytes = b"/sse") -> bytes:
    """
    A C{POST} of C{body} with C{Content-Length} and C{headers} (by default
    C{Content-Type: application/json}).
    """
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines.extend(headers or (b"Content-Type: application/json",))
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class QuickCase(_RealSocketCase):
    """
    An endpoint served by an L{SSESite} whose Twisted requests are counted.
    """

    def setUp(self) -> None:
        super().setUp()
        _CountedRequest.made = 0

    def quick_site(
        self,
        limits: Limits | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> tuple[SSEEndpoint, str]:
        chosen = limits or Limits()
        endpoint, plain = self.endpoint_site(limits=chosen, **options)
        self.site = SSESite(
            plain.resource,
            limits=chosen,
            reactor=_reactor(),
            requestFactory=_CountedRequest,
            timeout=timeout,
        )
        return endpoint, self.listen(self.site)

    async def exchange(self, url: str, data: bytes, count: int) -> list[Any]:
        """
        Send C{data} on one connection; the first C{count} responses.
        """
        raw = await self.raw(url, data)
        await raw.until(lambda: len(_complete(raw)) >= count)
        return _complete(raw)[:count]


def _complete(raw: RawHTTP) -> list[Any]:
    try:
        return responses(bytes(raw.data))
    except (AssertionError, ValueError):
        return []


#: Requests whose answers the two paths must agree on.
_SAME = [
    post(b'{"route":"echo","args":[1,"two"]}'),
    post(b'{"route":"nowhere"}'),
    post(b'{"route":"echo","args":[NaN]}'),
    post(b"{not json"),
    post(b'[{"route":"echo","args":1},{"route":"nowhere"}]'),
    post(b'{"route":"echo"}', b"Content-Type: text/plain"),
    post(
        b'{"route":"echo","args":1}', b"Content-Type: application/json; charset=utf-8"
    ),
    post(
        b'{"route":"ping"}',
        b"Content-Type: application/json",
        b"X-GraphSSE-Session: made-up",
    ),
]


class QuickAnswerTests(QuickCase):
    """
    Quick requests are answered as the ordinary path answers them.
    """

    async def test_same_answers(self) -> None:
        """
        For calls, errors, batches and refusals, a quick request gets the
        status, content type and body the ordinary path gives, and no
        Twisted request is made for any of them.
        """
        _, quick = self.quick_site()
        _, plain_site = self.endpoint_site()
        plain = self.listen(plain_site)
        for request in _SAME:
            made = _CountedRequest.made
            ((status, headers, body),) = await self.exchange(quick, request, 1)
            ((status_, headers_, body_),) = await self.exchange(plain, request, 1)
            self.assertEqual(status, status_, request)
            self.assertEqual(
                headers[b"content-type"], headers_[b"content-type"], request
            )
            self.assertEqual(json.loads(body), json.loads(body_), request)
            self.assertIn(b"date", headers)
            self.assertEqual(_CountedRequest.made, made, request)

    async def test_pipelined_in_order(self) -> None:
        """
        Three requests in one send, the first to a route that answers
        later: the answers come in the order of the requests.
        """
        endpoint, url = self.quick_site()
        held: list[Deferred[str]] = []

        def later() -> Deferred[str]:
            held.append(Deferred())
            return held[-1]

        endpoint.graph.add_route("later", later)
        raw = await self.raw(
            url,
            post(b'{"route":"later"}')
            + post(b'{"route":"echo","args":2}')
            + post(b'{"route":"echo","args":3}'),
        )
        await deferLater(_reactor(), 0.05, lambda: None)
        self.assertEqual(bytes(raw.data), b"")
        held[0].callback("first")
        await raw.until(lambda: len(_complete(raw)) == 3)
        bodies = [json.loads(body)["args"] for _, _, body in _complete(raw)]
        self.assertEqual(bodies, ["first", 2, 3])
        self.assertEqual(_CountedRequest.made, 0)

    async def test_trickled_request(self) -> None:
        """
        A quick request sent a few bytes at a time, within the deadlines,
        is still answered, and still quick.
        """
        _, url = self.quick_site()
        data = post(b'{"route":"echo","args":"slow"}')
        raw = await self.raw(url, b"")
        assert raw.transport is not None
        for start in range(0, len(data), 7):
            raw.transport.write(data[start : start + 7])
            await deferLater(_reactor(), 0.002, lambda: None)
        await raw.until(lambda: len(_complete(raw)) == 1)
        ((status, _, body),) = _complete(raw)
        self.assertEqual(
            (status, json.loads(body)), (b"HTTP/1.1 200 OK", {"args": "slow"})
        )
        self.assertEqual(_CountedRequest.made, 0)

    async def test_trickled_past_the_deadline(self) -> None:
        """
        A quick request's head that is not whole within C{header_timeout},
        or its body within C{body_timeout}, is cut with C{408}.
        """
        _, url = self.quick_site(Limits(header_timeout=0.2, body_timeout=0.2))
        for data in (
            b"POST /sse HTTP/1.1\r\nHost: x\r\n",
            post(b'{"route":"ping"}')[:-3],
        ):
            raw = await self.raw(url, data)
            await raw.until_lost()
            status, _, body = raw.head()
            self.assertEqual(status, b"HTTP/1.1 408 Request Timeout", data)
            self.assertEqual(json.loads(body)["error"]["code"], "timeout")

    async def test_ordinary_after_quick(self) -> None:
        """
        On one kept-alive connection, a quick call, then a request that is
        not quick (a chunked one) and then a stream: each is answered, the
        chunked one by a Twisted request.
        """
        endpoint, url = self.quick_site()
        chunked = (
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b'19\r\n{"route":"echo","args":5}\r\n0\r\n\r\n'
        )
        answers = await self.exchange(
            url, post(b'{"route":"echo","args":4}') + chunked, 2
        )
        self.assertEqual([json.loads(body)["args"] for _, _, body in answers], [4, 5])
        self.assertEqual(_CountedRequest.made, 1)
        raw = await self.raw(url, post(b'{"route":"ping"}'))
        await raw.until(lambda: len(_complete(raw)) == 1)
        assert raw.transport is not None
        raw.transport.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        await raw.until(lambda: b"setId" in bytes(raw.data))
        self.assertEqual(len(endpoint.sessions), 1)

    async def test_connection_close(self) -> None:
        """
        A quick request with C{Connection: close} is answered, with
        C{Connection: close}, and the connection closes.
        """
        _, url = self.quick_site()
        raw = await self.raw(
            url,
            post(
                b'{"route":"ping"}',
                b"Content-Type: application/json",
                b"Connection: close",
            ),
        )
        await raw.until_lost()
        ((status, headers, _),) = responses(bytes(raw.data))
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"connection"], b"close")

    async def test_lost_while_waiting(self) -> None:
        """
        A client that goes while its quick call waits for its route: the
        route's later result is dropped, and nothing is logged as a
        failure.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        endpoint, url = self.quick_site()
        held: list[Deferred[str]] = []
        endpoint.graph.add_route("later", lambda: held.append(Deferred()) or held[-1])
        raw = await self.raw(url, post(b'{"route":"later"}'))
        await _poll_until(lambda: bool(held))
        assert raw.transport is not None
        raw.transport.loseConnection()
        await raw.until_lost()
        await deferLater(_reactor(), 0.02, lambda: None)
        held[0].callback("too late")
        self.assertEqual([e for e in events if e.get("log_failure")], [])

    async def test_cors(self) -> None:
        """
        A quick request from an allowed origin gets the CORS headers.
        """
        _, url = self.quick_site(cors=CORSPolicy(["https://app.example"]))
        ((_, headers, _),) = await self.exchange(
            url,
            post(
                b'{"route":"ping"}',
                b"Content-Type: application/json",
                b"Origin: https://app.example",
            ),
            1,
        )
        self.assertEqual(
            headers[b"access-control-allow-origin"], b"https://app.example"
        )
        self.assertEqual(_CountedRequest.made, 0)

    async def test_authorizer_gets_a_twisted_request(self) -> None:
        """
        An endpoint with an authorizer of its own is given Twisted's whole
        request: its calls are not quick.
        """
        seen: list[Any] = []

        def authorize(request: Any) -> str:
            seen.append(request.getHeader(b"authorization"))
            return "someone"

        _, url = self.quick_site(authorizer=CallableAuthorizer(authorize))
        ((status, _, _),) = await self.exchange(
            url,
            post(
                b'{"route":"ping"}',
                b"Content-Type: application/json",
                b"Authorization: x",
            ),
            1,
        )
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(seen, [b"x"])
        self.assertEqual(_CountedRequest.made, 1)


def _stream_get(query: bytes = b"", *headers: bytes) -> bytes:
    lines = [b"GET /sse" + query + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines.extend(headers or (b"Accept: text/event-stream",))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _shows(raw: RawHTTP, needle: bytes) -> Any:
    """
    A test of whether C{raw}'s stream has shown C{needle} yet.
    """
    return lambda: needle in _events(raw)


def _events(raw: RawHTTP) -> bytes:
    """
    The stream's payload so far, chunks undone.
    """
    return dechunk(raw.head()[2])[0]


class QuickStreamTests(QuickCase):
    """
    A stream opened by a quick C{GET} is the stream an ordinary one is.
    """

    async def test_same_stream(self) -> None:
        """
        The head and the events (a replay after C{lastEventId}, the session
        id, then what is published) are those of the ordinary path, and no
        Twisted request is made.
        """
        streams = []
        for quick in (True, False):
            if quick:
                endpoint, url = self.quick_site(channels=["news"], history=10)
            else:
                endpoint, plain = self.endpoint_site(channels=["news"], history=10)
                url = self.listen(plain)
            endpoint.channels["news"].broadcast("one")
            endpoint.channels["news"].broadcast("two")
            raw = await self.raw(url, _stream_get(b"?channels=news&lastEventId=gone"))
            await raw.until(_shows(raw, b"setId"))
            (session,) = endpoint.sessions.values()
            endpoint.channels["news"].broadcast("three")
            await raw.until(_shows(raw, b"three"))
            status, headers, _ = raw.head()
            streams.append(
                (
                    status,
                    {k: headers[k] for k in _STREAM_HEADERS},
                    _without_ids(_events(raw).replace(session.id.encode(), b"ID")),
                    session.channels,
                )
            )
            if quick:
                self.assertEqual(_CountedRequest.made, 0)
        self.assertEqual(streams[0], streams[1])

    async def test_not_counted_as_connecting(self) -> None:
        """
        Once it streams, a quick stream's connection no longer counts as
        one that is coming in: an address capped at one such connection
        opens three streams.
        """
        endpoint, url = self.quick_site(Limits(max_connecting_per_address=1))
        for _ in range(3):
            raw = await self.raw(url, _stream_get())
            await raw.until(_shows(raw, b"setId"))
        self.assertEqual(len(endpoint.sessions), 3)
        self.assertEqual(self.site.gate.count("127.0.0.1"), 0)

    async def test_idle_timeout_spares_it(self) -> None:
        """
        The site's idle timeout does not end a quick stream.
        """
        endpoint, url = self.quick_site(timeout=0.1, keepalive=0)
        raw = await self.raw(url, _stream_get())
        await raw.until(_shows(raw, b"setId"))
        await deferLater(_reactor(), 0.4, lambda: None)
        self.assertTrue(raw.connected)
        self.assertEqual(len(endpoint.sessions), 1)

    async def test_ended_then_kept_alive(self) -> None:
        """
        A stream the server ends is ended with the last chunk; the
        connection stays open and takes the next request, still quick.
        """
        endpoint, url = self.quick_site()
        raw = await self.raw(url, _stream_get())
        await raw.until(_shows(raw, b"setId"))
        (session,) = endpoint.sessions.values()
        session.close()
        await raw.until(lambda: dechunk(raw.head()[2])[1])
        self.assertEqual(endpoint.sessions, {})
        raw.data.clear()
        assert raw.transport is not None
        raw.transport.write(post(b'{"route":"echo","args":9}'))
        await raw.until(lambda: len(_complete(raw)) == 1)
        ((_, _, body),) = _complete(raw)
        self.assertEqual(json.loads(body), {"args": 9})
        self.assertEqual(_CountedRequest.made, 0)

    async def test_client_goes(self) -> None:
        """
        A client that closes its quick stream ends its session.
        """
        endpoint, url = self.quick_site()
        raw = await self.raw(url, _stream_get())
        await raw.until(_shows(raw, b"setId"))
        (session,) = endpoint.sessions.values()
        assert raw.transport is not None
        raw.transport.loseConnection()
        await _poll_until(lambda: not endpoint.sessions)
        self.assertEqual(session.close_reason, "client disconnected")

    async def test_connection_close(self) -> None:
        """
        A stream asked for with C{Connection: close} says so, and its end
        closes the connection.
        """
        endpoint, url = self.quick_site()
        raw = await self.raw(
            url, _stream_get(b"", b"Accept: text/event-stream", b"Connection: close")
        )
        await raw.until(_shows(raw, b"setId"))
        self.assertEqual(raw.head()[1][b"connection"], [b"close"])
        (session,) = endpoint.sessions.values()
        session.close()
        await raw.until_lost()

    async def test_refused_stream_whole(self) -> None:
        """
        A refused quick stream is answered whole, with its length.
        """
        _, url = self.quick_site(Limits(max_sessions=0))
        raw = await self.raw(url, _stream_get())
        await raw.until(lambda: b"unavailable" in raw.head()[2])
        status, headers, body = raw.head()
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"content-length"], [b"%d" % len(body)])
        self.assertNotIn(b"transfer-encoding", headers)

    async def test_connection_callbacks_get_a_twisted_request(self) -> None:
        """
        An endpoint with a connection callback opens its streams through
        Twisted's whole request, which the callback is handed.
        """
        seen: list[Any] = []
        endpoint, url = self.quick_site()
        endpoint.on_connection = lambda session, ep, sid, request: seen.append(
            request.getHeader(b"x-who")
        )
        raw = await self.raw(url, _stream_get(b"", b"X-Who: me"))
        await raw.until(_shows(raw, b"setId"))
        self.assertEqual(seen, [b"me"])
        self.assertEqual(_CountedRequest.made, 1)


def _without_ids(events: bytes) -> bytes:
    return b"\n".join(
        line for line in events.split(b"\n") if not line.startswith(b"id:")
    )


#: The stream headers both paths must send alike.
_STREAM_HEADERS = (
    b"content-type",
    b"cache-control",
    b"x-accel-buffering",
    b"transfer-encoding",
    b"connection",
)


async def _poll_until(predicate: Any) -> None:
    clock = _clock()
    deadline = clock.seconds() + 5
    while not predicate():
        assert clock.seconds() < deadline, "timed out"
        await deferLater(_reactor(), 0.005, lambda: None)


class QuickAPITests(QuickCase):
    """
    The server API's C{POST}s are quick when API keys are all it admits.
    """

    def api_site(self, authorizer: Any = None) -> tuple[SSEEndpoint, str]:
        endpoint, url = self.quick_site(history=10)
        root = self.site.resource
        root.putChild(b"api", ServerAPIResource(endpoint, ["k"], authorizer))
        return endpoint, url

    async def test_publish(self) -> None:
        """
        C{POST /api/publish} with a key is answered on the quick path as on
        the ordinary one: C{200} with the event's id, which the endpoint's
        stream gets; a wrong key gets the same C{401}, a wrong path the
        same C{404}.  No Twisted request is made for any of them.
        """
        endpoint, url = self.api_site()
        plain = Resource()
        plain.putChild(b"sse", endpoint.resource)
        plain.putChild(b"api", ServerAPIResource(endpoint, ["k"]))
        plain_url = self.listen(Site(plain))
        stream = await self.open_stream(url + "/sse")
        body = b'{"channel":"message","data":{"n":1}}'
        cases = [
            (b"Authorization: apikey k", b"/api/publish"),
            (b"Authorization: apikey wrong", b"/api/publish"),
            (b"Authorization: apikey k", b"/api/nowhere"),
        ]
        for key, path in cases:
            request = post(body, b"Content-Type: application/json", key, path=path)
            made = _CountedRequest.made
            ((status, headers, answer),) = await self.exchange(url, request, 1)
            self.assertEqual(_CountedRequest.made, made, path)
            ((status_, headers_, answer_),) = await self.exchange(plain_url, request, 1)
            self.assertEqual(status, status_, (key, path))
            self.assertEqual(headers[b"content-type"], headers_[b"content-type"])
            self.assertEqual(
                headers.get(b"www-authenticate"), headers_.get(b"www-authenticate")
            )
            if status == b"HTTP/1.1 200 OK":
                self.assertEqual(json.loads(answer).keys(), {"id"})
            else:
                self.assertEqual(json.loads(answer), json.loads(answer_))

        def published() -> list[Any]:
            return [
                json.loads(e.data)
                for e in stream.events
                if e.type == "message" and '"setId"' not in e.data
            ]

        await stream.until(lambda: len(published()) >= 2)
        # One publish through each path: each reached the stream.
        self.assertEqual(published(), [{"n": 1}, {"n": 1}])

    async def test_token_authorizer_gets_a_twisted_request(self) -> None:
        """
        With a bearer token's authorizer, which may read any of the request,
        the API's C{POST}s go the ordinary way.
        """
        _, url = self.api_site(CallableAuthorizer(lambda request: {"sub": "x"}))
        request = post(
            b'{"channel":"message","data":1}',
            b"Content-Type: application/json",
            b"Authorization: apikey k",
            path=b"/api/publish",
        )
        made = _CountedRequest.made
        ((status, _, _),) = await self.exchange(url, request, 1)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(_CountedRequest.made, made + 1)


class ParseHeadTests(SynchronousTestCase):
    """
    Which heads are quick ones.
    """

    def test_plain_post(self) -> None:
        head = parse_head(
            b"POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 12"
        )
        assert head is not None
        self.assertEqual((head.path, head.length), (b"/a/b", 12))
        self.assertEqual(head.headers[b"content-type"], b"application/json")

    def test_not_quick(self) -> None:
        """
        Other methods, a C{GET} with a body, HTTP/1.0, a C{POST}'s query,
        escapes, no or a bad length, chunked, C{Expect}, repeated, folded
        or spaced headers, and no C{Host} go the ordinary way.
        """
        base = b"Host: x\r\nContent-Length: 2"
        for head in (
            b"GET /sse HTTP/1.1\r\n" + base,
            b"POST /sse HTTP/1.0\r\n" + base,
            b"POST /sse?x=1 HTTP/1.1\r\n" + base,
            b"POST /s%73e HTTP/1.1\r\n" + base,
            b"POST sse HTTP/1.1\r\n" + base,
            b"POST /sse HTTP/1.1\r\nHost: x",
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Length: -2",
            b"POST /sse HTTP/1.1\r\n" + base + b"\r\nTransfer-Encoding: chunked",
            b"POST /sse HTTP/1.1\r\n" + base + b"\r\nExpect: 100-continue",
            b"POST /sse HTTP/1.1\r\n" + base + b"\r\nContent-Length: 2",
            b"POST /sse HTTP/1.1\r\n" + base + b"\r\n folded",
            b"POST /sse HTTP/1.1\r\n" + base + b"\r\nX-A : b",
            b"POST /sse HTTP/1.1\r\nContent-Length: 2",
            b"POST  /sse HTTP/1.1\r\n" + base,
            b"PUT /sse HTTP/1.1\r\n" + base,
            b"HEAD /sse HTTP/1.1\r\nHost: x",
            b"GET /s%73e?a=1 HTTP/1.1\r\nHost: x",
        ):
            self.assertIsNone(parse_head(head), head)

    def test_plain_get(self) -> None:
        """
        A stream's C{GET} is quick with a query (kept apart from the path)
        and no body.
        """
        head = parse_head(b"GET /sse?channels=a%2Cb HTTP/1.1\r\nHost: x")
        assert head is not None
        self.assertEqual(
            (head.method, head.path, head.query, head.uri, head.length),
            (b"GET", b"/sse", b"channels=a%2Cb", b"/sse?channels=a%2Cb", 0),
        )


class QuickResourceTests(SynchronousTestCase):
    """
    Which resources a quick request may reach.
    """

    def test_found_through_children(self) -> None:
        endpoint = SSEBackend(_clock()).setup_sse("/api/sse")
        root, api = Resource(), Resource()
        root.putChild(b"api", api)
        api.putChild(b"sse", endpoint.resource)
        self.assertEqual(quick_resource(root, b"/api/sse"), (endpoint.resource, []))
        self.assertEqual(
            quick_resource(root, b"/api/sse", b"GET"), (endpoint.resource, [])
        )
        self.assertIsNone(quick_resource(root, b"/api/sse/x"))
        self.assertIsNone(quick_resource(root, b"/api"))
        self.assertIsNone(quick_resource(root, b"/other"))

    def test_not_through_routing_of_its_own(self) -> None:
        """
        Below a resource that finds its children its own way, or a leaf,
        nothing is quick: Twisted's traversal decides there.
        """
        endpoint = SSEBackend(_clock()).setup_sse("/sse")

        class Routing(Resource):
            def getChildWithDefault(self, path: bytes, request: Any) -> Any:
                return Resource()

        routing = Routing()
        routing.putChild(b"sse", endpoint.resource)
        self.assertIsNone(quick_resource(routing, b"/sse"))
        leaf = Resource()
        leaf.isLeaf = True
        leaf.putChild(b"sse", endpoint.resource)
        self.assertIsNone(quick_resource(leaf, b"/sse"))
        self.assertIsNone(quick_resource(Site(Resource()), b"/sse"))
