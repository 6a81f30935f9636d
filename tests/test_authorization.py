"""
Tests for what a principal may see and do (issue 15), over real sockets on
127.0.0.1 with real JWTs (HS256, and RS256 where the key matters): whose
route outputs a subscription sees, principals without a subject, a token's
lifetime on an open stream and its refresh, channel claims on refresh and
replay, and errors that do not leak.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import treq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from txgraphsse import JWTAuthorizer, RouteError, SSEBackend
from txgraphsse._client._tokens import TokenKeeper
from txgraphsse.client import GraphSSEClient

from .test_backchannel import LiveStream, Reply, TrackingSite, _HangUp, is_reply

SECRET = "s3cret-for-authorization-tests-0123456789"


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """
    A signed token with C{claims}, valid for an hour unless C{exp} says.
    """
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, key, algorithm=algorithm)


class SeeAll(JWTAuthorizer):
    """
    A JWT authorizer whose C{can_subscribe} lets an C{auditor} claim see
    everyone's outputs of every route.
    """

    def can_subscribe(self, principal: Any, route: str) -> bool:
        return bool(principal.claims.get("auditor"))


class AuthCase(TestCase):
    """
    A backend with a JWT endpoint at C{/sse} (HS256), an anonymous one at
    C{/open} and an RS256 one at C{/rs}, on a real port.
    """

    def setUp(self) -> None:
        self.backend = SSEBackend(reactor=reactor)
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.endpoint = self.backend.setup_sse(
            "/sse", channels=["news", "staff"], authorizer=SeeAll(SECRET)
        )
        self.anonymous = self.backend.setup_sse("/open")
        self.rs = self.backend.setup_sse(
            "/rs", authorizer=JWTAuthorizer(public, ("RS256",))
        )
        root = Resource()
        for path, endpoint in [
            (b"sse", self.endpoint),
            (b"open", self.anonymous),
            (b"rs", self.rs),
        ]:
            root.putChild(path, endpoint.resource)
        self.site = TrackingSite(root)
        tcp: IReactorTCP = reactor
        self.port = tcp.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, False)
        self.streams: list[LiveStream] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))
        backend = self.backend
        backend.add_route("echo", lambda value: value)
        backend.add_route("shout", lambda value: str(value).upper(), subscribable=True)

    async def _clean_up(self) -> None:
        for endpoint in self.backend.endpoints.values():
            endpoint.terminate()
        for stream in self.streams:
            await stream.done.addErrback(lambda f: f.trap(_HangUp))
        await self.pool.closeCachedConnections()
        await self.port.stopListening()
        await self.site.all_closed()

    async def open_stream(
        self, bearer: str | None = None, path: str = "/sse", query: str = ""
    ) -> LiveStream:
        """
        Open a session with C{bearer} as its token; wait for its C{setId}.
        """
        headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
        response = await treq.get(
            self.base + path + query, headers=headers, unbuffered=True, pool=self.pool
        )
        self.assertEqual(response.code, 200)
        stream = LiveStream(response)
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        return stream

    async def post(
        self, body: Any, bearer: str | None = None, path: str = "/sse"
    ) -> Reply:
        headers = {"Content-Type": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        response = await treq.post(
            self.base + path,
            data=json.dumps(body).encode("utf-8"),
            headers=headers,
            pool=self.pool,
        )
        return Reply(response.code, response.headers, await treq.content(response))

    async def subscribe(
        self, stream: LiveStream, route: str, bearer: str | None, path: str = "/sse"
    ) -> int:
        reply = await self.post(
            {
                "route": "subscribeSSE",
                "args": [route, path, None, None, None, stream.session_id],
            },
            bearer,
            path,
        )
        self.assertEqual(reply.status, 200, reply.body)
        sub: int = reply.json()["args"]
        return sub

    async def call(
        self,
        route: str,
        value: Any,
        bearer: str | None,
        stream: LiveStream | None = None,
        path: str = "/sse",
    ) -> Reply:
        body: dict[str, Any] = {"route": route, "args": [value]}
        if stream is not None:
            body["sessionId"] = stream.session_id
        reply = await self.post(body, bearer, path)
        self.assertEqual(reply.status, 200, reply.body)
        return reply

    async def seen(self, stream: LiveStream, route: str, endpoint: Any) -> list[Any]:
        """
        The outputs of C{route} that C{stream} got, once a marker sent
        after them has arrived (so that nothing is still on its way).
        """
        marker = f"marker-{uuid.uuid4()}"
        endpoint.send(marker, session_id=stream.session_id)
        await stream.until_message(lambda m: m == marker)
        return [m["args"] for m in stream.messages() if is_reply(route)(m)]


class SubscriptionTests(AuthCase):
    """
    A subscription to a server route sees its own principal's calls and
    the server's, not another principal's, unless the route or the
    authorizer allows; and a session subscribes to a route once.
    """

    async def test_other_principals_results_not_seen(self) -> None:
        """
        Ada's subscription to C{echo} does not see Bob's C{echo}, made with
        his session or without one; it sees her own calls (with or without
        her session) and the server's.
        """
        ada, bob = token(sub="ada"), token(sub="bob")
        watcher = await self.open_stream(ada)
        other = await self.open_stream(bob)
        await self.subscribe(watcher, "echo", ada)
        await self.call("echo", "secret-of-bob", bob, other)
        await self.call("echo", "secret-of-bob-sessionless", bob)
        await self.call("echo", "ada-1", ada, watcher)
        await self.call("echo", "ada-2", ada)
        self.backend.call("echo", "from-the-server")
        self.assertEqual(
            await self.seen(watcher, "echo", self.endpoint),
            ["ada-1", "ada-2", "from-the-server"],
        )

    async def test_anonymous_sessions_see_only_their_own(self) -> None:
        """
        Anonymous sessions are each their own: one does not see another's
        calls, nor a session-less call's.
        """
        watcher = await self.open_stream(path="/open")
        other = await self.open_stream(path="/open")
        await self.subscribe(watcher, "echo", None, "/open")
        await self.call("echo", "theirs", None, other, "/open")
        await self.call("echo", "nobody's", None, None, "/open")
        await self.call("echo", "mine", None, watcher, "/open")
        self.assertEqual(await self.seen(watcher, "echo", self.anonymous), ["mine"])

    async def test_subscribable_route_seen_by_all(self) -> None:
        """
        A route declared C{subscribable} shows every call's output.
        """
        ada, bob = token(sub="ada"), token(sub="bob")
        watcher = await self.open_stream(ada)
        await self.subscribe(watcher, "shout", ada)
        await self.call("shout", "hello", bob)
        self.assertEqual(await self.seen(watcher, "shout", self.endpoint), ["HELLO"])

    async def test_authorizer_can_subscribe(self) -> None:
        """
        The authorizer's C{can_subscribe} lets an auditor's subscription see
        everyone's outputs of a route that is not C{subscribable}.
        """
        auditor, bob = token(sub="eve", auditor=True), token(sub="bob")
        watcher = await self.open_stream(auditor)
        await self.subscribe(watcher, "echo", auditor)
        await self.call("echo", "bob's", bob)
        self.assertEqual(await self.seen(watcher, "echo", self.endpoint), ["bob's"])

    async def test_duplicate_subscription_is_one(self) -> None:
        """
        Subscribing twice to one route gives the same number and one copy
        of each output; after one unsubscribe, none.
        """
        ada = token(sub="ada")
        watcher = await self.open_stream(ada)
        first = await self.subscribe(watcher, "echo", ada)
        for _ in range(5):
            self.assertEqual(await self.subscribe(watcher, "echo", ada), first)
        await self.call("echo", "once", ada, watcher)
        self.assertEqual(await self.seen(watcher, "echo", self.endpoint), ["once"])
        reply = await self.post(
            {
                "route": "unsubscribe",
                "args": ["echo", first],
                "sessionId": watcher.session_id,
            },
            ada,
        )
        self.assertEqual(reply.json(), {"args": True})
        await self.call("echo", "after", ada, watcher)
        self.assertEqual(await self.seen(watcher, "echo", self.endpoint), ["once"])
        self.assertEqual(self.endpoint.observers.of(watcher.session_id), [])


class SubjectlessTests(AuthCase):
    """
    Tokens without C{sub} are each a principal of their own.
    """

    async def assertCannotAct(self, owner: str, intruder: str, path: str) -> None:
        stream = await self.open_stream(owner, path)
        reply = await self.post(
            {"route": "echo", "args": ["x"], "sessionId": stream.session_id},
            intruder,
            path,
        )
        self.assertEqual(reply.status, 403, reply.body)
        self.assertEqual(reply.json()["error"]["code"], "forbidden")
        reply = await self.post(
            {"route": "echo", "args": ["x"], "sessionId": stream.session_id},
            owner,
            path,
        )
        self.assertEqual(reply.status, 200, reply.body)

    async def test_without_jti(self) -> None:
        """
        Two subject-less tokens without C{jti} (HS256) cannot act on each
        other's sessions.
        """
        await self.assertCannotAct(
            token(subscribe=["news"]), token(subscribe=["staff"]), "/sse"
        )

    async def test_with_jti(self) -> None:
        """
        Subject-less tokens with different C{jti}s are different clients;
        two tokens with one C{jti} are the same (RS256).
        """
        owner = token(self.private, "RS256", jti="one")
        await self.assertCannotAct(
            owner, token(self.private, "RS256", jti="two"), "/rs"
        )
        stream = await self.open_stream(owner, "/rs")
        renewed = token(self.private, "RS256", jti="one", extra=1)
        reply = await self.post(
            {"route": "echo", "args": ["x"], "sessionId": stream.session_id},
            renewed,
            "/rs",
        )
        self.assertEqual(reply.status, 200, reply.body)

    async def test_subjectless_subscriptions_apart(self) -> None:
        """
        One subject-less token's subscription does not see another's calls.
        """
        mine, theirs = token(), token(nonce=1)
        watcher = await self.open_stream(mine)
        await self.subscribe(watcher, "echo", mine)
        await self.call("echo", "theirs", theirs)
        await self.call("echo", "mine", mine)
        self.assertEqual(await self.seen(watcher, "echo", self.endpoint), ["mine"])


class ErrorTests(AuthCase):
    """
    A failing route's text stays in the log unless the endpoint exposes it
    or the route raised it on purpose.
    """

    def setUp(self) -> None:
        super().setUp()
        self.loud = self.backend.setup_sse("/loud", expose_errors=True)
        self.site.resource.putChild(b"loud", self.loud.resource)

        def leaky() -> None:
            raise ValueError("password=hunter2 in /etc/app/secret.conf")

        def refuses(item: str) -> None:
            raise RouteError(f"{item} is out of stock", code="out_of_stock")

        self.backend.add_route("leaky", leaky)
        self.backend.add_route("refuses", refuses)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    async def test_hidden_by_default(self) -> None:
        """
        By default the answer says C{route_failed} and an error id, not the
        exception's text; the log line with the traceback has the same id.
        """
        reply = await self.post({"route": "leaky"}, path="/open")
        self.assertEqual(reply.status, 500)
        error = reply.json()["error"]
        self.assertEqual(error["code"], "route_failed")
        self.assertNotIn("hunter2", reply.body.decode("utf-8"))
        self.assertNotIn("ValueError", reply.body.decode("utf-8"))
        self.assertRegex(error["id"], "^[0-9a-f]{12}$")
        self.assertIn(error["id"], error["message"])
        [logged] = [e for e in self.logged if e.get("error_id") == error["id"]]
        self.assertIn("hunter2", logged["log_failure"].getErrorMessage())
        self.flushLoggedErrors(ValueError)

    async def test_hidden_in_batches_and_run_requests(self) -> None:
        """
        A batch's entry and a C{runRequest} hide the text the same way.
        """
        stream = await self.open_stream(path="/open")
        reply = await self.post(
            [{"route": "leaky"}, {"route": "echo", "args": [1]}], path="/open"
        )
        self.assertEqual(reply.status, 200)
        failed, answered = reply.json()
        self.assertEqual(failed["error"]["code"], "route_failed")
        self.assertNotIn("hunter2", json.dumps(failed))
        self.assertEqual(answered, {"args": 1})
        reply = await self.post(
            {
                "route": "runRequest",
                "args": [{"route": "leaky"}, "/open", "c1", stream.session_id],
            },
            path="/open",
        )
        self.assertEqual(reply.status, 500)
        self.assertNotIn("hunter2", reply.body.decode("utf-8"))
        self.flushLoggedErrors(ValueError)

    async def test_exposed_when_allowed(self) -> None:
        """
        With C{expose_errors=True} the answer carries the exception's type
        and message.
        """
        reply = await self.post({"route": "leaky"}, path="/loud")
        self.assertEqual(reply.status, 500)
        self.assertEqual(
            reply.json()["error"]["message"],
            "ValueError: password=hunter2 in /etc/app/secret.conf",
        )
        self.flushLoggedErrors(ValueError)

    async def test_route_error_shown(self) -> None:
        """
        A L{RouteError} raised on purpose reaches the caller as it is, code
        and message, on every endpoint; it is not logged as a failure.
        """
        for path in ["/open", "/loud"]:
            reply = await self.post({"route": "refuses", "args": ["tea"]}, path=path)
            self.assertEqual(reply.status, 500)
            self.assertEqual(
                reply.json(),
                {"error": {"code": "out_of_stock", "message": "tea is out of stock"}},
            )
        self.assertEqual([e for e in self.logged if "log_failure" in e], [])


def soon(seconds: float = 2.0) -> int:
    """
    An C{exp} a little after now (whole seconds, as JWTs have them).
    """
    return int(time.time() + seconds)


class HistoryCase(AuthCase):
    """
    And a JWT endpoint at C{/hist} whose channels keep history.
    """

    def setUp(self) -> None:
        super().setUp()
        self.history = self.backend.setup_sse(
            "/hist", channels=["news", "staff"], history=100, authorizer=SeeAll(SECRET)
        )
        self.site.resource.putChild(b"hist", self.history.resource)


class LifetimeTests(HistoryCase):
    """
    A stream lives as long as its token, or longer where the client
    refreshes it; a refresh re-checks the channels, and a replay checks
    the channels of the token that asks.
    """

    async def test_stream_ends_at_exp(self) -> None:
        """
        At its token's C{exp}, the stream gets an C{expired} event and ends;
        the session is gone.
        """
        stream = await self.open_stream(token(sub="ada", exp=soon()))
        self.assertEqual(len(self.endpoint.lifetimes), 1)
        await stream.done
        [last] = stream.events[-1:]
        self.assertEqual(last.type, "expired")
        self.assertEqual(json.loads(last.data)["route"], "expired")
        self.assertNotIn(stream.session_id, self.endpoint.sessions)
        self.assertEqual(len(self.endpoint.lifetimes), 0)

    async def test_refreshed_stream_carries_on(self) -> None:
        """
        A C{refreshToken} POST with a later token of the same subject moves
        the end: the stream outlives the first token's C{exp} and gets every
        event sent before, across and after it.
        """
        first = token(sub="ada", exp=soon(), subscribe=["news"])
        stream = await self.open_stream(first, query="?channels=news")
        news = self.endpoint.channels["news"]
        news.broadcast("before")
        later = token(sub="ada", exp=soon(3600), subscribe=["news"])
        reply = await self.post(
            {"route": "refreshToken", "sessionId": stream.session_id}, later
        )
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(
            reply.json(),
            {
                "args": {
                    "expires": float(
                        jwt.decode(later, SECRET, algorithms=["HS256"])["exp"]
                    )
                }
            },
        )
        sent = []
        for n in range(30):
            news.broadcast(f"during-{n}")
            sent.append(f"during-{n}")
            await deferLater(reactor, 0.1, lambda: None)
        news.broadcast("after")
        got = await stream.until(
            lambda messages: messages if "after" in messages else None
        )
        self.assertEqual(
            [m for m in got if isinstance(m, str)], ["before", *sent, "after"]
        )
        self.assertFalse(stream.done.called)
        self.assertIn(stream.session_id, self.endpoint.sessions)
        self.assertNotIn("expired", [e.type for e in stream.events])

    async def test_refresh_by_another_refused(self) -> None:
        """
        Another subject's token cannot refresh a session (403), and an
        expired stream's credentials are not extended by it.
        """
        stream = await self.open_stream(token(sub="ada", exp=soon()))
        reply = await self.post(
            {"route": "refreshToken", "sessionId": stream.session_id},
            token(sub="mallory"),
        )
        self.assertEqual(reply.status, 403, reply.body)
        self.assertEqual(reply.json()["error"]["code"], "forbidden")
        await stream.done
        self.assertEqual(stream.events[-1].type, "expired")

    async def test_refresh_rechecks_channels(self) -> None:
        """
        A refreshed token that no longer allows a channel takes the session
        out of it, with a C{left} event; the other channels carry on.
        """
        both = token(sub="ada", subscribe=["news", "staff"])
        stream = await self.open_stream(both, query="?channels=news,staff")
        news_only = token(sub="ada", subscribe=["news"])
        reply = await self.post(
            {"route": "refreshToken", "sessionId": stream.session_id}, news_only
        )
        self.assertEqual(reply.status, 200, reply.body)
        left = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "left"
        )
        self.assertEqual(left, {"route": "left", "args": "staff"})
        self.assertEqual([e.type for e in stream.events if "left" in e.data], ["left"])
        session = self.endpoint.sessions[stream.session_id]
        self.assertNotIn("staff", session.channels)
        self.endpoint.channels["staff"].broadcast("staff-only")
        self.endpoint.channels["news"].broadcast("news")
        await stream.until_message(lambda m: m == "news")
        self.assertNotIn("staff-only", stream.messages())

    async def test_claims_enforced_on_replay(self) -> None:
        """
        A reconnect quoting an id from a stream with more channels replays
        only the channels its own token allows; asking for one it does not
        allow is refused (403).
        """
        both = token(sub="ada", subscribe=["news", "staff"])
        stream = await self.open_stream(both, "/hist", "?channels=news,staff")
        self.history.channels["news"].broadcast("news-0")
        self.history.channels["staff"].broadcast("staff-0")
        await stream.until_message(lambda m: m == "staff-0")
        last_id = stream.events[-1].last_event_id
        self.history.channels["news"].broadcast("news-1")
        self.history.channels["staff"].broadcast("staff-1")
        await stream.until_message(lambda m: m == "staff-1")
        news_only = token(sub="ada", subscribe=["news"])
        refused = await treq.get(
            f"{self.base}/hist?channels=news,staff&lastEventId={last_id}",
            headers={"Authorization": f"Bearer {news_only}"},
            pool=self.pool,
        )
        self.assertEqual(refused.code, 403)
        await treq.content(refused)
        again = await self.open_stream(
            news_only, "/hist", f"?channels=news&lastEventId={last_id}"
        )
        self.history.channels["news"].broadcast("news-2")
        got = await again.until(
            lambda messages: messages if "news-2" in messages else None
        )
        self.assertEqual([m for m in got if isinstance(m, str)], ["news-1", "news-2"])


class ClientTokenTests(HistoryCase):
    """
    The Python client's C{get_token}: its tokens go with the stream and the
    C{POST}s, and are refreshed before they expire, on the same stream; if
    the stream ends at expiry, the reconnect takes a fresh token and misses
    nothing.
    """

    def client(self, lifetime: float) -> tuple[GraphSSEClient, list[str]]:
        given: list[str] = []

        def get_token() -> Deferred[str]:
            issued = token(
                sub="ada", subscribe=["news"], exp=soon(lifetime), n=len(given)
            )
            given.append(issued)
            # As from a token service: an answer that takes a little while.
            return deferLater(reactor, 0.01, lambda: issued)

        client = GraphSSEClient(reactor, get_token=get_token)
        self.addCleanup(client.terminate)
        return client, given

    async def test_refreshed_before_exp(self) -> None:
        """
        A token that lives 3 s is replaced shortly before its C{exp} on the
        same session: no reconnect, every event arrives, calls carry on.
        """
        client, given = self.client(3)
        received: list[Any] = []
        client.add_handler("news", lambda data, event, conn: received.append(data))
        connection = await client.connect(f"{self.base}/hist?channels=news")
        session_id = connection.session_id
        self.assertEqual(len(given), 1)
        news = self.history.channels["news"]
        sent = []
        for n in range(45):
            news.broadcast(n)
            sent.append(n)
            await deferLater(reactor, 0.1, lambda: None)
        self.assertGreaterEqual(len(given), 2)
        self.assertEqual(connection.session_id, session_id)
        session = self.history.sessions[session_id]
        self.assertEqual(session.principal.claims["n"], len(given) - 1)
        self.assertEqual(await connection.run("echo", ["still"]), "still")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(received, sent)
        self.assertEqual(self.history.counters.sessions_opened, 1)

    async def test_reconnect_after_exp(self) -> None:
        """
        A client that did not refresh in time: the server ends the stream
        at C{exp}; the client asks for a fresh token, reconnects with its
        C{Last-Event-ID}, and receives every event exactly once.
        """
        # Its refresh would come a minute after the expiry.
        self.patch(TokenKeeper, "most", -60.0)
        client, given = self.client(2)
        received: list[Any] = []
        sessions: list[str | None] = []
        client.on_session = lambda conn: sessions.append(conn.session_id)
        client.add_handler("news", lambda data, event, conn: received.append(data))
        await client.connect(f"{self.base}/hist?channels=news")
        news = self.history.channels["news"]
        sent = []
        for n in range(40):
            news.broadcast(n)
            sent.append(n)
            await deferLater(reactor, 0.1, lambda: None)
        await deferLater(reactor, 0.5, lambda: None)
        # The first token lived 1 to 2 s, and the reconnect came 2 s (the
        # server's retry) after its expiry: a new session, with a new token.
        self.assertGreaterEqual(len(sessions), 2, sessions)
        self.assertEqual(len(given), len(sessions))
        self.assertEqual(received, sent)
