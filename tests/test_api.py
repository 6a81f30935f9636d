"""
Tests for the server API (PROTOCOL.md section 4) over real sockets on
127.0.0.1: publish, call, history, disconnect, its credentials (API keys,
JWTs with the C{graphsse} claims), every refusal in the error table's form,
and its OpenAPI document, held to the real answers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import jwt
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTCP
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from txgraphsse import HistoryPolicy, JWTAuthorizer, Limits, SSEBackend
from txgraphsse.api import ServerAPIResource
from txgraphsse.client import GraphSSEClient

from .test_backchannel import LiveStream, Reply, TrackingSite, _HangUp

SECRET = "s3cret-for-the-api-tests-0123456789abcdef"
KEY = "api-key-0123456789"


def token(**claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


ADMIN = token(sub="ops", graphsse={"admin": True})
PUBLISHER = token(sub="cms", graphsse={"publish": True})
NOBODY = token(sub="ada")


class APICase(TestCase):
    """
    An endpoint at C{/sse} (channels C{news}, with history, and C{chat},
    without) and its API at C{/api}, on a real port; a second endpoint
    with a tight address rate at C{/tight}, its API at C{/tightapi}.
    """

    def setUp(self) -> None:
        self.backend = SSEBackend(reactor=reactor)
        self.endpoint = self.backend.setup_sse(
            "/sse",
            channels=["news", "chat"],
            history=HistoryPolicy(100),
            authorizer=_Anyone(SECRET),
            limits=Limits(max_body=4096),
            request_timeout=5,
        )
        self.endpoint.channels["chat"].history = HistoryPolicy(0)
        self.tight = self.backend.setup_sse(
            "/tight", limits=Limits(calls_per_second=0.001, call_burst=2)
        )
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        root.putChild(b"api", ServerAPIResource(self.endpoint, [KEY, "other-key"]))
        root.putChild(b"tight", self.tight.resource)
        root.putChild(b"tightapi", ServerAPIResource(self.tight, [KEY]))
        self.site = TrackingSite(root)
        tcp: IReactorTCP = reactor
        self.port = tcp.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, False)
        self.streams: list[LiveStream] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))

    async def _clean_up(self) -> None:
        for endpoint in self.backend.endpoints.values():
            endpoint.terminate()
        for stream in self.streams:
            await stream.done.addErrback(lambda f: f.trap(_HangUp))
        await self.pool.closeCachedConnections()
        await self.port.stopListening()
        await self.site.all_closed()

    async def open_stream(
        self, query: str = "", bearer: str | None = None
    ) -> LiveStream:
        headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
        response = await treq.get(
            f"{self.base}/sse{query}", headers=headers, unbuffered=True, pool=self.pool
        )
        self.assertEqual(response.code, 200)
        stream = LiveStream(response)
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        return stream

    async def api(
        self,
        name: str,
        body: Any = None,
        *,
        auth: str | None = f"apikey {KEY}",
        method: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        path: str = "/api",
    ) -> Reply:
        headers = {} if auth is None else {"Authorization": auth}
        if method is None:
            method = "GET" if body is None and raw is None else "POST"
        data = None
        if method == "POST":
            headers["Content-Type"] = content_type
            data = raw if raw is not None else json.dumps(body).encode("utf-8")
        response = await treq.request(
            method,
            f"{self.base}{path}/{name}",
            data=data,
            headers=headers,
            pool=self.pool,
        )
        return Reply(response.code, response.headers, await treq.content(response))

    def assertError(self, reply: Reply, status: int, code: str) -> None:
        self.assertEqual(reply.status, status, reply.body)
        [content_type] = reply.headers.getRawHeaders(b"content-type") or [b""]
        self.assertTrue(content_type.startswith(b"application/json"), content_type)
        body = reply.json()
        self.assertEqual(list(body), ["error"])
        self.assertEqual(body["error"]["code"], code)
        self.assertIsInstance(body["error"]["message"], str)


class _Anyone(JWTAuthorizer):
    """
    Tokens are optional on the streams, and anyone may join any channel.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key, required=False)

    def can_join(self, principal: Any, channel: str) -> bool:
        return True


class PublishTests(APICase):
    async def test_publish_reaches_subscribers(self) -> None:
        """
        C{publish} answers the event's id; a stream on the channel gets the
        event, named after the channel, with that id and the data's JSON.
        """
        stream = await self.open_stream("?channels=news")
        reply = await self.api("publish", {"channel": "news", "data": {"n": 1}})
        self.assertEqual(reply.status, 200, reply.body)
        event_id = reply.json()["id"]
        self.assertIsInstance(event_id, str)
        got = await stream.until_message(lambda m: m == {"n": 1})
        self.assertEqual(got, {"n": 1})
        [event] = [e for e in stream.events if e.type == "news"]
        self.assertEqual(event.last_event_id, event_id)
        self.assertEqual(event.data, '{"n":1}')

    async def test_event_name_and_text(self) -> None:
        """
        C{event} names the event; a string is sent as it is.
        """
        stream = await self.open_stream("?channels=news")
        reply = await self.api(
            "publish", {"channel": "news", "data": "plain text", "event": "alert"}
        )
        self.assertEqual(reply.status, 200, reply.body)
        await stream.until_message(lambda m: m == "plain text")
        [event] = [e for e in stream.events if e.data == "plain text"]
        self.assertEqual(event.type, "alert")

    async def test_many_channels_and_no_history(self) -> None:
        """
        C{channels} publishes one event on each, answering each one's id:
        none for a channel without history.
        """
        stream = await self.open_stream("?channels=news,chat")
        reply = await self.api(
            "publish", {"channels": ["news", "chat"], "data": "both"}
        )
        self.assertEqual(reply.status, 200, reply.body)
        ids = reply.json()["ids"]
        self.assertEqual(sorted(ids), ["chat", "news"])
        self.assertIsInstance(ids["news"], str)
        self.assertIsNone(ids["chat"])
        await stream.until(
            lambda messages: messages if messages.count("both") == 2 else None
        )

    async def test_bad_publishes(self) -> None:
        """
        Each bad publish gets its JSON error, and publishes nothing.
        """
        before = self.endpoint.counters.events_published
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"channel": "nowhere", "data": 1}, 404, "no_channel"),
            ({"channel": "news"}, 400, "bad_message"),
            ({"data": 1}, 400, "bad_message"),
            ({"channel": "news", "data": 1, "event": "a\nb"}, 400, "bad_message"),
            ({"channels": [], "data": 1}, 400, "bad_message"),
            ({"channels": "news", "data": 1}, 400, "bad_message"),
        ]
        for body, status, code in cases:
            self.assertError(await self.api("publish", body), status, code)
        self.assertError(await self.api("publish", [1, 2]), 400, "bad_message")
        self.assertError(
            await self.api("publish", raw=b'{"channel":"news","data":NaN}'),
            400,
            "bad_json",
        )
        self.assertError(await self.api("publish", raw=b"{"), 400, "bad_json")
        self.assertError(
            await self.api(
                "publish", {"channel": "news", "data": 1}, content_type="text/plain"
            ),
            415,
            "bad_content_type",
        )
        self.assertError(
            await self.api("publish", {"channel": "news", "data": "x" * 5000}),
            413,
            "too_large",
        )
        self.assertEqual(self.endpoint.counters.events_published, before)


class CredentialTests(APICase):
    async def test_keys_in_both_schemes(self) -> None:
        """
        A key is taken as C{apikey KEY} or C{Bearer KEY}; every key works.
        """
        for auth in [f"apikey {KEY}", f"Bearer {KEY}", "apikey other-key"]:
            reply = await self.api("publish", {"channel": "news", "data": 1}, auth=auth)
            self.assertEqual(reply.status, 200, (auth, reply.body))

    async def test_missing_or_wrong(self) -> None:
        """
        No credentials, a wrong key, or a bad token: C{401 unauthorized},
        with C{WWW-Authenticate}.
        """
        for auth in [
            None,
            "apikey nope",
            f"apikey {KEY}x",
            "Bearer not.a.jwt",
            "Basic abc",
        ]:
            reply = await self.api("publish", {"channel": "news", "data": 1}, auth=auth)
            self.assertError(reply, 401, "unauthorized")
            self.assertTrue(reply.headers.getRawHeaders(b"www-authenticate"))
        expired = token(sub="ops", graphsse={"admin": True}, exp=int(time.time()) - 10)
        reply = await self.api(
            "publish", {"channel": "news", "data": 1}, auth=f"Bearer {expired}"
        )
        self.assertError(reply, 401, "unauthorized")

    async def test_token_claims(self) -> None:
        """
        An admin's token may do everything; a publisher's may publish and
        read history only; a token without the claims, nothing.
        """
        body = {"channel": "news", "data": 1}
        admin, publisher, nobody = (f"Bearer {t}" for t in (ADMIN, PUBLISHER, NOBODY))
        self.assertEqual((await self.api("publish", body, auth=admin)).status, 200)
        self.assertEqual((await self.api("publish", body, auth=publisher)).status, 200)
        self.assertEqual(
            (await self.api("history?channel=news", auth=publisher)).status, 200
        )
        self.assertError(
            await self.api("disconnect", {"session": "x"}, auth=publisher),
            403,
            "forbidden",
        )
        self.assertError(
            await self.api("call", {"session": "x", "route": "r"}, auth=publisher),
            403,
            "forbidden",
        )
        self.assertError(await self.api("publish", body, auth=nobody), 403, "forbidden")
        reply = await self.api("disconnect", {"session": "x" * 22}, auth=admin)
        self.assertEqual(reply.status, 200, reply.body)

    async def test_rate_limited_before_the_body(self) -> None:
        """
        The caller's address bucket is charged as the back channel's is: past
        its burst, C{429}, even for a body that would be refused.
        """
        body = {"channel": "message", "data": 1}
        for _ in range(2):
            self.assertEqual(
                (await self.api("publish", body, path="/tightapi")).status, 200
            )
        reply = await self.api("publish", raw=b"{", path="/tightapi")
        self.assertError(reply, 429, "rate_limited")
        self.assertTrue(reply.headers.getRawHeaders(b"retry-after"))

    async def test_methods_and_paths(self) -> None:
        """
        A wrong method is C{405} with C{Allow}; an unknown call C{404}.
        """
        reply = await self.api("publish", method="GET")
        self.assertError(reply, 405, "method_not_allowed")
        self.assertEqual(reply.headers.getRawHeaders(b"allow"), [b"POST"])
        reply = await self.api("history", method="DELETE")
        self.assertError(reply, 405, "method_not_allowed")
        self.assertEqual(reply.headers.getRawHeaders(b"allow"), [b"GET"])
        self.assertError(await self.api("nothing", {"a": 1}), 404, "no_route")

    def test_needs_credentials(self) -> None:
        """
        An API that no one could use is refused when made.
        """
        with self.assertRaises(ValueError):
            ServerAPIResource(self.tight)
        with self.assertRaises(ValueError):
            ServerAPIResource(self.tight, [""])


class CallTests(APICase):
    async def connect(self) -> tuple[GraphSSEClient, str]:
        client = GraphSSEClient(reactor)
        self.addCleanup(client.terminate)

        def broken() -> None:
            raise ValueError("the client's own failure")

        client.add_route("double", lambda x: 2 * x)
        client.add_route("broken", broken)
        client.add_route("never", lambda: Deferred())
        connection = await client.connect(f"{self.base}/sse")
        assert connection.session_id is not None
        return client, connection.session_id

    async def test_call_answered_by_the_python_client(self) -> None:
        """
        C{call} runs the client's route on its session and answers its
        result.
        """
        _, sid = await self.connect()
        reply = await self.api(
            "call", {"session": sid, "route": "double", "args": [21]}
        )
        self.assertEqual((reply.status, reply.json()), (200, {"result": 42}))

    async def test_call_errors(self) -> None:
        """
        The client's own error is C{502} with its code; no such session
        C{404}; no answer in time C{504}; a bad timeout C{400}.
        """
        _, sid = await self.connect()
        reply = await self.api("call", {"session": sid, "route": "broken"})
        self.assertError(reply, 502, "route_failed")
        reply = await self.api("call", {"session": sid, "route": "missing"})
        self.assertError(reply, 502, "no_route")
        reply = await self.api("call", {"session": "x" * 22, "route": "double"})
        self.assertError(reply, 404, "no_session")
        reply = await self.api(
            "call", {"session": sid, "route": "never", "timeout": 0.3}
        )
        self.assertError(reply, 504, "timeout")
        for timeout in [0, -1, 301, "1", True]:
            reply = await self.api(
                "call", {"session": sid, "route": "double", "timeout": timeout}
            )
            self.assertError(reply, 400, "bad_message")
        self.assertError(
            await self.api("call", {"route": "double"}), 400, "bad_message"
        )
        self.flushLoggedErrors(ValueError)


class HistoryTests(APICase):
    async def test_history(self) -> None:
        """
        C{history} gives the kept events, oldest first; after an id, those
        after it; from an id it cannot place, all it keeps and C{reset}.
        """
        ids = []
        for n in range(3):
            reply = await self.api("publish", {"channel": "news", "data": {"n": n}})
            ids.append(reply.json()["id"])
        reply = await self.api("history?channel=news")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(
            reply.json(),
            {
                "events": [
                    {
                        "id": ids[n],
                        "event": "news",
                        "data": json.dumps({"n": n}, separators=(",", ":")),
                    }
                    for n in range(3)
                ]
            },
        )
        reply = await self.api(f"history?channel=news&since={ids[0]}")
        self.assertEqual([e["id"] for e in reply.json()["events"]], ids[1:])
        self.assertNotIn("reset", reply.json())
        reply = await self.api("history?channel=news&since=nonsense")
        self.assertEqual(len(reply.json()["events"]), 3)
        self.assertIs(reply.json()["reset"], True)
        self.assertError(await self.api("history?channel=nowhere"), 404, "no_channel")
        self.assertError(await self.api("history"), 404, "no_channel")


class DisconnectTests(APICase):
    async def test_by_session(self) -> None:
        """
        C{disconnect} by session ends that stream with a C{disconnected}
        event; the others carry on.
        """
        gone = await self.open_stream()
        kept = await self.open_stream()
        reply = await self.api("disconnect", {"session": gone.session_id})
        self.assertEqual((reply.status, reply.json()), (200, {"disconnected": 1}))
        await gone.done
        self.assertEqual(gone.events[-1].type, "disconnected")
        self.assertIn(kept.session_id, self.endpoint.sessions)
        self.assertNotIn(gone.session_id, self.endpoint.sessions)
        reply = await self.api("disconnect", {"session": gone.session_id})
        self.assertEqual(reply.json(), {"disconnected": 0})

    async def test_by_subject(self) -> None:
        """
        C{disconnect} by subject ends every stream of that subject's
        tokens.
        """
        ada = [await self.open_stream(bearer=token(sub="ada")) for _ in range(2)]
        bob = await self.open_stream(bearer=token(sub="bob"))
        reply = await self.api("disconnect", {"subject": "ada"})
        self.assertEqual((reply.status, reply.json()), (200, {"disconnected": 2}))
        for stream in ada:
            await stream.done
        self.assertIn(bob.session_id, self.endpoint.sessions)

    async def test_bad_disconnects(self) -> None:
        """
        Neither or both of session and subject: C{400}.
        """
        for body in [{}, {"session": "a", "subject": "b"}, {"session": 3}]:
            self.assertError(await self.api("disconnect", body), 400, "bad_message")


class OpenAPITests(APICase):
    async def test_document_matches_the_answers(self) -> None:
        """
        C{openapi.json} (served without credentials) is an OpenAPI 3.1
        document whose schemas the real answers and errors satisfy.
        """
        reply = await self.api("openapi.json", auth=None)
        self.assertEqual(reply.status, 200)
        document = reply.json()
        self.assertEqual(document["openapi"], "3.1.0")
        paths = document["paths"]
        self.assertEqual(
            sorted(paths),
            [
                f"/api/{n}"
                for n in ["call", "disconnect", "history", "presence", "publish"]
            ],
        )
        schemas = document["components"]["schemas"]

        def check(path: str, method: str, reply: Reply) -> None:
            responses = paths[f"/api/{path}"][method]["responses"]
            self.assertIn(str(reply.status), responses, (path, reply.status))
            schema = responses[str(reply.status)]["content"]["application/json"][
                "schema"
            ]
            jsonschema.validate(
                reply.json(), {**schema, "components": {"schemas": schemas}}
            )

        _, sid = await CallTests.connect(self)  # type: ignore[arg-type]
        await self.open_stream(bearer=token(sub="ada"))
        for path, method, body in [
            ("publish", "post", {"channel": "news", "data": [1]}),
            ("publish", "post", {"channels": ["news", "chat"], "data": [1]}),
            ("publish", "post", {"channel": "nowhere", "data": 1}),
            ("call", "post", {"session": sid, "route": "double", "args": [2]}),
            ("call", "post", {"session": sid, "route": "broken"}),
            ("call", "post", {"session": "y" * 22, "route": "double"}),
            ("disconnect", "post", {"subject": "ada"}),
            ("disconnect", "post", {}),
        ]:
            check(path, method, await self.api(path, body))
        for query in ["history?channel=news", "history?channel=news&since=x"]:
            check("history", "get", await self.api(query))
        self.flushLoggedErrors(ValueError)
        check(
            "publish",
            "post",
            await self.api("publish", {"channel": "news", "data": 1}, auth=None),
        )
