"""
A newcomer's first hour (issue 19): the command line, the package, a Redis
broker an embedding app forgets to start, C{--app} endpoints at other
paths, and the demo page at C{/}.

  - C{twistd graphsse --help} and C{--version}, and every bad option, run
    as real C{twistd} processes: each bad option is one line on stderr and
    exit status 1, without a traceback or twistd's usage text; a port in
    use ends the process before it writes its pid file.
  - The wheel, built by pip: the package, the plugin, the browser client
    and its d.ts, C{py.typed}, the license; no tests, no build script, no
    C{dropin.cache}; its version is C{txgraphsse.__version__}.
  - The demo page in Chromium, served by a real C{twistd -n graphsse}: the
    counter it shows advances, both calls work.

The rendered help, the messages of the bad options and the screenshots go
to C{tests/artifacts/}.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
)
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer

import txgraphsse
from txgraphsse import SSEBackend, SSEService, tap
from txgraphsse._demo import CHANNEL, Ticker, add_routes, channel, page
from txgraphsse.testing import SSETestPair

from ._browser import ARTIFACTS, REPO, free_port, save_screenshot, start_command
from .test_browser import BrowserTestCase

#: Seconds one twistd process of these tests may take.
WAIT = 60.0


def _twistd_command() -> list[str]:
    """
    The C{twistd} of this interpreter's environment (C{.venv/bin/twistd}
    when the suite runs from the venv).
    """
    script = Path(sys.executable).with_name("twistd")
    if not script.exists():
        raise AssertionError(f"no twistd next to {sys.executable}: pip install .")
    return [str(script)]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["COLUMNS"] = "80"
    return env


class _Run:
    """
    A finished process: its exit status and what it wrote.
    """

    def __init__(self, argv: list[str], code: int, out: str, err: str) -> None:
        self.argv = argv
        self.code = code
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return (
            f"<{' '.join(self.argv)}: exit {self.code}, stdout {self.out!r},"
            f" stderr {self.err!r}>"
        )


def _run_all(commands: list[list[str]], cwd: Path) -> list[_Run]:
    """
    Run C{commands} side by side (from C{cwd}, with this checkout on the
    path) and wait for each, at most L{WAIT} seconds.
    """
    started = [
        (
            argv,
            subprocess.Popen(
                argv,
                cwd=cwd,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for argv in commands
    ]
    runs = []
    for argv, process in started:
        try:
            out, err = process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"{argv} still ran after {WAIT}s: {err}") from None
        runs.append(_Run(argv, process.returncode, out, err))
    return runs


def _without(module: str, *argv: str) -> list[str]:
    """
    A command that runs C{twistd argv} in a Python where C{module} cannot be
    imported, as after the README's plain install without its extra.
    """
    program = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        f"sys.argv = ['twistd', *{list(argv)!r}]\n"
        "from twisted.scripts.twistd import run\n"
        "run()\n"
    )
    return [sys.executable, "-c", program]


class CommandLineTests(SynchronousTestCase):
    """
    C{twistd graphsse} as a newcomer meets it, in real processes.
    """

    def setUp(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="txgraphsse-newcomer-"))
        self.addCleanup(shutil.rmtree, self.workdir, True)

    def assertOneLine(self, run: _Run, *expected: str) -> str:
        """
        C{run} failed with exit status 1 and wrote one line, on stderr,
        that starts C{twistd graphsse: } and holds each of C{expected}.
        """
        self.assertEqual(run.code, 1, run)
        self.assertEqual(run.out, "", run)
        self.assertNotIn("Traceback", run.err, run)
        self.assertNotIn("Usage:", run.err, run)
        self.assertEqual(run.err.count("\n"), 1, run)
        line = run.err.rstrip("\n")
        self.assertTrue(line.startswith("twistd graphsse: "), run)
        for text in expected:
            self.assertIn(text, line, run)
        return line

    def test_help(self) -> None:
        """
        C{twistd graphsse --help} prints the options (saved to
        C{tests/artifacts/twistd-graphsse-help.txt}) and exits 0: the
        aliases of C{--port} no longer break it.
        """
        [run] = _run_all([[*_twistd_command(), "graphsse", "--help"]], self.workdir)
        self.assertEqual((run.code, run.err), (0, ""), run)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "twistd-graphsse-help.txt").write_text(run.out)
        lines = run.out.splitlines()
        self.assertEqual(lines[0], "Usage: twistd [options] graphsse [options]")
        for option in (
            "  -p, --port=",
            "      --listen=",
            "      --path=",
            "      --app=",
            "      --static=",
            "      --redis=",
            "      --metrics=",
            "      --jwt-secret=",
            "      --version",
            "      --help",
        ):
            self.assertTrue(
                any(line.startswith(option) for line in lines), (option, run.out)
            )
        self.assertIn("A demo page at / shows the stream", run.out)
        # Each option's docstring is one paragraph, not its source's layout.
        self.assertNotIn("  may  ", run.out)

    def test_version(self) -> None:
        """
        C{twistd graphsse --version} prints txgraphsse's version (and
        Twisted's and Python's) and exits 0.
        """
        [run] = _run_all([[*_twistd_command(), "graphsse", "--version"]], self.workdir)
        self.assertEqual((run.code, run.err), (0, ""), run)
        self.assertTrue(
            run.out.startswith(f"txgraphsse {txgraphsse.__version__} (Twisted "),
            run,
        )

    def test_bad_options(self) -> None:
        """
        Each bad option is one line (saved to
        C{tests/artifacts/twistd-graphsse-errors.txt}), exit status 1, no
        traceback and no usage text: an unparsable C{--port}, a missing
        C{--static} directory or C{--jwt-public-key} file, a key file that
        holds no key, an unknown option, a value that is not a number,
        C{--path /}, an C{--app} that does not import.
        """
        garbage = self.workdir / "not-a-key.pem"
        garbage.write_text("hello\n")
        cases: list[tuple[list[str], tuple[str, ...]]] = [
            (["--port", "notaport"], ("--port notaport", "Unknown endpoint type")),
            (["--port", "tcp:http"], ("--port tcp:http", "invalid literal")),
            (["--port", "99999"], ("--port 99999", "at most 65535")),
            (
                ["--port", "ssl:8443:privateKey=missing.pem"],
                ("--port ssl:8443:privateKey=missing.pem",),
            ),
            (["--static", "/nonexistent"], ("--static /nonexistent", "no such")),
            (
                ["--jwt-public-key", "/nonexistent.pem"],
                ("--jwt-public-key /nonexistent.pem", "No such file"),
            ),
            (
                ["--jwt-public-key", str(garbage)],
                (f"--jwt-public-key {garbage}", "not an RSA key"),
            ),
            (["--no-such-option"], ("no-such-option", "--help")),
            (["--history", "many"], ("invalid literal",)),
            (["--path", "/"], ("--path",)),
            (["--app", "no_such_module_here:app"], ("--app", "no_such_module_here")),
        ]
        twistd = [*_twistd_command(), "-n", "--pidfile=", "graphsse"]
        runs = _run_all([[*twistd, *argv] for argv, _ in cases], self.workdir)
        lines = []
        for (argv, expected), run in zip(cases, runs, strict=True):
            with self.subTest(argv=argv):
                lines.append(f"$ twistd -n graphsse {' '.join(argv)}")
                lines.append(self.assertOneLine(run, *expected))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "twistd-graphsse-errors.txt").write_text("\n".join(lines) + "\n")

    def test_missing_extras(self) -> None:
        """
        An option whose extra is not installed is one line that names the
        C{pip install} step: C{--redis} without txredisapi, C{--metrics}
        (and C{--metrics-port}) without prometheus_client, C{--jwt-secret}
        without PyJWT, C{--jwt-public-key} without cryptography.
        """
        cases = [
            ("txredisapi", ["--redis", "redis://127.0.0.1:6379/0"], "redis"),
            ("prometheus_client", ["--metrics", "/metrics"], "metrics"),
            ("prometheus_client", ["--metrics-port", "9100"], "metrics"),
            ("jwt", ["--jwt-secret", "s" * 32], "jwt"),
            ("cryptography", ["--jwt-public-key", "key.pem"], "jwt"),
        ]
        runs = _run_all(
            [_without(module, "-n", "graphsse", *argv) for module, argv, _ in cases],
            self.workdir,
        )
        for (module, argv, extra), run in zip(cases, runs, strict=True):
            with self.subTest(module=module):
                self.assertOneLine(
                    run,
                    f"{argv[0]} needs {module}",
                    f"pip install 'txgraphsse[{extra}]'",
                )

    def test_port_in_use(self) -> None:
        """
        A port in use ends twistd with one line and exit status 1, before it
        writes its pid file; with C{--workers} too.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        description = f"tcp:{port}:interface=127.0.0.1"
        twistd = [*_twistd_command(), "-n", "graphsse", "--port", description]
        single, workers = _run_all(
            [twistd, [*twistd, "--workers", "2", "--redis", "redis://127.0.0.1:1/0"]],
            self.workdir,
        )
        self.assertOneLine(single, f"--port {description}", "Address already in use")
        self.assertOneLine(workers, "cannot listen", "Address already in use")
        self.assertFalse((self.workdir / "twistd.pid").exists())

    def test_options_raise_outside_twistd(self) -> None:
        """
        Parsed by a program of one's own (no twistd parent), the same bad
        options are L{UsageError}s, and C{makeService} listens on nothing.
        """
        for argv in (
            ["--static", "/nonexistent"],
            ["--jwt-public-key", "/nonexistent.pem"],
            ["--port", "70000"],
            ["--path", "/"],
        ):
            with self.subTest(argv=argv):
                self.assertRaises(UsageError, tap.Options().parseOptions, argv)
        options = tap.Options()
        options.parseOptions(["--port", "notaport"])
        self.assertRaises(UsageError, tap.makeService, options)


class WheelTests(SynchronousTestCase):
    """
    The wheel pip builds from the checkout.
    """

    def test_contents(self) -> None:
        """
        The wheel holds the package, the plugin, the browser client and its
        d.ts, the Lua scripts, C{py.typed} and the license; not the tests,
        the classic client's build script, C{dropin.cache}, bytecode, or an
        C{__init__.py} under C{twisted/} (which would hide Twisted).  Its
        version is C{txgraphsse.__version__}, pyproject's only source.
        """
        out = Path(tempfile.mkdtemp(prefix="txgraphsse-wheel-"))
        self.addCleanup(shutil.rmtree, out, True)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
        try:
            import hatchling  # noqa: F401  (the build backend, offline)
        except ImportError:
            pass  # pip fetches it into an isolated build environment
        else:
            command.append("--no-build-isolation")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        built = subprocess.run(
            [*command, "-w", str(out), str(REPO)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        self.assertEqual(built.returncode, 0, built.stderr)
        [wheel] = out.glob("txgraphsse-*.whl")
        version = txgraphsse.__version__
        self.assertTrue(wheel.name.startswith(f"txgraphsse-{version}-"), wheel.name)
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            info = f"txgraphsse-{version}.dist-info"
            metadata = archive.read(f"{info}/METADATA").decode()
        for name in (
            "txgraphsse/__init__.py",
            "txgraphsse/tap.py",
            "txgraphsse/_twistd.py",
            "txgraphsse/_demo.py",
            "txgraphsse/client.py",
            "txgraphsse/_client/_graph.py",
            "txgraphsse/_redis/_broker.py",
            "txgraphsse/_redis/lua/publish.lua",
            "txgraphsse/py.typed",
            "txgraphsse/static/graphsse.js",
            "txgraphsse/static/graphsse.classic.js",
            "txgraphsse/static/graphsse.d.ts",
            "twisted/plugins/graphsse.py",
            f"{info}/licenses/LICENSE",
        ):
            self.assertIn(name, names)
        for name in sorted(names):
            with self.subTest(name=name):
                self.assertFalse(name.startswith("tests/"))
                self.assertNotIn("__pycache__", name)
                self.assertFalse(name.endswith((".pyc", "dropin.cache")))
                self.assertNotEqual(Path(name).name, "build_classic.py")
                self.assertFalse(
                    name.startswith("twisted/") and name.endswith("__init__.py")
                )
        self.assertEqual(
            {n for n in names if n.startswith("twisted/")},
            {"twisted/plugins/graphsse.py"},
        )
        self.assertIn(f"\nVersion: {version}\n", metadata)
        self.assertIn("License: MIT", metadata)
        pyproject = (REPO / "pyproject.toml").read_text()
        self.assertIn('dynamic = ["version"]', pyproject)
        self.assertNotIn('\nversion = "', pyproject)

    def test_license_and_changelog(self) -> None:
        """
        The checkout has the MIT license its metadata names, and a
        changelog whose newest entry is this version.
        """
        license_text = (REPO / "LICENSE").read_text()
        self.assertTrue(license_text.startswith("MIT License\n"))
        self.assertIn("Copyright (c) 2026 the txgraphsse authors", license_text)
        changelog = (REPO / "CHANGELOG.md").read_text()
        [first] = [line for line in changelog.splitlines() if line.startswith("## ")][
            :1
        ]
        self.assertTrue(first.startswith(f"## {txgraphsse.__version__} "), first)

    def test_ignored(self) -> None:
        """
        What twistd and trial leave in the checkout is ignored by git.
        """
        names = ["twistd.pid", "twistd.log", "_trial_temp/x", "_trial_temp-1/x"]
        names += [
            "_trial_temp.lock",
            "_trial_temp-1.lock",
            "twisted/plugins/dropin.cache",
        ]
        done = subprocess.run(
            ["git", "check-ignore", "--no-index", *names],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        self.assertEqual(done.stdout.split(), names, done.stderr)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _Resolver:
    """
    Resolves every name at once to 127.0.0.1, as the C{MemoryReactor} of
    Twisted 25.5 and later does by itself (older ones resolve nothing).
    """

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        receiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        receiver.resolutionComplete()
        return resolution


class RedisStartTests(SynchronousTestCase):
    """
    A L{txgraphsse.redis.RedisBroker} that an embedding app creates and
    forgets to start says so.
    """

    def setUp(self) -> None:
        from txgraphsse.redis import RedisBroker

        self.clock = MemoryReactorClock()
        if not IReactorPluggableNameResolver.providedBy(self.clock):
            alsoProvides(self.clock, IReactorPluggableNameResolver)
            self.clock.nameResolver = _Resolver()  # type: ignore[attr-defined]
        self.broker = RedisBroker(self.clock, "redis://127.0.0.1:1/0")
        self.backend = SSEBackend(self.clock, broker=self.broker)
        self.endpoint = self.backend.setup_sse("/sse")
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[dict[str, Any]]:
        return [
            event
            for event in self.logged
            if event["log_level"] == LogLevel.warn
            and "not started" in event["log_format"]
        ]

    def test_warns_once_when_used_and_not_started(self) -> None:
        """
        Setting up an endpoint schedules nothing; once the broker is used
        (an event published) and still not started L{start_warning} seconds
        later, it logs one warning that says what to call.
        """
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.endpoint.channels["message"].broadcast("hello")
        self.clock.advance(self.broker.start_warning - 0.1)
        self.assertEqual(self.warnings(), [])
        self.clock.advance(0.2)
        [warning] = self.warnings()
        self.assertIn("broker.start()", warning["log_format"])
        self.assertIn("SSEService", warning["log_format"])
        self.endpoint.channels["message"].broadcast("again")
        self.clock.advance(60)
        self.assertEqual(len(self.warnings()), 1)

    def test_started_in_time(self) -> None:
        """
        Started (here by L{SSEService}, as twistd does) before the time is
        up, the broker warns of nothing; it connects to Redis.
        """
        self.endpoint.channels["message"].broadcast("hello")
        service = SSEService(self.backend)
        service.startService()
        self.addCleanup(service.stopService)
        self.clock.advance(self.broker.start_warning + 1)
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.clock.tcpClients[0][:2], ("127.0.0.1", 1))

    def test_stopped(self) -> None:
        """
        Stopped (L{SSEBackend.shutdown}) before the time is up, it warns of
        nothing and leaves no timer behind.
        """
        self.endpoint.channels["message"].broadcast("hello")
        self.successResultOf(self.backend.shutdown())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.warnings(), [])


class AppEndpointsTests(SynchronousTestCase):
    """
    C{--app} may add endpoints at other paths; each is served.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="txgraphsse-app-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.module = "txgraphsse_newcomer_app_" + uuid.uuid4().hex
        source = textwrap.dedent(
            """
            def install(backend):
                backend.setup_sse("/sse", channels=["news"])
                backend.setup_sse("/admin/events", channels=["ops"])
                backend.add_route("double", lambda x: 2 * x)


            def at_root(backend):
                backend.setup_sse("/")
            """
        )
        Path(directory, self.module + ".py").write_text(source)
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, self.module, None)

    def _site(self, attr: str) -> tuple[MultiService, Any]:
        options = tap.Options()
        options.parseOptions(["--app", f"{self.module}:{attr}"])
        top = tap.makeService(options)
        assert isinstance(top, MultiService)
        ports = [s for s in top if isinstance(s, StreamServerEndpointService)]
        return top, ports[0].factory

    def test_other_paths_served(self) -> None:
        """
        Both endpoints answer at their own paths: a call, and the browser
        client below each; with C{--app} the demo does not run.
        """
        top, site = self._site("install")
        stub = StubTreq(site.resource)
        for path in ("/sse", "/admin/events"):
            with self.subTest(path=path):
                response = self.successResultOf(
                    stub.post(
                        f"http://127.0.0.1{path}",
                        json.dumps({"route": "double", "args": [21]}).encode(),
                        headers={b"content-type": [b"application/json"]},
                    )
                )
                self.assertEqual(response.code, 200)
                body = self.successResultOf(stub.json_content(response))
                self.assertEqual(body, {"args": 42})
                script = self.successResultOf(
                    stub.get(f"http://127.0.0.1{path}/client.js")
                )
                self.assertEqual(script.code, 200)
        self.assertNotIn("Ticker", [type(service).__name__ for service in top])
        first = next(iter(top))
        assert isinstance(first, SSEService)
        self.assertNotIn(CHANNEL, first.backend.endpoints["/sse"].channels)

    def test_root_refused(self) -> None:
        """
        An endpoint at C{/}, where the page is, is a L{UsageError}.
        """
        self.assertRaises(UsageError, self._site, "at_root")


def _demo_setup(backend: SSEBackend) -> None:
    add_routes(backend)
    backend.setup_sse("/sse", channels=[channel()], keepalive=0)


class DemoTests(SynchronousTestCase):
    """
    The demo's parts, in memory: the ticker, C{call_me}, the page.
    """

    def test_ticker_and_call_me(self) -> None:
        """
        The ticker publishes the count on the C{demo} channel every second
        from its start; C{call_me} runs the calling page's C{double} and
        answers both numbers.
        """
        pair = SSETestPair(_demo_setup, client_routes={"double": lambda x: 2 * x})
        self.addCleanup(pair.close)
        seen: list[Any] = []
        pair.client.add_handler(CHANNEL, lambda data, event, conn: seen.append(data))
        conn = pair.connect(f"?channels={CHANNEL}")
        ticker = Ticker(pair.endpoint, pair.clock)
        ticker.startService()
        self.addCleanup(ticker.stopService)
        pair.advance(1)
        pair.advance(1)
        pair.pump()
        self.assertEqual([event["count"] for event in seen], [1, 2, 3])
        self.assertRegex(seen[0]["time"], r"^\d\d:\d\d:\d\d$")
        self.assertEqual(
            pair.result(conn.run("call_me", [7])), {"asked": 7, "answer": 14}
        )
        ticker.stopService()
        pair.advance(5)
        self.assertEqual(len(seen), 3)

    def test_call_me_needs_a_session(self) -> None:
        """
        A call of C{call_me} that comes through no session (the server's
        own) fails: there is no page to call back.
        """
        backend = SSEBackend(MemoryReactorClock())
        add_routes(backend)
        failure = self.failureResultOf(backend.call("call_me", 3))
        self.assertIn("open a stream first", str(failure.value))

    def test_page(self) -> None:
        """
        The page loads the endpoint's client, names its own address with
        C{location.host} (not a literal host), lists the examples, and
        shows the live parts only when the demo runs.
        """
        live = page("/events", True).data.decode()
        self.assertIn('from "/events/client.js"', live)
        self.assertIn("location.host", live)
        self.assertNotIn("HOST", live)
        for name in ("chat", "dashboard", "calls", "python_calls", "cluster"):
            self.assertIn(f"<b>{name}</b>", live)
        self.assertIn('<section id="live">', live)
        self.assertIn("const live = true;", live)
        quiet = page("/events", False).data.decode()
        self.assertIn('<section id="live" hidden>', quiet)
        self.assertIn("const live = false;", quiet)


class DemoPageBrowserTests(BrowserTestCase):
    """
    The demo page of a real C{twistd -n graphsse}, in Chromium.
    """

    def test_live_counter_and_calls(self) -> None:
        """
        The page shows a counter that advances between two reads, its own
        address in the C{curl} line, the examples; its button runs C{ping}
        on the server, and C{call_me} has the server run the page's
        C{double}, both shown on the page.  Screenshots:
        C{tests/artifacts/demo-page-*.png}.
        """
        port = free_port()
        argv = [
            *_twistd_command(),
            "-n",
            "--pidfile=",
            "graphsse",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
        ]
        server = start_command(argv, port, name="twistd-demo-page")
        self.addCleanup(server.stop)
        page = self.new_page(server.url("/"), height=900)
        self.wait(
            page,
            "/^\\d+$/.test(document.getElementById('counter').textContent)",
            "the first count",
        )
        first = int(page.text_content("#counter") or "0")
        save_screenshot(page, "demo-page-1")
        time.sleep(1.5)
        self.wait(
            page,
            f"Number(document.getElementById('counter').textContent) > {first}",
            "the counter to advance",
        )
        second = int(page.text_content("#counter") or "0")
        self.assertGreater(second, first)
        self.assertIn("server time", page.text_content("#clock") or "")
        save_screenshot(page, "demo-page-2")
        self.assertEqual(
            page.text_content("#curl"), f"curl -N http://127.0.0.1:{port}/sse"
        )
        self.assertIn("examples/chat/app.py", page.text_content("#examples") or "")

        page.click("#ping")
        self.wait(
            page,
            "document.getElementById('ping-result').textContent === '\"pong\"'",
            "the answer of ping",
        )
        page.click("#call-me")
        self.wait(
            page,
            "document.getElementById('call-me-result').textContent"
            ".startsWith('the server ran double(')",
            "the answer of call_me",
        )
        result = page.text_content("#call-me-result") or ""
        asked = int(result.split("double(")[1].split(")")[0])
        self.assertTrue(result.endswith(f"and got {2 * asked}"), result)
        calls = page.eval_on_selector_all(
            "#calls li", "items => items.map((e) => e.textContent)"
        )
        self.assertIn(f"double({asked}) \u2192 {2 * asked}", calls)
        save_screenshot(page, "demo-page-calls")
