"""
Admin surfaces not public (issue 15, point 7): C{/metrics} with auth on.

Real servers on 127.0.0.1 built by the tap from its options, requested with
treq, with real JWTs (HS256, and RS256 with a key made here):

  - without auth, C{--metrics} is public, as it always was, unless a
    C{--metrics-key} is given;
  - with C{--jwt-secret} / C{--jwt-public-key}, or an embedded endpoint's
    own authorizer, an anonymous scrape gets C{401} JSON, a token without
    the admin claim C{403} JSON, a token with C{"graphsse": {"admin": true}}
    or the metrics key the metrics;
  - C{--metrics-port} serves them on a listener of its own (no token asked
    there) and not at all on the public port, with C{--workers} too
    (worker 0 serves it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import treq
from attrs import frozen
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import JWTPrincipal, SSEBackend, Unauthorized, tap
from txgraphsse._admin import AdminGuard, authorizer_of, is_admin
from txgraphsse._workers import WorkerSupervisor

from ._cluster import Node, children_of, free_port, poll
from ._redis import RedisServer
from .test_workers import _FakeReactor

#: An HS256 secret (PyJWT wants 32 bytes at least).
SECRET = "a test secret that is long enough for HS256"

#: A metrics key.
KEY = "k3y-0f-the-metr1cs-scraper"

#: The claims of an admin.
ADMIN: dict[str, Any] = {"graphsse": {"admin": True}}

#: A sample every scrape has.
SAMPLE = b"graphsse_sessions{"


def token(key: Any, algorithm: str = "HS256", **claims: Any) -> str:
    """
    A JWT of C{claims} signed with C{key}, valid for five minutes unless
    C{claims} say otherwise.
    """
    claims.setdefault("exp", int(time.time()) + 300)
    return jwt.encode(claims, key, algorithm=algorithm)


def _options(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def _track(site: Site) -> Any:
    """
    Make C{site} remember its connections; returns a function giving a
    L{Deferred} that fires once all of them so far have closed.
    """
    lost: list[Deferred[None]] = []
    build = site.buildProtocol

    def buildProtocol(addr: IAddress) -> Any:
        protocol = build(addr)
        assert protocol is not None
        done: Deferred[None] = Deferred()
        lost.append(done)
        original = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                original(reason)
            finally:
                done.callback(None)

        protocol.connectionLost = connectionLost
        return protocol

    site.buildProtocol = buildProtocol  # type: ignore[method-assign]
    return lambda: DeferredList([d for d in lost if not d.called])


@frozen
class Answer:
    """
    One response: status, headers of interest, body.
    """

    code: int
    body: bytes
    content_type: str
    authenticate: str | None
    cache_control: str | None

    def error(self) -> Any:
        """
        The C{code} of a JSON error body (PROTOCOL.md's form).
        """
        assert self.content_type.startswith("application/json"), self.content_type
        decoded = json.loads(self.body)
        assert set(decoded) == {"error"}, decoded
        assert set(decoded["error"]) == {"code", "message"}, decoded
        return decoded["error"]["code"]


class ServedCase(TestCase):
    """
    Servers made by the tap, listening on 127.0.0.1, and a treq client.
    """

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, False)
        self.closed: list[Any] = []
        self.ports: list[IListeningPort] = []
        self.backends: list[SSEBackend] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))

    async def _clean_up(self) -> None:
        for backend in self.backends:
            for endpoint in backend.endpoints.values():
                endpoint.terminate()
        await self.pool.closeCachedConnections()
        for port in self.ports:
            await port.stopListening()
        for closed in self.closed:
            await closed()

    def listen(self, site: Site) -> str:
        """
        Serve C{site} on a free port of 127.0.0.1; its base URL.
        """
        self.closed.append(_track(site))
        tcp: IReactorTCP = reactor
        port = tcp.listenTCP(0, site, interface="127.0.0.1")
        self.ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}"

    def serve(self, *argv: str, backend: SSEBackend | None = None) -> str:
        """
        The tap's site for C{argv} (and C{backend}), served; its base URL.
        """
        options = _options(*argv)
        built, _, site = tap.build(options, backend)
        self.backends.append(built)
        self.options = options
        self.backend = built
        return self.listen(site)

    async def get(self, url: str, authorization: str | None = None) -> Answer:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await treq.get(url, headers=headers, pool=self.pool)
        body = await treq.content(response)

        def header(name: bytes) -> str | None:
            values = response.headers.getRawHeaders(name)
            return None if not values else values[0].decode("latin-1")

        return Answer(
            response.code,
            body,
            header(b"content-type") or "",
            header(b"www-authenticate"),
            header(b"cache-control"),
        )

    def assertMetrics(self, answer: Answer) -> None:
        self.assertEqual(answer.code, 200, answer.body)
        self.assertIn(SAMPLE, answer.body)
        self.assertTrue(answer.content_type.startswith("text/plain"))

    def assertRefused(self, answer: Answer, code: int) -> None:
        """
        C{answer} is a JSON refusal with C{code}: C{401 unauthorized} (and a
        C{WWW-Authenticate} challenge) or C{403 forbidden}; no metrics in it.
        """
        self.assertEqual(answer.code, code, answer.body)
        self.assertNotIn(b"graphsse_", answer.body)
        self.assertEqual(answer.cache_control, "no-store")
        if code == 401:
            self.assertEqual(answer.error(), "unauthorized")
            self.assertEqual(answer.authenticate, "Bearer")
        else:
            self.assertEqual(answer.error(), "forbidden")


class WithoutAuthTests(ServedCase):
    """
    No authorizer: C{/metrics} is public, as before, unless a key is given.
    """

    async def test_public(self) -> None:
        """
        Without auth and without a key, anyone reads C{/metrics}, channel
        names and all.
        """
        base = self.serve("--metrics", "/metrics", "--channels", "news")
        answer = await self.get(base + "/metrics")
        self.assertMetrics(answer)
        self.assertIn(b'channel="news"', answer.body)
        self.assertIsNone(answer.cache_control)

    async def test_key_without_auth(self) -> None:
        """
        Without auth, C{--metrics-key} is asked for all the same: anonymous
        or with a wrong key C{401}, with the key (either scheme) the metrics.
        """
        base = self.serve("--metrics", "/metrics", "--metrics-key", KEY)
        url = base + "/metrics"
        self.assertRefused(await self.get(url), 401)
        self.assertRefused(await self.get(url, "Bearer not-" + KEY), 401)
        self.assertRefused(await self.get(url, "Basic " + KEY), 401)
        self.assertMetrics(await self.get(url, "Bearer " + KEY))
        self.assertMetrics(await self.get(url, "apikey " + KEY))
        self.assertMetrics(await self.get(url, "ApiKey  " + KEY))


class JWTSecretTests(ServedCase):
    """
    C{--jwt-secret}: the metrics are for admins' tokens and the key.
    """

    def setUp(self) -> None:
        super().setUp()
        self.url = (
            self.serve(
                "--metrics",
                "/metrics",
                "--jwt-secret",
                SECRET,
                "--metrics-key",
                KEY,
                "--channels",
                "news",
            )
            + "/metrics"
        )

    async def test_anonymous_refused(self) -> None:
        """
        A scrape without credentials gets C{401} JSON, and no channel
        names.
        """
        self.assertRefused(await self.get(self.url), 401)

    async def test_admin_token(self) -> None:
        """
        A token with C{"graphsse": {"admin": true}}, signed with the
        secret, reads the metrics (marked not to be cached).
        """
        answer = await self.get(self.url, "Bearer " + token(SECRET, **ADMIN))
        self.assertMetrics(answer)
        self.assertIn(b'channel="news"', answer.body)
        self.assertEqual(answer.cache_control, "no-store")

    async def test_token_without_admin_claim(self) -> None:
        """
        A valid token that is not an admin's gets C{403} JSON: one that
        may join every channel, one with a top-level C{admin}, one whose
        claim is the string C{"true"}.
        """
        for claims in (
            {"sub": "alice", "subscribe": ["*"]},
            {"sub": "alice", "admin": True},
            {"graphsse": {"admin": "true"}},
            {"graphsse": True},
        ):
            answer = await self.get(self.url, "Bearer " + token(SECRET, **claims))
            self.assertRefused(answer, 403)

    async def test_bad_tokens(self) -> None:
        """
        An admin's claims in a token that is expired, signed with another
        secret, or without C{exp}, get C{401}.
        """
        expired = token(SECRET, exp=int(time.time()) - 10, **ADMIN)
        forged = token("another secret that is long enough too", **ADMIN)
        forever = jwt.encode(ADMIN, SECRET, algorithm="HS256")
        for bad in (expired, forged, forever, "not.a.token"):
            self.assertRefused(await self.get(self.url, "Bearer " + bad), 401)

    async def test_token_in_query(self) -> None:
        """
        The token may come where the authorizer reads it, C{?token=} too.
        """
        admin = token(SECRET, **ADMIN)
        self.assertMetrics(await self.get(self.url + "?token=" + admin))
        other = token(SECRET, sub="bob")
        self.assertRefused(await self.get(self.url + "?token=" + other), 403)

    async def test_metrics_key(self) -> None:
        """
        The metrics key works as C{Bearer} or C{apikey}; a wrong key (or one
        a byte short or long) does not.
        """
        self.assertMetrics(await self.get(self.url, "Bearer " + KEY))
        self.assertMetrics(await self.get(self.url, "apikey " + KEY))
        for wrong in (KEY[:-1], KEY + "x", KEY.upper(), SECRET):
            self.assertRefused(await self.get(self.url, "Bearer " + wrong), 401)
            self.assertRefused(await self.get(self.url, "apikey " + wrong), 401)

    async def test_stream_unchanged(self) -> None:
        """
        The guard is on C{/metrics} alone: the endpoint still takes any
        valid token, admin or not.
        """
        response = await treq.get(
            self.url.replace("/metrics", "/sse"),
            headers={"Authorization": "Bearer " + token(SECRET, sub="bob")},
            pool=self.pool,
            unbuffered=True,
        )
        self.assertEqual(response.code, 200)
        self.backend.endpoints["/sse"].terminate()
        self.assertIn(b"setId", await treq.content(response))


class JWTPublicKeyTests(ServedCase):
    """
    C{--jwt-public-key}: RS256 admins' tokens.
    """

    async def test_rs256(self) -> None:
        """
        An admin's token signed with the private key reads the metrics; the
        same claims signed by another key get C{401}, a non-admin's C{403}.
        """
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-test-admin-"))
        self.addCleanup(shutil.rmtree, directory, True)
        public = directory / "public.pem"
        public.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        url = self.serve("--metrics", "/metrics", "--jwt-public-key", str(public))
        url += "/metrics"
        self.assertRefused(await self.get(url), 401)
        good = token(private, "RS256", **ADMIN)
        self.assertMetrics(await self.get(url, "Bearer " + good))
        forged = token(other, "RS256", **ADMIN)
        self.assertRefused(await self.get(url, "Bearer " + forged), 401)
        plain = token(private, "RS256", sub="carol")
        self.assertRefused(await self.get(url, "Bearer " + plain), 403)
        # An HS256 token "signed" with the public key's text: refused.
        confused = token(SECRET, "HS256", **ADMIN)
        self.assertRefused(await self.get(url, "Bearer " + confused), 401)


@frozen
class _User:
    """
    What the embedded authorizer says a client is.
    """

    claims: dict[str, Any]


class EmbeddedAuthorizerTests(ServedCase):
    """
    An application's endpoint with its own authorizer (not the default
    L{AllowAll}): its metrics need an admin too, even without JWT options.
    """

    def backend_with(self, deferred: bool) -> SSEBackend:
        """
        A backend whose C{/sse} authorizer knows C{X-User: admin} (an
        admin) and C{X-User: user}, takes no C{X-User} for anonymous and
        refuses any other, answering at once or later.
        """
        backend = SSEBackend(reactor=reactor)

        def who(name: str) -> _User | None:
            if not name:
                return None
            if name == "admin":
                return _User(ADMIN)
            if name == "user":
                return _User({"graphsse": {"admin": False}})
            raise Unauthorized("who are you?")

        def authorize(request: Any) -> Any:
            name = (request.getHeader(b"x-user") or b"").decode()
            if not deferred:
                return who(name)
            return deferLater(reactor, 0.01, who, name)

        backend.setup_sse("/sse", authorize=authorize)
        return backend

    async def check(self, deferred: bool) -> None:
        url = (
            self.serve("--metrics", "/metrics", backend=self.backend_with(deferred))
            + "/metrics"
        )

        async def as_(user: str) -> Answer:
            response = await treq.get(url, headers={"X-User": user}, pool=self.pool)
            body = await treq.content(response)
            content_type = response.headers.getRawHeaders(b"content-type")[0]
            return Answer(response.code, body, content_type.decode(), None, None)

        # Anonymous (the authorizer says None), and one it refuses.
        self.assertRefused(await self.get(url), 401)
        self.assertEqual((await as_("nobody")).code, 401)
        self.assertEqual((await as_("nobody")).error(), "unauthorized")
        self.assertEqual((await as_("user")).code, 403)
        self.assertEqual((await as_("user")).error(), "forbidden")
        self.assertMetrics(await as_("admin"))

    async def test_authorizer(self) -> None:
        """
        An authorizer that answers at once.
        """
        await self.check(deferred=False)

    async def test_deferred_authorizer(self) -> None:
        """
        An authorizer that answers with a L{Deferred}.
        """
        await self.check(deferred=True)


class MetricsPortTests(ServedCase):
    """
    C{--metrics-port}: the metrics on a listener of their own.
    """

    def start(self, *argv: str) -> tuple[str, str]:
        """
        C{makeService} for C{argv} on free ports of 127.0.0.1, started; the
        base URLs of its public port and of its metrics port.
        """
        public, private = free_port(), free_port()
        options = _options(
            "--port",
            f"tcp:{public}:interface=127.0.0.1",
            "--metrics-port",
            str(private),
            *argv,
        )
        self.assertEqual(options["metrics-port"], f"tcp:{private}:interface=127.0.0.1")
        top = tap.makeService(options)
        assert isinstance(top, MultiService)
        listeners = [s for s in top if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(listeners), 2)
        for service in listeners:
            assert isinstance(service.factory, Site)
            self.closed.append(_track(service.factory))
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        return f"http://127.0.0.1:{public}", f"http://127.0.0.1:{private}"

    async def test_separate_port(self) -> None:
        """
        With C{--jwt-secret}, the metrics port answers without a token, and
        the public port has no C{/metrics} at all, not even for an admin.
        """
        public, private = self.start("--jwt-secret", SECRET)
        self.assertMetrics(await self.get(private + "/metrics"))
        answer = await self.get(public + "/metrics", "Bearer " + token(SECRET, **ADMIN))
        self.assertEqual(answer.code, 404)
        self.assertNotIn(b"graphsse_", answer.body)
        # The metrics port serves nothing else.
        self.assertEqual((await self.get(private + "/sse")).code, 404)
        self.assertEqual((await self.get(private + "/")).code, 404)

    async def test_separate_port_with_key(self) -> None:
        """
        A C{--metrics-key} given with C{--metrics-port} is asked for there.
        """
        _, private = self.start("--metrics-key", KEY, "--metrics", "/m")
        self.assertRefused(await self.get(private + "/m"), 401)
        self.assertMetrics(await self.get(private + "/m", "apikey " + KEY))


class OptionsTests(SynchronousTestCase):
    """
    The metrics options, parsed.
    """

    def test_defaults(self) -> None:
        """
        No metrics options: no key, no port.
        """
        options = _options()
        for name in ("metrics", "metrics-key", "metrics-port", "metrics-interface"):
            self.assertIsNone(options[name])

    def test_metrics_port(self) -> None:
        """
        A numeric C{--metrics-port} listens on 127.0.0.1, or on
        C{--metrics-interface} (an IPv6 one with its colons escaped), and
        serves C{/metrics} unless C{--metrics} says where; a description is
        taken as it is.
        """
        options = _options("--metrics-port", "9100")
        self.assertEqual(options["metrics-port"], "tcp:9100:interface=127.0.0.1")
        self.assertEqual(options["metrics"], "/metrics")
        options = _options("--metrics-port", "9100", "--metrics-interface", "::1")
        self.assertEqual(options["metrics-port"], "tcp:9100:interface=\\:\\:1")
        options = _options("--metrics-port", "unix:/run/m.sock", "--metrics", "x")
        self.assertEqual(options["metrics-port"], "unix:/run/m.sock")
        self.assertEqual(options["metrics"], "/x")

    def test_key_file(self) -> None:
        """
        C{--metrics-key-file} reads the key, without its line end.
        """
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-test-admin-"))
        self.addCleanup(shutil.rmtree, directory, True)
        path = directory / "key"
        path.write_text(KEY + "\n")
        options = _options("--metrics", "/metrics", "--metrics-key-file", str(path))
        self.assertEqual(options["metrics-key"], KEY)
        path.write_text("\n")
        self.assertRaises(
            UsageError, _options, "--metrics", "/m", "--metrics-key-file", str(path)
        )
        missing = str(directory / "missing")
        self.assertRaises(
            UsageError, _options, "--metrics", "/m", "--metrics-key-file", missing
        )

    def test_refused(self) -> None:
        """
        Both a key and a key file, an empty key, a key or an interface with
        nothing to serve, an interface with a description, and under
        C{--workers} a metrics port that is not TCP, are usage errors.
        """
        for argv in (
            ["--metrics", "/m", "--metrics-key", "a", "--metrics-key-file", "f"],
            ["--metrics", "/m", "--metrics-key", ""],
            ["--metrics-key", KEY],
            ["--metrics-interface", "127.0.0.1"],
            ["--metrics-port", "tcp:9100", "--metrics-interface", "127.0.0.1"],
            [
                "--workers",
                "2",
                "--redis",
                "redis://127.0.0.1:1/0",
                "--metrics-port",
                "unix:/run/m.sock",
            ],
        ):
            self.assertRaises(UsageError, _options, *argv)


class GuardTests(SynchronousTestCase):
    """
    L{AdminGuard} and its helpers on their own.
    """

    def test_nothing_to_check(self) -> None:
        """
        A guard with neither an authorizer nor a key, or with an empty key,
        is refused: it would let no one in, or anyone.
        """
        self.assertRaises(ValueError, AdminGuard, Resource())
        self.assertRaises(ValueError, AdminGuard, Resource(), None, [""])

    def test_is_admin(self) -> None:
        """
        Only the JSON C{true} at C{graphsse.admin} makes an admin.
        """
        self.assertTrue(is_admin(JWTPrincipal(None, frozenset(), ADMIN)))
        for claims in ({}, {"admin": True}, {"graphsse": {"admin": 1}}):
            self.assertFalse(is_admin(JWTPrincipal(None, frozenset(), claims)))
        self.assertFalse(is_admin(None))
        self.assertFalse(is_admin("admin"))

    def test_authorizer_of(self) -> None:
        """
        A backend's admin authorizer is its first endpoint's that is not
        the default; none where every endpoint lets anyone in.
        """
        backend = SSEBackend()
        open_ = backend.setup_sse("/open")
        self.addCleanup(open_.terminate)
        self.assertIsNone(authorizer_of(backend))
        closed = backend.setup_sse("/closed", authorize=lambda request: None)
        self.addCleanup(closed.terminate)
        self.assertIs(authorizer_of(backend), closed.authorizer)


class WorkersTests(SynchronousTestCase):
    """
    C{--metrics-port} with C{--workers}: the parent binds it, worker 0
    alone serves it.
    """

    def test_worker_zero_gets_the_port(self) -> None:
        """
        The supervisor binds the metrics port on 127.0.0.1 and hands it to
        worker 0 (after the public ports' descriptors), never to another.
        """
        options = _options(
            "--workers",
            "2",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--metrics-port",
            "0",
        )
        fake = _FakeReactor()
        supervisor = WorkerSupervisor(options, reactor=fake)
        supervisor.startService()
        self.addCleanup(supervisor._close_sockets)
        self.addCleanup(supervisor._forget_metrics)
        port = supervisor.metrics_port
        assert port is not None
        self.assertNotIn(port, supervisor.ports)
        sock = supervisor._metrics_socket
        assert sock is not None
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        (zero, _, fds_zero), (one, _, fds_one) = fake.spawned
        config = json.loads(zero.written)
        self.assertEqual(config["metrics_listen"], {"fd": 4, "family": 2})
        self.assertEqual(fds_zero[4], sock.fileno())
        self.assertNotIn("metrics_listen", json.loads(one.written))
        self.assertNotIn(4, fds_one)
        self.assertIsNotNone(config["metrics"])
        supervisor._close_sockets()
        self.assertIsNone(supervisor.metrics_port)


class WorkerProcessTests(TestCase):
    """
    A real C{twistd -n graphsse --workers 2 --metrics-port}.
    """

    timeout = 90

    def setUp(self) -> None:
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.pool = HTTPConnectionPool(reactor, False)
        self.addCleanup(self.pool.closeCachedConnections)

    async def test_workers_metrics_port(self) -> None:
        """
        The metrics port answers (with the numbers of both workers'
        snapshots); the public port has no C{/metrics}.
        """
        metrics = free_port()
        node = Node(
            self,
            "workers",
            free_port(),
            self.redis.url,
            "--workers",
            "2",
            "--metrics-port",
            str(metrics),
            "--jwt-secret",
            SECRET,
        )

        await node.listening(node.port)
        await poll(lambda: len(children_of(node.pid)) == 2, "two workers", 20)
        url = f"http://127.0.0.1:{metrics}/metrics"
        answer: list[Any] = []

        async def scrape() -> None:
            response = await treq.get(url, pool=self.pool, timeout=2)
            answer[:] = [response.code, await treq.content(response)]

        deadline = time.monotonic() + 20
        while True:
            try:
                await scrape()
                if answer[0] == 200:
                    break
            except Exception:
                pass
            self.assertLess(time.monotonic(), deadline, f"no metrics: {answer}")
            await deferLater(reactor, 0.1, lambda: None)
        self.assertIn(SAMPLE, answer[1])
        response = await treq.get(
            f"http://127.0.0.1:{node.port}/metrics",
            headers={"Authorization": "Bearer " + token(SECRET, **ADMIN)},
            pool=self.pool,
        )
        await treq.content(response)
        self.assertEqual(response.code, 404)
        os.kill(node.pid, signal.SIGTERM)
        await node.exited(10)
