"""
C{twistd graphsse}: L{txgraphsse.tap}'s options and service, the plugin that
names it, and one real C{twistd -n graphsse} process that serves a stream and
stops cleanly on C{SIGTERM}.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from twisted.web.static import File

from txgraphsse import (
    EventStreamParser,
    ServerSentEvent,
    SSEBackend,
    SSEEndpoint,
    SSEService,
    SSESite,
    tap,
)

#: The checkout: the plugin lives in its C{twisted/plugins}.
_REPO = Path(__file__).resolve().parent.parent

#: Seconds a step of the twistd test may take.
WAIT = 5.0


def _options(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def _service(*argv: str) -> tuple[MultiService, SSEService, SSEEndpoint, Site]:
    """
    C{makeService} for C{argv}, and the parts it is made of.
    """
    options = _options(*argv)
    top = tap.makeService(options)
    assert isinstance(top, MultiService)
    first, *ports = list(top)
    assert isinstance(first, SSEService)
    assert ports and isinstance(ports[0], StreamServerEndpointService)
    site = ports[0].factory
    assert isinstance(site, Site)
    return top, first, first.backend.endpoints[options["path"]], site


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: the command line of C{twistd graphsse}.
    """

    def test_defaults(self) -> None:
        """
        Without options: port C{tcp:8080}, path C{/sse}, no channels, a 15 s
        keep-alive, no history, C{retry} 2000 ms.
        """
        options = _options()
        self.assertEqual(options["ports"], ["tcp:8080"])
        self.assertEqual(options["path"], "/sse")
        self.assertEqual(options["channels"], "")
        self.assertEqual(options["keepalive"], 15.0)
        self.assertEqual(options["history"], 0)
        self.assertEqual(options["retry"], 2000)
        self.assertIsNone(options["app"])

    def test_port_number(self) -> None:
        """
        A bare number is a TCP port.
        """
        self.assertEqual(_options("--port", "8080")["ports"], ["tcp:8080"])
        self.assertEqual(_options("-p", "9000")["ports"], ["tcp:9000"])

    def test_port_strports(self) -> None:
        """
        A strports description is kept as it is.
        """
        description = "tcp:8080:interface=127.0.0.1"
        self.assertEqual(_options("--port", description)["ports"], [description])

    def test_several_ports(self) -> None:
        """
        C{--port} (or C{--listen}) may be given more than once; the default
        is not added to them.
        """
        options = _options("--port", "8080", "--listen", "unix:/tmp/sse.sock")
        self.assertEqual(options["ports"], ["tcp:8080", "unix:/tmp/sse.sock"])

    def test_path(self) -> None:
        """
        C{--path} sets the endpoint's path, with a leading slash added if it
        has none.
        """
        self.assertEqual(_options("--path", "/events")["path"], "/events")
        self.assertEqual(_options("--path", "api/events")["path"], "/api/events")

    def test_numbers(self) -> None:
        """
        C{--keepalive}, C{--history} and C{--retry} are numbers.
        """
        options = _options("--keepalive", "2.5", "--history", "50", "--retry", "100")
        self.assertEqual(
            (options["keepalive"], options["history"], options["retry"]),
            (2.5, 50, 100),
        )

    def test_bad_values(self) -> None:
        """
        A value that is not a number, or a negative keep-alive or history,
        or an unknown option, is a L{UsageError}.
        """
        for argv in (
            ["--keepalive", "soon"],
            ["--keepalive", "-1"],
            ["--history", "many"],
            ["--history", "-3"],
            ["--history", "1.5"],
            ["--retry", "x"],
            ["--no-such-option"],
        ):
            with self.subTest(argv=argv):
                self.assertRaises(UsageError, _options, *argv)

    def test_trusted_proxies(self) -> None:
        """
        C{--trusted-proxy} may be given more than once, as addresses or
        networks, and reaches the endpoint's limits; anything else is a
        L{UsageError}.
        """
        _, _, endpoint, _ = _service(
            "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8"
        )
        self.assertEqual(
            [str(n) for n in endpoint.limits.trusted_proxies],
            ["127.0.0.1/32", "10.0.0.0/8"],
        )
        self.assertEqual(_options().limits().trusted_proxies, ())
        self.assertRaises(UsageError, _options, "--trusted-proxy", "nginx")

    def test_inbound_limits(self) -> None:
        """
        The options for the way in reach the limits of the site, which is an
        L{SSESite}; the per-address call rate defaults to ten times the
        per-session one.
        """
        _, _, endpoint, site = _service(
            "--max-uri",
            "100",
            "--max-header-bytes",
            "200",
            "--header-timeout",
            "1.5",
            "--body-timeout",
            "2.5",
            "--max-connecting-per-address",
            "3",
            "--max-connecting",
            "4",
            "--calls-per-second",
            "2",
        )
        self.assertIsInstance(site, SSESite)
        assert isinstance(site, SSESite)
        limits = site.limits
        self.assertEqual(
            (
                limits.max_uri,
                limits.max_header_bytes,
                limits.header_timeout,
                limits.body_timeout,
                limits.max_connecting_per_address,
                limits.max_connecting,
                limits.address_calls_per_second,
            ),
            (100, 200, 1.5, 2.5, 3, 4, 20.0),
        )
        self.assertEqual(endpoint.limits, limits)
        rate = _options("--address-calls-per-second", "7").limits()
        self.assertEqual(rate.address_calls_per_second, 7.0)
        self.assertIsNone(_options().limits().address_calls_per_second)


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService}: what the options make.
    """

    def test_structure(self) -> None:
        """
        A C{MultiService} whose first child is the L{SSEService}, whose
        next are one listening service per C{--port}, in order, all serving
        the same C{Site}, and whose last is the demo's ticker: stopping in
        reverse order stops the ticker and closes the ports before the
        streams.
        """
        top = tap.makeService(
            _options("--port", "tcp:8081:interface=127.0.0.1", "--port", "8082")
        )
        assert isinstance(top, MultiService)
        children = list(top)
        self.assertEqual(len(children), 4)
        self.assertIsInstance(children[0], SSEService)
        for child in children[1:3]:
            self.assertIsInstance(child, StreamServerEndpointService)
        self.assertEqual(type(children[3]).__name__, "Ticker")
        first, second = children[1:3]
        assert isinstance(first, StreamServerEndpointService)
        assert isinstance(second, StreamServerEndpointService)
        self.assertEqual(first.endpoint._port, 8081)
        self.assertEqual(first.endpoint._interface, "127.0.0.1")
        self.assertEqual(second.endpoint._port, 8082)
        self.assertIs(first.factory, second.factory)
        self.assertIsInstance(first.factory, Site)

    def test_endpoint_from_options(self) -> None:
        """
        The endpoint gets the path, channels, keep-alive, history and retry
        of the options, and is mounted at its path in the site.
        """
        _, service, endpoint, site = _service(
            "--path",
            "/api/events",
            "--channels",
            "a, b",
            "--keepalive",
            "3",
            "--history",
            "7",
            "--retry",
            "500",
        )
        self.assertEqual(list(service.backend.endpoints), ["/api/events"])
        self.assertEqual(endpoint.path, "/api/events")
        # The demo adds its own channel (no --static, no --app).
        self.assertEqual(set(endpoint.channels), {"message", "a", "b", "demo"})
        self.assertEqual(endpoint.keepalive, 3.0)
        self.assertEqual(endpoint.history.size, 7)
        self.assertEqual(endpoint.retry, 500)
        self.assertFalse(endpoint.dynamic_channels)
        api = site.resource.children[b"api"]
        self.assertIs(api.children[b"events"], endpoint.resource)

    def test_dynamic_channels(self) -> None:
        """
        C{--dynamic-channels} lets clients join channels not configured.
        """
        _, _, endpoint, _ = _service("--dynamic-channels")
        self.assertTrue(endpoint.dynamic_channels)

    def test_api(self) -> None:
        """
        C{--api-key} (more than once) and C{--api-key-file} mount the server
        API at C{/api}, or at C{--api-path}; without a key or a JWT option
        there is none.
        """
        from txgraphsse.api import ServerAPIResource

        _, _, _, site = _service()
        self.assertNotIn(b"api", site.resource.children)
        with tempfile.NamedTemporaryFile(
            "w", suffix=".keys", delete=False, encoding="utf-8"
        ) as file:
            file.write("from-file-1\n\nfrom-file-2\n")
        keys = file.name
        self.addCleanup(os.unlink, keys)
        _, _, endpoint, site = _service(
            "--api-key", "k1", "--api-key", "k2", "--api-key-file", keys
        )
        api = site.resource.children[b"api"]
        self.assertIsInstance(api, ServerAPIResource)
        self.assertIs(api.endpoint, endpoint)
        self.assertEqual(
            _options("--api-key", "k1", "--api-key-file", keys)["api-keys"],
            ["k1", "from-file-1", "from-file-2"],
        )
        _, _, _, site = _service("--api-key", "k", "--api-path", "/ops/api/")
        self.assertIsInstance(
            site.resource.children[b"ops"].children[b"api"], ServerAPIResource
        )
        _, _, _, site = _service("--jwt-secret", "s" * 32)
        self.assertIsInstance(site.resource.children[b"api"], ServerAPIResource)
        for argv in (["--api-key", " "], ["--api-key-file", keys + ".missing"]):
            with self.assertRaises(UsageError):
                _options(*argv)

    def test_expose_errors(self) -> None:
        """
        A route's exception text is hidden unless C{--expose-errors}.
        """
        _, _, endpoint, _ = _service()
        self.assertFalse(endpoint.options.expose_errors)
        _, _, endpoint, _ = _service("--expose-errors")
        self.assertTrue(endpoint.options.expose_errors)

    def test_quiet_streams(self) -> None:
        """
        Streams' openings and ends are logged unless C{--quiet-streams}.
        """
        _, _, endpoint, _ = _service()
        self.assertTrue(endpoint.options.log_streams)
        _, _, endpoint, _ = _service("--quiet-streams")
        self.assertFalse(endpoint.options.log_streams)

    def test_root_path_refused(self) -> None:
        """
        The endpoint cannot be mounted at C{/}, where the page is: a
        L{UsageError}.
        """
        self.assertRaises(UsageError, _options, "--path", "/")


class AppTests(SynchronousTestCase):
    """
    C{--app module:attr}: the application's routes.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="txgraphsse-app-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.module = "txgraphsse_test_app_" + uuid.uuid4().hex
        source = textwrap.dedent(
            """
            from twisted.internet.task import Clock

            from txgraphsse import SSEBackend

            backend = SSEBackend(Clock())


            @backend.route("hello")
            def hello(name):
                return "hello " + name


            ready = SSEBackend(Clock())
            ready.setup_sse("/sse", channels=["own"])


            def install(backend):
                backend.add_route("double", lambda x: 2 * x)


            class Routes:
                def triple(self, x):
                    return 3 * x


            routes = Routes()
            """
        )
        Path(directory, self.module + ".py").write_text(source)
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, self.module, None)

    def _backend(self, attr: str, *argv: str) -> SSEBackend:
        _, service, _, _ = _service("--app", f"{self.module}:{attr}", *argv)
        return service.backend

    def _call(self, backend: SSEBackend, route: str, *args: Any) -> Any:
        return self.successResultOf(backend.call(route, *args))

    def test_backend(self) -> None:
        """
        An L{SSEBackend} is used as it is, with its routes; the endpoint is
        set up on it.
        """
        backend = self._backend("backend")
        module = sys.modules[self.module]
        self.assertIs(backend, module.backend)
        self.assertIn("/sse", backend.endpoints)
        self.assertEqual(self._call(backend, "hello", "you"), "hello you")

    def test_backend_with_endpoint(self) -> None:
        """
        A backend that already has an endpoint at the path keeps it: the
        command line's channels do not replace the application's.
        """
        backend = self._backend("ready", "--channels", "other")
        self.assertEqual(set(backend.endpoints["/sse"].channels), {"message", "own"})

    def test_function(self) -> None:
        """
        A function is called with a new backend, to add its routes.
        """
        backend = self._backend("install")
        self.assertEqual(self._call(backend, "double", 4), 8)

    def test_object(self) -> None:
        """
        An object's public methods become routes.
        """
        backend = self._backend("routes")
        self.assertEqual(self._call(backend, "triple", 2), 6)
        self.assertEqual(self._call(backend, "ping"), "pong")

    def test_bad_specs(self) -> None:
        """
        A spec that is not C{module:attr}, a module that does not import or
        an attribute it lacks is a L{UsageError}.
        """
        for spec in (
            "no-colon",
            ":attr",
            f"{self.module}:",
            "txgraphsse_no_such_module_here:app",
            f"{self.module}:missing",
        ):
            with self.subTest(spec=spec):
                self.assertRaises(UsageError, tap.makeService, _options("--app", spec))


class PluginTests(SynchronousTestCase):
    """
    The plugin in C{twisted/plugins/graphsse.py}.
    """

    def test_discovered(self) -> None:
        """
        C{getPlugins(IServiceMaker)} finds the C{graphsse} tap, whose options
        and service come from L{txgraphsse.tap}.
        """
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "graphsse"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)


class PageTests(SynchronousTestCase):
    """
    The page at C{/}.
    """

    def test_demo_page(self) -> None:
        """
        C{GET /} serves the demo page, an HTML page that opens the stream at
        the configured path.
        """
        _, _, _, site = _service("--path", "/events")
        stub = StubTreq(site.resource)
        response = self.successResultOf(stub.get("http://127.0.0.1/"))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/html; charset=utf-8"],
        )
        body = self.successResultOf(stub.content(response))
        self.assertTrue(body.startswith(b"<!doctype html>"))
        self.assertIn(b'from "/events/client.js"', body)
        self.assertIn(b'url: "/events"', body)

    def test_static_directory(self) -> None:
        """
        C{--static} serves a directory at C{/} instead of the demo page, with
        the endpoint still mounted at its path.
        """
        directory = tempfile.mkdtemp(prefix="txgraphsse-static-")
        self.addCleanup(shutil.rmtree, directory, True)
        Path(directory, "index.html").write_bytes(b"<p>mine</p>")
        _, _, endpoint, site = _service("--static", directory)
        root = site.resource
        self.assertIsInstance(root, File)
        assert isinstance(root, File)
        self.assertEqual(root.path, directory)
        self.assertIn("index.html", root.listNames())
        self.assertIs(site.resource.getStaticEntity(b"sse"), endpoint.resource)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Chunked:
    """
    An HTTP/1.1 response read from a plain socket: its head, then its
    chunked body fed to an L{EventStreamParser} as chunks complete.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.head: bytes | None = None
        self.body = b""
        self.terminated = False
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            self.head, self.buffer = head, rest
        while not self.terminated:
            size_line, found, rest = self.buffer.partition(b"\r\n")
            if not found:
                return
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                if rest.startswith(b"\r\n"):
                    self.terminated = True
                    self.buffer = rest[2:]
                return
            if len(rest) < size + 2:
                return
            if rest[size : size + 2] != b"\r\n":
                raise AssertionError(f"bad chunk framing: {rest[: size + 2]!r}")
            chunk = rest[:size]
            self.body += chunk
            self.events.extend(self.parser.feed(chunk))
            self.buffer = rest[size + 2 :]

    def header(self, name: bytes) -> list[bytes]:
        assert self.head is not None
        values = []
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                values.append(value.strip())
        return values


def start_twistd(
    case: SynchronousTestCase, *argv: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """
    Start C{twistd -n graphsse argv} in a temporary directory, with this
    checkout on the path so the plugin is found; C{case} kills it (by its
    own PID) in cleanup if it still runs.

    @return: the process and its log file.
    """
    workdir = Path(tempfile.mkdtemp(prefix="txgraphsse-twistd-"))
    case.addCleanup(shutil.rmtree, workdir, True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        command = [str(script)]
    else:
        command = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
        ]
    log = workdir / "twistd.log"
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [*command, "-n", "graphsse", *argv],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def reap() -> None:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=WAIT)

    case.addCleanup(reap)
    return process, log


class TwistdTests(SynchronousTestCase):
    """
    One real C{twistd -n graphsse} process.
    """

    def _twistd(self, *argv: str) -> tuple[subprocess.Popen[bytes], Path]:
        return start_twistd(self, *argv)

    def _connect(
        self, process: subprocess.Popen[bytes], port: int, log: Path
    ) -> socket.socket:
        deadline = time.monotonic() + 3 * WAIT
        while True:
            if process.poll() is not None:
                self.fail(f"twistd exited early:\n{log.read_text()}")
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            except OSError:
                if time.monotonic() > deadline:
                    self.fail(f"twistd did not listen:\n{log.read_text()}")
                time.sleep(0.05)
                continue
            self.addCleanup(sock.close)
            return sock

    def _read_until(
        self, sock: socket.socket, predicate: Callable[[], bool], feed: Any
    ) -> bool:
        """
        Receive into C{feed} until C{predicate()} holds (true), the peer
        closes (false), or L{WAIT} seconds pass (fail).
        """
        deadline = time.monotonic() + WAIT
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail("timed out reading from twistd")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return predicate()
            feed(data)
        return True

    def test_twistd_streams_and_stops_on_sigterm(self) -> None:
        """
        C{twistd -n graphsse} serves the demo page and a stream (C{retry},
        the C{setId} event, then keep-alive comments); on C{SIGTERM} it shuts
        down cleanly within 5 s, after sending the stream a last C{shutdown}
        event and the chunked terminator.
        """
        port = _free_port()
        process, log = self._twistd(
            "--port", f"tcp:{port}:interface=127.0.0.1", "--keepalive", "1"
        )
        page = self._connect(process, port, log)
        page.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        received = bytearray()
        self.assertFalse(self._read_until(page, lambda: False, received.extend))
        self.assertTrue(received.startswith(b"HTTP/1.0 200"), bytes(received[:80]))
        self.assertIn(b"<!doctype html>", received)

        sock = self._connect(process, port, log)
        sock.sendall(
            b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        response = _Chunked()

        def greeted_and_pinged() -> bool:
            after = response.body.find(b'"route":"setId"')
            return after != -1 and b"\n:\n\n" in response.body[after:]

        self.assertTrue(self._read_until(sock, greeted_and_pinged, response.feed))
        assert response.head is not None
        self.assertTrue(response.head.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(
            response.header(b"content-type"), [b"text/event-stream; charset=utf-8"]
        )
        self.assertEqual(response.header(b"transfer-encoding"), [b"chunked"])
        self.assertEqual(response.header(b"connection"), [b"keep-alive"])
        self.assertTrue(response.body.startswith(b"retry: 2000\n\n"))
        self.assertEqual(response.parser.retry, 2000)
        self.assertEqual(response.events[0].type, "message")
        self.assertIn('"route":"setId"', response.events[0].data)

        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.fail(f"twistd did not exit within {WAIT}s:\n{log.read_text()}")
        # twistd re-raises the signal that stopped it once it has shut down
        # cleanly, so that its parent sees why it exited: -SIGTERM, not 0.
        text = log.read_text()
        self.assertEqual(code, -signal.SIGTERM, text)
        self.assertIn("Server Shut Down.", text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("Unhandled", text)
        self._read_until(sock, lambda: response.terminated, response.feed)
        self.assertTrue(response.terminated, response.body[-200:])
        self.assertEqual(response.events[-1].type, "shutdown", response.events)
        self.assertEqual(response.events[-1].data, '{"route":"shutdown","args":null}')
