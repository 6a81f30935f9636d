"""
Tests for what enters an endpoint, tried as an attacker would, over real
sockets on 127.0.0.1: JSON that a browser could not read back, methods the
endpoint does not serve, and channel names the wire cannot carry.  Every
refusal is PROTOCOL.md's JSON error, never an HTML page or a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from txgraphsse import SSEBackend, SSEClient

from .test_integration import RawHTTP, _RealSocketCase, dechunk


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
