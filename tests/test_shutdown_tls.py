"""
Shutdown at scale, TLS, HTTP/2 and metrics:

  - a real C{twistd -n graphsse} with 1,000 open streams stops on
    C{SIGTERM} within 5 s, every stream getting its C{shutdown} event and
    the chunked terminator;
  - 10,000 in-memory streams shut down within 5 s, leaving nothing behind;
  - the tap's C{ssl:} port serves streams and calls over HTTPS (HTTP/1.1)
    and, by ALPN, over HTTP/2 with many streams on one connection;
  - the Prometheus metrics of a backend, and C{--metrics} wiring.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import tcp
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txgraphsse import (
    EventStreamParser,
    ServerSentEvent,
    SessionClosed,
    SSEBackend,
    tap,
)
from txgraphsse.metrics import MetricsResource

from ._rawclient import RawSSE, open_stream, raise_fd_limit
from .test_session import LAST_CHUNK, SSEServer, StreamConnection, parse_response
from .test_tap import _free_port, start_twistd

#: Seconds any single wait may take; also the issue's bound on shutdown.
WAIT = 5.0

#: The last event a stream gets when the server stops.
SHUTDOWN = '{"route":"shutdown","args":null}'


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _sleep(seconds: float) -> Deferred[None]:
    return deferLater(_reactor(), seconds, lambda: None)


async def _poll(predicate: Callable[[], bool], what: str, wait: float = WAIT) -> None:
    """
    Wait (on the real reactor) until C{predicate()} holds, for C{wait} s.
    """
    deadline = time.monotonic() + wait
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await _sleep(0.01)


def _sockets() -> set[Any]:
    """
    The TCP connections and ports the reactor watches.
    """
    reactor = _reactor()
    return {
        s
        for s in [*reactor.getReaders(), *reactor.getWriters()]
        if isinstance(s, (tcp.Connection, tcp.Port))
    }


def _within(deferred: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """
    C{deferred}, failing with a timeout after C{seconds}.
    """
    return deferred.addTimeout(seconds, _reactor())


# 1. SIGTERM on a real twistd with 1,000 open streams.


class TwistdShutdownTests(TestCase):
    """
    A real C{twistd -n graphsse} process with many open streams.
    """

    STREAMS = 1_000

    def _twistd(self, *argv: str) -> tuple[subprocess.Popen[bytes], Path]:
        return start_twistd(self, *argv)

    async def _first_stream(
        self, process: subprocess.Popen[bytes], port: int, log: Path
    ) -> RawSSE:
        """
        Open one stream, retrying until twistd listens.
        """
        deadline = time.monotonic() + 3 * WAIT
        while True:
            if process.poll() is not None:
                self.fail(f"twistd exited early:\n{log.read_text()}")
            try:
                stream: RawSSE = await _within(open_stream(_reactor(), port))
            except Exception:
                if time.monotonic() > deadline:
                    self.fail(f"twistd did not listen:\n{log.read_text()}")
                await _sleep(0.05)
                continue
            return stream

    async def test_sigterm_with_1000_streams(self) -> None:
        """
        On C{SIGTERM} to its own PID, C{twistd -n graphsse} holding 1,000
        open streams sends each a last C{shutdown} event and the chunked
        terminator, and exits within 5 s with C{-SIGTERM} and no traceback.
        """
        raise_fd_limit()  # before the child starts: it inherits the limit
        port = _free_port()
        process, log = self._twistd(
            "--port", f"tcp:{port}:interface=127.0.0.1", "--keepalive", "0"
        )
        streams = [await self._first_stream(process, port, log)]
        self.addCleanup(self._drop, streams)
        while len(streams) < self.STREAMS:
            # Batches below the listen backlog: no SYN is dropped.
            batch = min(50, self.STREAMS - len(streams))
            opened = await _within(
                gatherResults([open_stream(_reactor(), port) for _ in range(batch)])
            )
            streams.extend(opened)
        self.assertEqual(len({s.session_id for s in streams}), self.STREAMS)

        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        await _within(gatherResults([s.closed for s in streams]))
        await _poll(lambda: process.poll() is not None, "twistd to exit")
        elapsed = time.monotonic() - started
        text = log.read_text()
        self.assertLess(elapsed, WAIT, text[-2000:])
        self.assertEqual(process.returncode, -signal.SIGTERM, text[-2000:])
        self.assertNotIn("Traceback", text)
        self.assertNotIn("Unhandled", text)
        ended = [s for s in streams if s.ended]
        told = [s for s in streams if s.events and s.events[-1].type == "shutdown"]
        self.assertEqual(len(ended), self.STREAMS)
        self.assertEqual(len(told), self.STREAMS)
        self.assertTrue(all(s.events[-1].data == SHUTDOWN for s in streams))

    async def _drop(self, streams: list[RawSSE]) -> None:
        """
        Close every client connection still open, and wait for them.
        """
        left = [s for s in streams if not s.closed.called]
        for stream in left:
            if stream.transport is not None:
                cast(Any, stream.transport).abortConnection()
        if left:
            await _within(gatherResults([s.closed for s in left]))


# 2. 10,000 in-memory streams.


class ShutdownScaleTests(SynchronousTestCase):
    """
    L{SSEEndpoint.shutdown} of many streams, in memory.
    """

    SESSIONS = 10_000

    def test_shutdown_10000_streams(self) -> None:
        """
        Shutting down 10,000 open streams (one in 100 with a pending call)
        completes within 5 s of wall-clock time: every stream gets the
        C{shutdown} event and the last chunk, every pending call fails with
        L{SessionClosed}, and no session, call or timer is left.
        """
        server = SSEServer(on_connection=None, on_connection_close=None)
        endpoint, clock = server.endpoint, server.clock
        connections: list[StreamConnection] = [
            server.connect() for _ in range(self.SESSIONS)
        ]
        self.assertEqual(len(endpoint.sessions), self.SESSIONS)
        calls = [
            endpoint.run("work", session_id=c.session_id)
            for c in connections[:: self.SESSIONS // 100]
        ]
        self.assertEqual(len(calls), 100)
        server.turn()

        started = time.monotonic()
        done = endpoint.shutdown()
        fired: list[object] = []
        done.addBoth(fired.append)
        for _ in range(1000):
            if fired:
                break
            clock.advance(0.02)
        elapsed = time.monotonic() - started
        self.assertEqual(fired, [None])
        self.assertLess(elapsed, WAIT)

        self.assertEqual(endpoint.sessions, {})
        self.assertEqual(len(endpoint.calls), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        for call in calls:
            self.failureResultOf(cast(Deferred[Any], call), SessionClosed)
        retries: list[int] = []
        for connection in connections:
            raw = connection.transport.value()
            self.assertTrue(raw.endswith(LAST_CHUNK))
            response = parse_response(raw)
            self.assertTrue(response.complete)
            parser = EventStreamParser()
            last = parser.feed(response.body)[-1]
            self.assertEqual((last.type, last.data), ("shutdown", SHUTDOWN))
            self.assertFalse(connection.transport.connected)
            assert parser.retry is not None
            retries.append(parser.retry)
        # Each stream was told when to come back, spread over the window.
        retry = endpoint.retry
        self.assertTrue(all(retry <= r < retry + 5000 for r in retries), retries[:5])
        self.assertGreater(len(set(retries)), 1000)
        self.assertGreater(max(retries) - min(retries), 4000)


# 3 and 4. TLS: HTTP/1.1 and HTTP/2 by ALPN.


def _self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """
    A self-signed certificate for C{localhost} and its key, as PEM files in
    C{directory}: (key path, certificate path, certificate PEM).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(pem)
    return key_path, cert_path, pem


class RawHTTP(Protocol):
    """
    Sends one request as it is and keeps every byte of the answer.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


class H2Stream:
    """
    One HTTP/2 stream as the client sees it.
    """

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []
        self.raw = b""
        self.ended = False

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def session_id(self) -> str | None:
        for event in self.events:
            message = json.loads(event.data)
            if message.get("route") == "setId":
                return cast(str, message["args"])
        return None


class H2Client(Protocol):
    """
    A small HTTP/2 client over the C{h2} package: C{get} opens a stream.
    """

    def __init__(self) -> None:
        self.conn = H2Connection(
            H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.streams: dict[int, H2Stream] = {}
        self.negotiated: bytes | None = None
        self.ready: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.changed: Callable[[], None] = lambda: None

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self._flush()
        self.ready.callback(None)

    def _flush(self) -> None:
        assert self.transport is not None
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def get(self, path: str) -> H2Stream:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (":method", "GET"),
                (":path", path),
                (":scheme", "https"),
                (":authority", "localhost"),
                ("accept", "text/event-stream"),
            ],
            end_stream=True,
        )
        self._flush()
        stream = self.streams[stream_id] = H2Stream()
        return stream

    def dataReceived(self, data: bytes) -> None:
        if self.negotiated is None and self.transport is not None:
            self.negotiated = getattr(self.transport, "negotiatedProtocol", None)
        for event in self.conn.receive_data(data):
            if isinstance(event, ResponseReceived):
                self.streams[event.stream_id].headers = [
                    (str(k), str(v)) for k, v in event.headers or ()
                ]
            elif isinstance(event, DataReceived):
                stream = self.streams[event.stream_id]
                chunk = event.data or b""
                stream.raw += chunk
                stream.events.extend(stream.parser.feed(chunk))
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, (StreamEnded, StreamReset)):
                self.streams[event.stream_id].ended = True
        self._flush()
        self.changed()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


class TLSTests(TestCase):
    """
    The tap's C{ssl:} port, with the ALPN C{with_http2} adds.
    """

    async def _serve(self) -> None:
        """
        Listen on an C{ssl:} port of C{127.0.0.1} with the tap's site; set
        C{self.port}, C{self.backend}, C{self.trust}.  Cleanup shuts the
        backend down, closes the clients, waits for the server's sockets and
        stops listening.
        """
        reactor = _reactor()
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-tls-"))
        self.addCleanup(shutil.rmtree, directory, True)
        key, cert, pem = _self_signed(directory)
        self.trust = Certificate.loadPEM(pem)
        options = tap.Options()
        options.parseOptions(
            ["--port", f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"]
        )
        self.backend, self.endpoint, site = tap.build(options)
        sockets = _sockets()
        listening: IListeningPort = await tap.with_http2(
            serverFromString(reactor, options["ports"][0])
        ).listen(site)
        self.port: int = cast(Any, listening.getHost()).port
        self.clients: list[Protocol] = []

        async def stop() -> None:
            await _within(self.backend.shutdown())
            for client in self.clients:
                if client.transport is not None:
                    client.transport.loseConnection()
            await _within(gatherResults([cast(Any, c).closed for c in self.clients]))
            await maybeDeferred(listening.stopListening)
            await _poll(lambda: _sockets() <= sockets, "the server's sockets to close")

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))

    def _tls(self, protocols: list[bytes] | None = None) -> Any:
        creator = optionsForClientTLS(
            "localhost", trustRoot=self.trust, acceptableProtocols=protocols
        )
        return wrapClientTLS(
            creator, TCP4ClientEndpoint(_reactor(), "127.0.0.1", self.port, WAIT)
        )

    async def test_https_stream_and_ping(self) -> None:
        """
        Over HTTPS (HTTP/1.1, no ALPN offered) a stream gets C{retry:} and
        its C{setId}, the session being open on the server; a C{POST} of
        C{{"route":"ping"}} answers C{{"args":"pong"}}.
        """
        await self._serve()
        stream = RawSSE("/sse")
        self.clients.append(stream)
        await _within(connectProtocol(self._tls(), stream))
        await _within(stream.opened)
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.parser.retry, 2000)
        self.assertIn(stream.session_id, self.endpoint.sessions)
        assert stream.transport is not None
        self.assertIn(
            getattr(stream.transport, "negotiatedProtocol", None), (None, b"http/1.1")
        )

        body = b'{"route":"ping"}'
        post = RawHTTP(
            b"POST /sse HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.clients.append(post)
        await _within(connectProtocol(self._tls(), post))
        await _within(post.closed)
        head, _, answer = post.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertEqual(json.loads(answer), {"args": "pong"})

        started = time.monotonic()
        await _within(self.backend.shutdown())
        await _within(stream.closed)
        # The TLS close alert goes out at once: shutdown does not wait out
        # its 3 s drain for a connection it closed itself.
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertTrue(stream.ended)
        self.assertEqual(stream.events[-1].type, "shutdown")

    async def test_http2_streams(self) -> None:
        """
        A client offering ALPN C{h2} speaks HTTP/2: a C{GET /sse} answers
        C{200} C{text/event-stream} with no C{connection} header, and its
        DATA frames carry C{retry:} and the C{setId} event; 8 streams on one
        connection each get their own session; on shutdown each stream gets
        the C{shutdown} event and ends.
        """
        await self._serve()
        client = H2Client()
        self.clients.append(client)
        await _within(connectProtocol(self._tls([b"h2"]), client))
        first = client.get("/sse")
        until = _poll
        await until(lambda: first.session_id is not None, "the first setId")
        self.assertEqual(client.negotiated, b"h2")
        self.assertEqual(first.header(":status"), ["200"])
        self.assertEqual(
            first.header("content-type"), ["text/event-stream; charset=utf-8"]
        )
        self.assertEqual(first.header("connection"), [])
        self.assertTrue(first.raw.startswith(b"retry: 2000\n\n"), first.raw[:80])
        self.assertEqual(first.parser.retry, 2000)

        more = [client.get("/sse") for _ in range(7)]
        streams = [first, *more]
        await until(lambda: all(s.session_id is not None for s in streams), "8 setIds")
        ids = {s.session_id for s in streams}
        self.assertEqual(len(ids), 8)
        self.assertEqual(set(self.endpoint.sessions), ids)

        await _within(self.backend.shutdown())
        await until(lambda: all(s.ended for s in streams), "the streams to end")
        for stream in streams:
            self.assertEqual(stream.events[-1].type, "shutdown")
            self.assertEqual(stream.events[-1].data, SHUTDOWN)


# 5. Metrics.


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a Prometheus text exposition, by name and labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


PATH = (("path", "/sse"),)


class MetricsTests(SynchronousTestCase):
    """
    L{MetricsResource} over a backend with some activity, and C{--metrics}.
    """

    def _post(self, server: SSEServer, body: bytes, content_type: bytes) -> Any:
        raw = (
            b"POST /sse HTTP/1.1\r\nHost: x\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        return StreamConnection(server.site, raw).response()

    def test_metrics_after_activity(self) -> None:
        """
        With 2 streams, a broadcast, a refused C{POST} and one answered
        call, the metrics show 2 sessions, at least 2 deliveries, bytes
        sent, a refusal and one call-latency observation.
        """
        server = SSEServer()
        one, two = server.connect(), server.connect()
        server.endpoint.send({"hello": "all"})
        server.turn()
        refused = self._post(server, b"route=ping", b"text/plain")
        self.assertEqual(refused.status, 415)
        call = server.endpoint.run("add", [1, 2], session_id=one.session_id)
        server.turn()
        envelope = json.loads(one.events()[-1].data)
        self.assertEqual(envelope["route"], "runRequest")
        callback_id = envelope["args"][2]
        answer = json.dumps(
            {"args": 3, "callbackId": callback_id, "sessionId": one.session_id}
        ).encode()
        self.assertEqual(self._post(server, answer, b"application/json").status, 204)
        self.assertEqual(self.successResultOf(cast(Deferred[Any], call)), 3)
        self.assertIn(b'"hello"', two.transport.value())

        stub = StubTreq(MetricsResource(server.backend))
        response = self.successResultOf(stub.get("http://x/metrics"))
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        )
        text = self.successResultOf(stub.content(response)).decode()
        samples = _metrics(text)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 2)
        self.assertGreaterEqual(samples[("graphsse_deliveries_total", PATH)], 2)
        self.assertGreater(samples[("graphsse_bytes_sent_total", PATH)], 0)
        self.assertGreaterEqual(samples[("graphsse_refusals_total", PATH)], 1)
        self.assertEqual(samples[("graphsse_sessions_opened_total", PATH)], 2)
        self.assertEqual(samples[("graphsse_call_latency_seconds_count", PATH)], 1)
        self.assertEqual(samples[("graphsse_pending_calls", PATH)], 0)
        inf = ("graphsse_call_latency_seconds_bucket", (("le", "+Inf"), *PATH))
        self.assertEqual(samples[inf], 1)
        server.endpoint.terminate()

    def test_tap_metrics_option(self) -> None:
        """
        C{--metrics /metrics} mounts the metrics of the tap's backend in its
        site, next to the endpoint.
        """
        options = tap.Options()
        options.parseOptions(["--metrics", "/metrics", "--port", "tcp:0"])
        backend, endpoint, site = tap.build(options)
        self.assertIsInstance(backend, SSEBackend)
        stub = StubTreq(site.resource)
        response = self.successResultOf(stub.get("http://127.0.0.1/metrics"))
        self.assertEqual(response.code, 200)
        text = self.successResultOf(stub.content(response)).decode()
        samples = _metrics(text)
        self.assertEqual(samples[("graphsse_sessions", PATH)], 0)
        self.assertEqual(samples[("graphsse_events_published_total", PATH)], 0)
        endpoint.terminate()
