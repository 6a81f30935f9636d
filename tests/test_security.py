"""
Authentication, authorization, CORS and limits, through the real resource in
memory (treq's StubTreq), with a Clock for rates.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from txgraphsse import (
    AccessDenied,
    Caller,
    CORSPolicy,
    EventStreamParser,
    JWTAuthorizer,
    JWTPrincipal,
    Limits,
    ServerSentEvent,
    SSEBackend,
    SSEEndpoint,
    TooManyCalls,
    Unauthorized,
)
from txgraphsse._limits import client_address

SECRET = "s3cret-for-tests-only-0123456789abcdef"
URL = "http://127.0.0.1/sse"
JSON = {"content-type": "application/json"}


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, key, algorithm=algorithm)


class Server:
    """
    An endpoint behind StubTreq, with helpers to open streams and post.
    """

    def __init__(self, case: SynchronousTestCase, **setup: Any) -> None:
        self.case = case
        self.clock = MemoryReactorClock()
        self.backend = SSEBackend(self.clock)
        setup.setdefault("channels", ["news", "admin"])
        setup.setdefault("keepalive", 0)
        self.endpoint: SSEEndpoint = self.backend.setup_sse("/sse", **setup)
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        self.stub = StubTreq(root)
        case.addCleanup(self.endpoint.terminate)

    def pump(self) -> None:
        for _ in range(3):
            self.stub.flush()
            self.clock.advance(0)
        self.stub.flush()

    def request(
        self, method: str, url: str = URL, **kwargs: Any
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        d = self.stub.request(method, url, **kwargs)
        self.pump()
        response = self.case.successResultOf(d)
        body = self.stub.content(response)
        self.pump()
        headers = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
        return response.code, headers, self.case.successResultOf(body)

    def post(
        self, body: Any, headers: dict[str, str] | None = None, url: str = URL
    ) -> tuple[int, Any, dict[bytes, list[bytes]]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        code, got, content = self.request(
            "POST", url, data=raw, headers={**JSON, **(headers or {})}
        )
        return code, json.loads(content) if content else None, got

    def open(self, url: str = URL, headers: dict[str, str] | None = None) -> Stream:
        d = self.stub.get(url, headers=headers or {})
        self.pump()
        response = self.case.successResultOf(d)
        self.case.assertEqual(response.code, 200)
        stream = Stream()
        self.stub.collect(response, stream.feed)
        self.pump()
        return stream


class Stream:
    def __init__(self) -> None:
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []

    def feed(self, data: bytes) -> None:
        self.events.extend(self.parser.feed(data))

    @property
    def session_id(self) -> str:
        first = json.loads(self.events[0].data)
        assert first["route"] == "setId"
        return str(first["args"])


def error_code(body: Any) -> str:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


class JWTTests(SynchronousTestCase):
    """
    The ready JWT authorizer: tokens in a header, a cookie or the query;
    channels from the token's claims.
    """

    def server(self, **kwargs: Any) -> Server:
        return Server(self, authorizer=JWTAuthorizer(SECRET, **kwargs))

    def test_missing_token_refused(self) -> None:
        """
        A stream without a token gets 401 JSON and a WWW-Authenticate
        header, and no session is opened.
        """
        server = self.server()
        code, headers, body = server.request("GET")
        self.assertEqual(code, 401)
        self.assertEqual(error_code(json.loads(body)), "unauthorized")
        self.assertEqual(headers[b"www-authenticate"], [b"Bearer"])
        self.assertEqual(server.endpoint.sessions, {})

    def test_expired_token_refused(self) -> None:
        """
        An expired token is refused with 401.
        """
        server = self.server()
        expired = token(exp=int(time.time()) - 10, subscribe=["news"])
        code, _, body = server.request("GET", f"{URL}?token={expired}")
        self.assertEqual(code, 401)
        self.assertIn("expired", json.loads(body)["error"]["message"])

    def test_wrong_key_refused(self) -> None:
        """
        A token signed with another key is refused with 401.
        """
        server = self.server()
        forged = token(key="another-secret-of-enough-length-000000", subscribe=["*"])
        code, _, _ = server.request(
            "GET", URL, headers={"Authorization": f"Bearer {forged}"}
        )
        self.assertEqual(code, 401)

    def test_token_without_exp_refused(self) -> None:
        """
        A token that never expires is refused: exp is required.
        """
        server = self.server()
        forever = jwt.encode({"subscribe": ["news"]}, SECRET, algorithm="HS256")
        code, _, _ = server.request("GET", f"{URL}?token={forever}")
        self.assertEqual(code, 401)

    def test_none_algorithm_refused(self) -> None:
        """
        An unsigned token (alg none) is refused, and the authorizer cannot be
        set up to accept it.
        """
        server = self.server()
        unsigned = jwt.encode(
            {"subscribe": ["*"], "exp": int(time.time()) + 60}, None, algorithm="none"
        )
        code, _, _ = server.request("GET", f"{URL}?token={unsigned}")
        self.assertEqual(code, 401)
        self.assertRaises(ValueError, JWTAuthorizer, SECRET, ("none",))

    def test_valid_token_joins_only_its_channels(self) -> None:
        """
        A valid token opens a stream and may join the channels its claim
        lists, and no other: a channel outside the claim gets 403.
        """
        server = self.server()
        good = token(sub="ada", subscribe=["news"])
        stream = server.open(f"{URL}?channels=news&token={good}")
        session = server.endpoint.sessions[stream.session_id]
        self.assertIsInstance(session.principal, JWTPrincipal)
        self.assertEqual(session.principal.subject, "ada")
        self.assertIn("news", session.channels)
        server.endpoint.channels["news"].broadcast("headline")
        server.pump()
        self.assertEqual(stream.events[-1].data, "headline")

        code, _, body = server.request("GET", f"{URL}?channels=admin&token={good}")
        self.assertEqual(code, 403)
        self.assertEqual(error_code(json.loads(body)), "forbidden")
        self.assertEqual(len(server.endpoint.sessions), 1)

    def test_token_from_cookie_and_header(self) -> None:
        """
        The token is also read from the Authorization header and from a
        cookie.
        """
        server = self.server()
        good = token(sub="bo", subscribe=["*"])
        server.open(
            f"{URL}?channels=admin", headers={"Authorization": f"Bearer {good}"}
        )
        server.open(f"{URL}?channels=admin", headers={"Cookie": f"token={good}"})
        self.assertEqual(len(server.endpoint.sessions), 2)

    def test_mercure_claim(self) -> None:
        """
        A dotted claim path reads Mercure-style tokens.
        """
        server = self.server(claim="mercure.subscribe")
        good = token(mercure={"subscribe": ["admin"]})
        server.open(f"{URL}?channels=admin&token={good}")
        self.assertEqual(len(server.endpoint.sessions), 1)

    def test_rs256(self) -> None:
        """
        RS256 tokens are checked with the public key; one signed by another
        key pair is refused.
        """
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        server = Server(self, authorizer=JWTAuthorizer(public, ("RS256",)))
        good = token(private, "RS256", subscribe=["news"])
        bad = token(other, "RS256", subscribe=["news"])
        server.open(f"{URL}?channels=news&token={good}")
        code, _, _ = server.request("GET", f"{URL}?channels=news&token={bad}")
        self.assertEqual(code, 401)

    def test_post_needs_token(self) -> None:
        """
        POST is authorized too: without a token it gets 401, with one the
        route runs and sees the principal through its caller parameter.
        """
        server = self.server()
        seen: list[Any] = []

        def whoami(*, caller: Caller) -> str | None:
            seen.append(caller.principal)
            return str(caller.principal.subject)

        server.backend.add_route("whoami", whoami)
        code, body, _ = server.post({"route": "whoami"})
        self.assertEqual((code, error_code(body)), (401, "unauthorized"))
        good = token(sub="cy")
        code, body, _ = server.post(
            {"route": "whoami"}, headers={"Authorization": f"Bearer {good}"}
        )
        self.assertEqual((code, body), (200, {"args": "cy"}))


class SpoofingTests(SynchronousTestCase):
    """
    Acting for a session one does not hold.
    """

    def test_post_for_another_principals_session_refused(self) -> None:
        """
        A POST naming another principal's session id is refused with 403,
        whichever way it names it, and nothing runs for it.
        """
        server = Server(self, authorizer=JWTAuthorizer(SECRET))
        alice = token(sub="alice", subscribe=["*"])
        mallory = token(sub="mallory", subscribe=["*"])
        stream = server.open(f"{URL}?token={alice}")
        sid = stream.session_id
        ran: list[Any] = []
        server.backend.add_route("spend", lambda: ran.append(1))
        as_mallory = {"Authorization": f"Bearer {mallory}"}
        for body, headers in [
            ({"route": "spend", "sessionId": sid}, as_mallory),
            ({"route": "spend"}, {**as_mallory, "X-GraphSSE-Session": sid}),
            (
                {
                    "route": "runRequest",
                    "args": [{"route": "spend"}, "/sse", "c1", sid],
                },
                as_mallory,
            ),
            (
                {
                    "route": "subscribeSSE",
                    "args": ["spend", "/sse", None, None, None, sid],
                },
                as_mallory,
            ),
        ]:
            code, answer, _ = server.post(body, headers)
            self.assertEqual((code, error_code(answer)), (403, "forbidden"), body)
        self.assertEqual(ran, [])
        code, answer, _ = server.post(
            {"route": "spend", "sessionId": sid}, {"Authorization": f"Bearer {alice}"}
        )
        self.assertEqual(code, 200)
        self.assertEqual(ran, [1])

    def test_reply_to_someone_elses_call_refused(self) -> None:
        """
        A reply quoting the callbackId of a call made to another session is
        refused (409) and the call stays pending; its own session settles it.
        """
        server = Server(self)
        a = server.open()
        b = server.open()
        d = server.endpoint.run("ask", [1], session_id=a.session_id)
        assert isinstance(d, Deferred)
        server.pump()
        request = json.loads(a.events[-1].data)
        callback_id = request["args"][2]
        code, body, _ = server.post(
            {"args": "forged", "callbackId": callback_id, "sessionId": b.session_id}
        )
        self.assertEqual((code, error_code(body)), (409, "not_pending"))
        self.assertNoResult(d)
        code, _, _ = server.post(
            {"args": "real", "callbackId": callback_id, "sessionId": a.session_id}
        )
        self.assertEqual(code, 204)
        self.assertEqual(self.successResultOf(d), "real")

    def test_unknown_session_refused(self) -> None:
        """
        A made-up session id gets 404 no_session.
        """
        server = Server(self)
        code, body, _ = server.post({"route": "ping", "sessionId": "x" * 22})
        self.assertEqual((code, error_code(body)), (404, "no_session"))


class CallableAuthorizerTests(SynchronousTestCase):
    """
    authorize= and can_join= as plain functions, a Deferred included.
    """

    def test_deferred_authorize(self) -> None:
        """
        An authorize function that answers later holds the stream open until
        it does; a refusal that comes later is still a JSON error.
        """
        pending: list[Deferred[Any]] = []

        def authorize(request: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        server = Server(
            self, authorize=authorize, can_join=lambda who, channel: who == "root"
        )
        first = server.stub.get(f"{URL}?channels=admin")
        server.pump()
        self.assertNoResult(first)
        pending[0].callback("root")
        server.pump()
        self.assertEqual(self.successResultOf(first).code, 200)
        self.assertEqual(len(server.endpoint.sessions), 1)

        second = server.stub.get(f"{URL}?channels=admin")
        server.pump()
        pending[1].callback("guest")
        server.pump()
        self.assertEqual(self.successResultOf(second).code, 403)

        third = server.stub.get(URL)
        server.pump()
        pending[2].errback(AccessDenied("banned"))
        server.pump()
        response = self.successResultOf(third)
        self.assertEqual(response.code, 403)
        body = self.successResultOf(server.stub.json_content(response))
        self.assertEqual(body["error"]["message"], "banned")
        self.assertEqual(len(server.endpoint.sessions), 1)

    def test_authorizer_crash_is_500_json(self) -> None:
        """
        An authorizer that raises something unexpected gives a 500 JSON
        error without a traceback, and the failure is logged.
        """

        def authorize(request: Any) -> Any:
            raise RuntimeError("database down")

        server = Server(self, authorize=authorize)
        code, body, _ = server.post({"route": "ping"})
        self.assertEqual(code, 500)
        self.assertNotIn("Traceback", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unauthorized_from_function(self) -> None:
        """
        Unauthorized raised by an authorize function is a 401.
        """

        def authorize(request: Any) -> Any:
            raise Unauthorized("log in first")

        server = Server(self, authorize=authorize)
        code, body, _ = server.post({"route": "ping"})
        self.assertEqual((code, body["error"]["message"]), (401, "log in first"))


class CORSTests(SynchronousTestCase):
    """
    The origin allow-list.
    """

    def test_default_same_origin_only(self) -> None:
        """
        Without a policy, a cross-origin request gets no CORS header.
        """
        server = Server(self)
        code, _, headers = server.post(
            {"route": "ping"}, {"Origin": "https://evil.example"}
        )
        self.assertEqual(code, 200)
        self.assertNotIn(b"access-control-allow-origin", headers)

    def test_allowed_origin_and_preflight(self) -> None:
        """
        An allowed origin gets its own origin back (and credentials when
        allowed), and a preflight answers methods and headers; a refused
        origin gets no CORS header at all.
        """
        server = Server(
            self, cors=CORSPolicy.allow(["https://app.example"], credentials=True)
        )
        _, _, headers = server.post(
            {"route": "ping"}, {"Origin": "https://app.example"}
        )
        self.assertEqual(
            headers[b"access-control-allow-origin"], [b"https://app.example"]
        )
        self.assertEqual(headers[b"access-control-allow-credentials"], [b"true"])
        code, headers, _ = server.request(
            "OPTIONS",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        self.assertEqual(code, 204)
        self.assertIn(b"POST", headers[b"access-control-allow-methods"][0])
        self.assertIn(b"content-type", headers[b"access-control-allow-headers"][0])
        code, headers, _ = server.request(
            "OPTIONS", headers={"Origin": "https://evil.example"}
        )
        self.assertNotIn(b"access-control-allow-origin", headers)
        self.assertNotIn(b"access-control-allow-methods", headers)

    def test_wildcard_with_credentials_refused(self) -> None:
        """
        '*' with credentials is a configuration error.
        """
        self.assertRaises(ValueError, CORSPolicy.allow, ["*"], True)


class LimitTests(SynchronousTestCase):
    """
    Each limit gives its PROTOCOL.md error.
    """

    def test_body_size(self) -> None:
        """
        A body over max_body gets 413, whether Content-Length says so or not;
        one at the limit is parsed.
        """
        server = Server(self, limits=Limits(max_body=64))
        fits = json.dumps({"route": "echo", "args": "x" * 30}).encode()
        self.assertLessEqual(len(fits), 64)
        code, body, _ = server.post(fits)
        self.assertEqual(code, 200)
        big = json.dumps({"route": "echo", "args": "x" * 100}).encode()
        code, body, _ = server.post(big)
        self.assertEqual((code, error_code(body)), (413, "too_large"))

    def test_json_depth(self) -> None:
        """
        Nesting past max_json_depth is 400 bad_json; far past the parser's
        own recursion limit too, without a traceback.
        """
        server = Server(self, limits=Limits(max_json_depth=5))
        code, body, _ = server.post({"route": "echo", "args": [[[1]]]})
        self.assertEqual(code, 200)
        code, body, _ = server.post({"route": "echo", "args": [[[[[[1]]]]]]})
        self.assertEqual((code, error_code(body)), (400, "bad_json"))
        deep = b"[" * 100_000 + b"]" * 100_000
        code, body, _ = server.post(deep)
        self.assertEqual((code, error_code(body)), (400, "bad_json"))

    def test_content_type(self) -> None:
        """
        A form post is refused with 415 before anything runs.
        """
        server = Server(self)
        code, _, content = server.request(
            "POST",
            data=b"route=ping",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(
            (code, error_code(json.loads(content))), (415, "bad_content_type")
        )

    def test_rate_limit(self) -> None:
        """
        Past the burst a session's calls get 429 with Retry-After; time
        refills the bucket; another session has its own bucket.
        """
        server = Server(self, limits=Limits(calls_per_second=2, call_burst=3))
        a = server.open()
        b = server.open()
        codes = [
            server.post({"route": "ping", "sessionId": a.session_id})[0]
            for _ in range(4)
        ]
        self.assertEqual(codes, [200, 200, 200, 429])
        code, body, headers = server.post({"route": "ping", "sessionId": a.session_id})
        self.assertEqual((code, error_code(body)), (429, "rate_limited"))
        self.assertIn(b"retry-after", headers)
        self.assertEqual(
            server.post({"route": "ping", "sessionId": b.session_id})[0], 200
        )
        server.clock.advance(1)
        self.assertEqual(
            server.post({"route": "ping", "sessionId": a.session_id})[0], 200
        )

    def test_session_limits(self) -> None:
        """
        Past max_sessions (and max_sessions_per_address) a stream gets 503
        with Retry-After; a closed session frees its place.
        """
        server = Server(self, limits=Limits(max_sessions=2, retry_after=7))
        a = server.open()
        server.open()
        code, headers, body = server.request("GET")
        self.assertEqual((code, error_code(json.loads(body))), (503, "unavailable"))
        self.assertEqual(headers[b"retry-after"], [b"7"])
        server.endpoint.sessions[a.session_id].close()
        server.pump()
        server.open()

        per_address = Server(self, limits=Limits(max_sessions_per_address=1))
        per_address.open()
        code, _, _ = per_address.request("GET")
        self.assertEqual(code, 503)

    def test_per_address_behind_a_trusted_proxy(self) -> None:
        """
        With the peer among C{trusted_proxies}, C{X-Forwarded-For} names the
        client that max_sessions_per_address counts: two clients behind the
        proxy each get their stream, and the second stream of one of them
        is refused.  Without it the header means nothing: the proxy's one
        address is every client's.
        """
        behind = Server(
            self,
            limits=Limits(max_sessions_per_address=1, trusted_proxies=("127.0.0.1",)),
        )
        first = {"X-Forwarded-For": "203.0.113.5"}
        second = {"X-Forwarded-For": "203.0.113.6"}
        a = behind.open(headers=first)
        behind.open(headers=second)
        code, _, _ = behind.request("GET", headers=first)
        self.assertEqual(code, 503)
        self.assertEqual(behind.endpoint.sessions_from("203.0.113.5"), 1)
        behind.endpoint.sessions[a.session_id].close()
        behind.pump()
        behind.open(headers=first)

        direct = Server(self, limits=Limits(max_sessions_per_address=1))
        direct.open(headers=first)
        code, _, _ = direct.request("GET", headers=second)
        self.assertEqual(code, 503)

    def test_call_bucket_per_forwarded_address(self) -> None:
        """
        POSTs without a session of this node share a bucket per client
        address: behind a trusted proxy, per forwarded address.
        """
        server = Server(
            self,
            limits=Limits(
                calls_per_second=1, call_burst=1, trusted_proxies=("127.0.0.0/8",)
            ),
        )
        first = {"X-Forwarded-For": "198.51.100.1"}
        second = {"X-Forwarded-For": "198.51.100.2"}
        self.assertEqual(server.post({"route": "ping"}, first)[0], 200)
        self.assertEqual(server.post({"route": "ping"}, first)[0], 429)
        self.assertEqual(server.post({"route": "ping"}, second)[0], 200)

    def test_pending_calls_limit(self) -> None:
        """
        Past max_pending_calls, a new call to that session fails at once
        with TooManyCalls and sends nothing.
        """
        server = Server(self, limits=Limits(max_pending_calls=2))
        a = server.open()
        calls = [server.endpoint.run("r", session_id=a.session_id) for _ in range(3)]
        server.pump()
        for call in calls:
            assert isinstance(call, Deferred)
        self.failureResultOf(calls[2], TooManyCalls)  # type: ignore[arg-type]
        for call in calls[:2]:
            self.assertNoResult(call)
            call.addErrback(lambda f: None)
        requests = [e for e in a.events if '"runRequest"' in e.data]
        self.assertEqual(len(requests), 2)

    def test_subscription_limit(self) -> None:
        """
        Past max_subscriptions a subscribeSSE to another route gets 429; to
        the same route again, the same subscription.
        """
        server = Server(self, limits=Limits(max_subscriptions=1))
        a = server.open()

        def body(route: str) -> dict[str, Any]:
            return {
                "route": "subscribeSSE",
                "args": [route, "/sse"],
                "sessionId": a.session_id,
            }

        code, first, _ = server.post(body("ping"))
        self.assertEqual(code, 200)
        self.assertEqual(server.post(body("ping"))[:2], (200, first))
        code, answer, _ = server.post(body("echo"))
        self.assertEqual((code, error_code(answer)), (429, "rate_limited"))

    def test_channel_limit(self) -> None:
        """
        Asking for more channels than max_channels is 403.
        """
        server = Server(self, limits=Limits(max_channels=1))
        code, _, _ = server.request("GET", f"{URL}?channels=news,admin")
        self.assertEqual(code, 403)
        server.open(f"{URL}?channels=news")


class ClientAddressTests(SynchronousTestCase):
    """
    L{client_address}: who the client is, behind proxies or not.
    """

    proxies = Limits(trusted_proxies=["127.0.0.1", "10.0.0.0/8"]).trusted_proxies

    def address(self, peer: str, *lines: bytes) -> str:
        return client_address(peer, list(lines), self.proxies)

    def test_untrusted_peer(self) -> None:
        """
        A peer that is no trusted proxy is the client, whatever it says.
        """
        self.assertEqual(self.address("192.0.2.9", b"203.0.113.5"), "192.0.2.9")

    def test_nearest_untrusted_hop(self) -> None:
        """
        Through trusted proxies, the client is the nearest hop that is not
        one; what the client wrote further left is not believed.
        """
        self.assertEqual(
            self.address("127.0.0.1", b"6.6.6.6, 203.0.113.5, 10.1.2.3"),
            "203.0.113.5",
        )
        # Header lines are one list, in order.
        self.assertEqual(
            self.address("127.0.0.1", b"6.6.6.6", b"203.0.113.5 ,10.1.2.3"),
            "203.0.113.5",
        )

    def test_only_proxies(self) -> None:
        """
        When every hop is a trusted proxy, the furthest one is the client.
        """
        self.assertEqual(self.address("127.0.0.1", b"10.0.0.7, 10.0.0.8"), "10.0.0.7")

    def test_no_header(self) -> None:
        self.assertEqual(self.address("127.0.0.1"), "127.0.0.1")

    def test_malformed_hop(self) -> None:
        """
        A malformed entry where a trusted proxy wrote leaves the last
        address that was trusted; one the client wrote is never reached.
        """
        self.assertEqual(self.address("127.0.0.1", b"10.0.0.1, junk"), "127.0.0.1")
        self.assertEqual(self.address("127.0.0.1", b"junk, 10.0.0.1"), "10.0.0.1")
        self.assertEqual(self.address("127.0.0.1", b"junk, 203.0.113.5"), "203.0.113.5")
        self.assertEqual(self.address("127.0.0.1", b"\xff\xfe"), "127.0.0.1")

    def test_mapped_and_v6(self) -> None:
        """
        An IPv4 peer seen through a dual-stack socket is still trusted; IPv6
        hops are addresses like any other.
        """
        self.assertEqual(
            self.address("::ffff:127.0.0.1", b"2001:db8::1"), "2001:db8::1"
        )

    def test_not_an_address(self) -> None:
        """
        A peer that is not an IP address (a UNIX socket) is the client.
        """
        self.assertEqual(self.address("/run/sse.sock", b"203.0.113.5"), "/run/sse.sock")

    def test_bad_network(self) -> None:
        """
        A trusted proxy that is no address or network is refused when the
        limits are made, not when a client comes.
        """
        self.assertRaises(ValueError, Limits, trusted_proxies=["nginx"])
