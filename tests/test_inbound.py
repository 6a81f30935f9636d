"""
Tests for what enters an endpoint, tried as an attacker would, over real
sockets on 127.0.0.1: JSON that a browser could not read back, methods the
endpoint does not serve, and channel names the wire cannot carry.  Every
refusal is PROTOCOL.md's JSON error, never an HTML page or a traceback.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from txgraphsse import (
    EventStreamParser,
    Limits,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
    SSESite,
)
from txgraphsse import _messages as messages
from txgraphsse._inbound import GuardedChannel

from .test_integration import RawHTTP, _reactor, _RealSocketCase, dechunk


def _error(raw: RawHTTP) -> tuple[bytes, dict[bytes, list[bytes]], Any]:
    """
    The status line, headers and decoded JSON error of a finished answer.
    """
    status, headers, body = raw.head()
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        body, _ = dechunk(body)
    return status, headers, json.loads(body)


class StrictJSONTests(_RealSocketCase):
    """
    NaN, Infinity and numbers past a double's range are not JSON: refused
    on the way in, never written on the way out.
    """

    async def test_constants_refused(self) -> None:
        """
        A body with C{NaN}, C{Infinity}, C{-Infinity} or C{1e999} is
        refused with C{400 bad_json}, and no route runs.
        """
        endpoint, site = self.endpoint_site()
        calls: list[Any] = []
        endpoint.graph.add_route("keep", lambda *args: calls.append(args))
        url = self.listen(site)
        for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"):
            body = b'{"route":"keep","args":[' + literal + b"]}"
            response = await self.http.post(
                url + "/sse",
                data=body,
                headers={b"content-type": [b"application/json"]},
            )
            answer = json.loads(await treq.content(response))
            self.assertEqual(response.code, 400, literal)
            self.assertEqual(answer["error"]["code"], "bad_json", literal)
        self.assertEqual(calls, [])
        # Large numbers a double holds are still numbers.
        code, answer = await self.post(url + "/sse", {"route": "echo", "args": 1e308})
        self.assertEqual((code, answer), (200, {"args": 1e308}))

    async def test_callback_id_nan_refused(self) -> None:
        """
        A C{runRequest} whose C{callbackId} is C{NaN} is refused: it never
        reaches the stream, where a browser's C{JSON.parse} would fail on
        it.
        """
        endpoint, site = self.endpoint_site()
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        sid = await stream.session_id()
        body = b'{"route":"runRequest","args":[{"route":"ping"},"/sse",NaN,"' + (
            sid.encode() + b'"]}'
        )
        response = await self.http.post(
            url + "/sse", data=body, headers={b"content-type": [b"application/json"]}
        )
        self.assertEqual(response.code, 400)
        endpoint.send("marker", session_id=sid)
        await stream.until(lambda: stream.events[-1].data == "marker")
        self.assertNotIn(b"NaN", bytes(stream.raw))

    async def test_result_that_is_not_json(self) -> None:
        """
        A route that returns C{NaN} gets the caller C{500 route_failed}
        saying why; the stream is not broken by it.
        """
        endpoint, site = self.endpoint_site()
        endpoint.graph.add_route("nan", lambda: float("nan"))
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        sid = await stream.session_id()
        for body in (
            {"route": "nan"},
            {"route": "runRequest", "args": [{"route": "nan"}, "/sse", "c1", sid]},
        ):
            code, answer = await self.post(url + "/sse", body)
            self.assertEqual(code, 500)
            self.assertEqual(answer["error"]["code"], "route_failed")
            self.assertIn("not JSON", answer["error"]["message"])
        endpoint.send("still fine", session_id=sid)
        await stream.until(lambda: stream.events[-1].data == "still fine")

    def test_send_refuses_nan(self) -> None:
        """
        The application is told at once when it sends what is not JSON.
        """
        endpoint = SSEBackend().setup_sse("/nan", keepalive=0)
        self.addCleanup(endpoint.terminate)
        with self.assertRaises(ValueError):
            endpoint.send({"x": float("inf")})


class MethodTests(_RealSocketCase):
    """
    Methods the endpoint does not serve.
    """

    async def test_other_methods_get_405_json(self) -> None:
        """
        PUT, DELETE, PATCH and TRACE get C{405 method_not_allowed} as JSON,
        with C{Allow}, and nothing is logged as a failure.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, site = self.endpoint_site()
        url = self.listen(site)
        for method in (b"PUT", b"DELETE", b"PATCH", b"TRACE"):
            raw = await self.raw(
                url,
                method + b" /sse HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            await raw.until_lost()
            status, headers, answer = _error(raw)
            self.assertEqual(status, b"HTTP/1.1 405 Method Not Allowed", method)
            self.assertEqual(headers[b"allow"], [b"GET, HEAD, POST, OPTIONS"])
            self.assertEqual(answer["error"]["code"], "method_not_allowed")
            self.assertTrue(headers[b"content-type"][0].startswith(b"application/json"))
        self.assertEqual([e for e in events if e.get("log_failure")], [])


class ChannelNameTests(_RealSocketCase):
    """
    Dynamic channel names the wire cannot carry.
    """

    async def test_bad_dynamic_names_refused(self) -> None:
        """
        With dynamic channels, a name holding CR or LF is refused with
        C{400 bad_channel} as JSON, with no traceback logged; no channel is
        made, and a good name still opens a stream.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        opened: list[SSEClient] = []
        endpoint, site = self.endpoint_site(
            dynamic_channels=True, on_connection=lambda c, *_: opened.append(c)
        )
        url = self.listen(site)
        before = set(endpoint.channels)
        for name in (b"a%0D%0Ab", b"a%0Ab", b"a%0Db"):
            raw = await self.raw(
                url,
                b"GET /sse?channels=" + name + b" HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            await raw.until_lost()
            status, _, answer = _error(raw)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", name)
            self.assertEqual(answer["error"]["code"], "bad_channel")
        self.assertEqual(set(endpoint.channels), before)
        self.assertEqual(opened, [])
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        stream = await self.open_stream(url + "/sse?channels=fine")
        await stream.session_id()
        self.assertIn("fine", endpoint.channels)


class _CountingChannel(GuardedChannel):
    """
    A guarded channel that counts the bytes it was handed.
    """

    received = 0

    def dataReceived(self, data: bytes) -> None:
        type(self).received += len(data)
        super().dataReceived(data)


class _CountingSite(SSESite):
    protocol = staticmethod(lambda factory=None: _CountingChannel())  # type: ignore[assignment]


class GuardedSiteCase(_RealSocketCase):
    """
    An endpoint served by an L{SSESite} with small limits.
    """

    def guarded(
        self, site_class: type[SSESite] = SSESite, **limits: Any
    ) -> tuple[SSEEndpoint, str]:
        chosen = Limits(**limits)
        endpoint, plain = self.endpoint_site(limits=chosen)
        site = site_class(plain.resource, limits=chosen, reactor=_reactor())
        return endpoint, self.listen(site)

    async def connect(self, url: str, bind: str = "127.0.0.1") -> RawHTTP:
        """
        A plain TCP connection to C{url}'s port from address C{bind}.
        """
        number = int(url.rsplit(":", 1)[1])
        endpoint = TCP4ClientEndpoint(
            _reactor(), "127.0.0.1", number, timeout=5, bindAddress=(bind, 0)
        )
        protocol = RawHTTP()
        await connectProtocol(endpoint, protocol)
        self._raw.append(protocol)
        return protocol


class BodyLimitTests(GuardedSiteCase):
    """
    Bodies are bounded as they arrive.
    """

    def setUp(self) -> None:
        super().setUp()
        self.spooled: list[object] = []
        real = tempfile.TemporaryFile

        def spool(*args: Any, **kwargs: Any) -> Any:
            self.spooled.append(args)
            return real(*args, **kwargs)

        self.patch(tempfile, "TemporaryFile", spool)

    async def test_declared_length_refused_before_the_body(self) -> None:
        """
        A declared C{Content-Length} of 64 MiB over a 64 KiB limit is
        refused with C{413} as its head ends, whatever the client goes on
        sending: the server reads at most the limit plus a socket buffer of
        it, and opens no temporary file.
        """
        _CountingChannel.received = 0
        _, url = self.guarded(_CountingSite, max_body=65536)
        raw = await self.connect(url)
        assert raw.transport is not None
        raw.transport.write(
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 67108864\r\n\r\n"
        )
        block = b"x" * 65536
        for _ in range(1024):
            if raw.lost.called:
                break
            raw.transport.write(block)
            await deferLater(_reactor(), 0, lambda: None)
        await raw.until_lost()
        status, _, answer = _error(raw)
        self.assertEqual(status, b"HTTP/1.1 413 Content Too Large")
        self.assertEqual(answer["error"]["code"], "too_large")
        self.assertLess(_CountingChannel.received, 65536 + 4 * 1024 * 1024)
        self.assertEqual(self.spooled, [])

    async def test_chunked_body_cut_at_the_limit(self) -> None:
        """
        A chunked body is counted as it arrives and refused with C{413} once
        it passes the limit, without a temporary file.
        """
        _, url = self.guarded(max_body=4096)
        raw = await self.connect(url)
        assert raw.transport is not None
        raw.transport.write(
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(64):
            if raw.lost.called:
                break
            raw.transport.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            await deferLater(_reactor(), 0.01, lambda: None)
        await raw.until_lost()
        status, _, answer = _error(raw)
        self.assertEqual(status, b"HTTP/1.1 413 Content Too Large")
        self.assertEqual(answer["error"]["code"], "too_large")
        self.assertEqual(self.spooled, [])

    async def test_bodies_within_the_limit_work(self) -> None:
        """
        A call within the limits is answered as on any site, chunked or not,
        with no temporary file even for a body Twisted would have spooled.
        """
        _, url = self.guarded(max_body=200_000)
        code, answer = await self.post(
            url + "/sse", {"route": "echo", "args": "x" * 150_000}
        )
        self.assertEqual(code, 200)
        self.assertEqual(len(answer["args"]), 150_000)
        self.assertEqual(self.spooled, [])


class HeadLimitTests(GuardedSiteCase):
    """
    Request lines and headers over their limits get 414 and 431 as JSON.
    """

    async def _send(self, url: str, request: bytes) -> tuple[bytes, Any]:
        raw = await self.connect(url)
        assert raw.transport is not None
        raw.transport.write(request)
        await raw.until_lost()
        status, _, answer = _error(raw)
        return status, answer

    async def test_long_uri(self) -> None:
        """
        A 70 kB request line gets C{414 uri_too_long}.
        """
        _, url = self.guarded()
        status, answer = await self._send(
            url, b"GET /sse?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(status, b"HTTP/1.1 414 URI Too Long")
        self.assertEqual(answer["error"]["code"], "uri_too_long")

    async def test_long_headers(self) -> None:
        """
        70 kB of headers, in one line or in many, get C{431
        headers_too_large}.
        """
        _, url = self.guarded()
        for headers in (
            b"X-Big: " + b"b" * 70_000 + b"\r\n",
            b"".join(b"X-%d: %s\r\n" % (i, b"c" * 60) for i in range(1000)),
        ):
            status, answer = await self._send(
                url, b"GET /sse HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
            )
            self.assertEqual(status, b"HTTP/1.1 431 Request Header Fields Too Large")
            self.assertEqual(answer["error"]["code"], "headers_too_large")


class DeadlineTests(GuardedSiteCase):
    """
    Heads and bodies have deadlines, not inactivity timers; streams have
    neither.
    """

    async def _trickle(self, raw: RawHTTP, data: bytes, every: float) -> float:
        """
        Send C{data} a byte at a time, C{every} seconds apart, until the
        server closes; return how long it took.
        """
        assert raw.transport is not None
        clock = _reactor()
        start = clock.seconds()
        for byte in data:
            if raw.lost.called:
                break
            raw.transport.write(bytes([byte]))
            await deferLater(clock, every, lambda: None)
        await raw.until_lost()
        return float(clock.seconds() - start)

    async def test_trickled_head_cut(self) -> None:
        """
        A head trickled a byte every 0.2 s is cut at its 1 s deadline with
        C{408}, though it never stops sending.
        """
        _, url = self.guarded(header_timeout=1.0)
        raw = await self.connect(url)
        took = await self._trickle(raw, b"GET /sse HTTP/1.1\r\nHost: x\r\n" * 10, 0.2)
        status, _, answer = _error(raw)
        self.assertEqual(status, b"HTTP/1.1 408 Request Timeout")
        self.assertEqual(answer["error"]["code"], "timeout")
        self.assertLess(took, 3.0)

    async def test_trickled_body_cut(self) -> None:
        """
        A body trickled a byte every 0.2 s is cut at its 1 s deadline.
        """
        _, url = self.guarded(body_timeout=1.0)
        raw = await self.connect(url)
        assert raw.transport is not None
        raw.transport.write(
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n"
        )
        took = await self._trickle(raw, b" " * 200, 0.2)
        status, _, answer = _error(raw)
        self.assertEqual(status, b"HTTP/1.1 408 Request Timeout")
        self.assertEqual(answer["error"]["code"], "timeout")
        self.assertLess(took, 3.0)

    async def test_streams_untouched(self) -> None:
        """
        A stream outlives both deadlines and still gets events.
        """
        endpoint, url = self.guarded(header_timeout=0.3, body_timeout=0.3)
        stream = await self.open_stream(url + "/sse")
        sid = await stream.session_id()
        await deferLater(_reactor(), 1.0, lambda: None)
        endpoint.send("later", session_id=sid)
        await stream.until(lambda: stream.events[-1].data == "later")
        self.assertFalse(stream.ended)


class ConnectionCapTests(GuardedSiteCase):
    """
    Connections that are not streams are capped per address and in all.
    """

    async def test_per_address_cap(self) -> None:
        """
        With a cap of 3, a fourth idle connection from 127.0.0.1 is refused
        with C{503} and C{Retry-After} at once, while 127.0.0.2 still opens
        a stream; a connection that became a stream no longer counts.
        """
        endpoint, url = self.guarded(max_connecting_per_address=3)
        idle = [await self.connect(url) for _ in range(3)]
        fourth = await self.connect(url)
        await fourth.until_lost()
        status, headers, answer = _error(fourth)
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(answer["error"]["code"], "unavailable")
        self.assertIn(b"retry-after", headers)
        other = await self.connect(url, bind="127.0.0.2")
        assert other.transport is not None
        other.transport.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        await other.until(lambda: b"setId" in bytes(other.data))
        # Streams leave the count: two idle ones close, two streams open,
        # and there is still room for an idle connection.
        for raw in idle[:2]:
            assert raw.transport is not None
            raw.transport.loseConnection()
            await raw.until_lost()
        for _ in range(2):
            stream = await self.open_stream(url + "/sse")
            await stream.session_id()
        extra = await self.connect(url)
        assert extra.transport is not None
        extra.transport.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        await extra.until(lambda: b"setId" in bytes(extra.data))
        self.assertEqual(len(endpoint.sessions), 4)

    async def test_total_cap(self) -> None:
        """
        The cap on all connections refuses a third one from any address.
        """
        _, url = self.guarded(max_connecting=2)
        await self.connect(url)
        await self.connect(url, bind="127.0.0.2")
        third = await self.connect(url, bind="127.0.0.3")
        await third.until_lost()
        status, _, _ = _error(third)
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")


class StreamRefusalTests(GuardedSiteCase):
    """
    A refused stream is answered so that its client comes back later: an
    C{EventSource} gets a short event stream saying why, the project's own
    clients (which accept JSON) the C{503} and its C{Retry-After}.
    """

    def full(self) -> tuple[SSEEndpoint, SSESite, str]:
        limits = Limits(max_sessions=1, retry_after=2)
        endpoint, plain = self.endpoint_site(limits=limits)
        # A fixed share of the retry window, to read the jittered retry.
        endpoint.resource._random = lambda: 0.25  # type: ignore[attr-defined]
        site = SSESite(plain.resource, limits=limits, reactor=_reactor())
        return endpoint, site, self.listen(site)

    async def test_event_source_gets_a_stream_saying_why(self) -> None:
        """
        Past C{max_sessions}, a C{GET} accepting C{text/event-stream} only
        gets C{200 text/event-stream} with a C{retry:} of C{Retry-After} and
        a jittered share more, an C{unavailable} event carrying the JSON
        error, then the end of the body; no session opens, the refusal is
        counted, and its connection still counts as one coming in.
        """
        endpoint, site, url = self.full()
        held = await self.open_stream(url + "/sse")
        await held.session_id()
        raw = await self.connect(url)
        assert raw.transport is not None
        raw.transport.write(
            b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        await raw.until(lambda: b"\r\n\r\n" in bytes(raw.data))
        status, headers, _ = raw.head()
        length = int(headers[b"content-length"][0])
        await raw.until(lambda: len(raw.head()[2]) >= length)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(
            headers[b"content-type"], [b"text/event-stream; charset=utf-8"]
        )
        parser = EventStreamParser()
        events = parser.feed(raw.head()[2])
        self.assertEqual(parser.retry, 2500)
        self.assertEqual([event.type for event in events], ["unavailable"])
        self.assertEqual(json.loads(events[0].data)["error"]["code"], "unavailable")
        self.assertEqual(len(endpoint.sessions), 1)
        self.assertEqual(endpoint.counters.refusals, 1)
        self.assertEqual(site.gate.count("127.0.0.1"), 1)

    async def test_own_clients_get_503(self) -> None:
        """
        A C{GET} that accepts JSON too, as the Python client's does, and a
        C{HEAD}, as the browser client's probe, get C{503} with
        C{Retry-After}.
        """
        _, _, url = self.full()
        held = await self.open_stream(url + "/sse")
        await held.session_id()
        for method, accept in (
            (b"GET", b"text/event-stream, application/json"),
            (b"HEAD", b"text/event-stream"),
        ):
            raw = await self.raw(
                url,
                method
                + b" /sse HTTP/1.1\r\nHost: x\r\nAccept: "
                + accept
                + (b"\r\nConnection: close\r\n\r\n"),
            )
            await raw.until_lost()
            status, headers, _ = raw.head()
            self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable", method)
            self.assertEqual(headers[b"retry-after"], [b"2"], method)
            self.assertTrue(headers[b"content-type"][0].startswith(b"application/json"))


class CallRateTests(GuardedSiteCase):
    """
    Call limits that compose: one address's streams share its bucket, and
    the bucket is taken before the body is parsed.
    """

    async def test_streams_of_one_address_share_its_bucket(self) -> None:
        """
        Fifty streams from one address, each well within its own rate, get
        no more calls through together than the address's burst.
        """
        endpoint, url = self.guarded(
            calls_per_second=1,
            call_burst=5,
            address_calls_per_second=0.001,
            address_call_burst=10,
        )
        sessions = []
        for _ in range(50):
            stream = await self.open_stream(url + "/sse")
            sessions.append(await stream.session_id())
        codes = []
        for sid in sessions:
            response = await self.http.post(
                url + "/sse",
                data=b'{"route":"ping"}',
                headers={
                    b"content-type": [b"application/json"],
                    b"x-graphsse-session": [sid.encode()],
                },
            )
            await treq.content(response)
            codes.append(response.code)
        self.assertEqual(codes.count(200), 10)
        self.assertEqual(codes.count(429), 40)
        self.assertEqual(len(endpoint.sessions), 50)

    async def test_refused_before_parsing(self) -> None:
        """
        Once an address is over its rate, a 1 MB body is refused with
        C{429} without being parsed.
        """
        parsed: list[int] = []
        real = messages.loads

        def loads(raw: Any) -> Any:
            parsed.append(len(raw))
            return real(raw)

        self.patch(messages, "loads", loads)
        _, url = self.guarded(
            max_body=2 << 20, address_calls_per_second=0.001, address_call_burst=1
        )
        code, _ = await self.post(url + "/sse", {"route": "ping"})
        self.assertEqual(code, 200)
        code, answer = await self.post(
            url + "/sse", {"route": "echo", "args": "z" * (1 << 20)}
        )
        self.assertEqual(code, 429)
        self.assertEqual(answer["error"]["code"], "rate_limited")
        self.assertEqual(len(parsed), 1)


class BatchTests(_RealSocketCase):
    """
    A C{POST} body may be an array of messages, answered by an array in the
    same order.
    """

    async def _batch(self, url: str, body: Any, sid: str | None = None) -> Any:
        headers = {b"content-type": [b"application/json"]}
        if sid is not None:
            headers[b"x-graphsse-session"] = [sid.encode()]
        response = await self.http.post(
            url + "/sse", data=json.dumps(body).encode(), headers=headers
        )
        return response.code, json.loads(await treq.content(response))

    async def test_mixed_batch(self) -> None:
        """
        Route calls, a reply to the server's pending call, and messages the
        server refuses, in one body: each gets what it would have got alone,
        in order, and the reply settles the call.
        """
        endpoint, site = self.endpoint_site()

        async def slow(x: int) -> int:
            await deferLater(_reactor(), 0.2, lambda: None)
            return x * 2

        endpoint.graph.add_route("slow", slow)
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        sid = await stream.session_id()
        pending = endpoint.run("clientside", 1, session_id=sid)
        assert isinstance(pending, Deferred)
        await stream.count(2)
        run_request = json.loads(stream.events[1].data)
        callback_id = run_request["args"][2]
        code, answers = await self._batch(
            url,
            [
                {"route": "slow", "args": 21},
                {"route": "echo", "args": 5},
                {"args": "from client", "callbackId": callback_id, "sessionId": sid},
                {"nonsense": True},
                {"route": "nowhere"},
            ],
            sid,
        )
        self.assertEqual(code, 200)
        self.assertEqual(answers[0], {"args": 42})
        self.assertEqual(answers[1], {"args": 5})
        self.assertIsNone(answers[2])
        self.assertEqual(answers[3]["error"]["code"], "bad_message")
        self.assertEqual(answers[4]["error"]["code"], "no_route")
        self.assertEqual(await pending, "from client")

    async def test_batch_bounds(self) -> None:
        """
        An empty batch, or one over C{max_batch}, is refused whole.
        """
        _, site = self.endpoint_site(limits=Limits(max_batch=3))
        url = self.listen(site)
        for body in ([], [{"route": "ping"}] * 4):
            code, answer = await self._batch(url, body)
            self.assertEqual(code, 400)
            self.assertEqual(answer["error"]["code"], "bad_message")
        code, answers = await self._batch(url, [{"route": "ping"}] * 3)
        self.assertEqual((code, answers), (200, [{"args": "pong"}] * 3))

    async def test_each_message_is_a_call(self) -> None:
        """
        Each message of a batch takes a call token: past the session's
        burst, the rest of the batch is refused message by message.
        """
        _, site = self.endpoint_site(
            limits=Limits(calls_per_second=0.001, call_burst=3)
        )
        url = self.listen(site)
        stream = await self.open_stream(url + "/sse")
        sid = await stream.session_id()
        code, answers = await self._batch(url, [{"route": "ping"}] * 5, sid)
        self.assertEqual(code, 200)
        self.assertEqual(answers[:3], [{"args": "pong"}] * 3)
        self.assertEqual(
            [a["error"]["code"] for a in answers[3:]], ["rate_limited"] * 2
        )
