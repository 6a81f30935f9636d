"""
Every code snippet of the README and of C{docs/*.md} runs as written.

The code blocks are read with a CommonMark parser: fenced blocks in every
page, and the README's indented ones (its commands).  A block runs by its
language:

  - C{python}: a program, run by this interpreter (the project's venv) from
    the checkout's root, which must exit 0 within L{TIMEOUT} seconds and
    write no traceback.
  - C{sh}, C{bash}, C{shell}, C{console} (and the README's indented
    blocks): the commands, with C{.venv/bin/} meaning this interpreter's
    environment.  A C{twistd -n graphsse ...} command is started, probed (a
    stream's C{GET} must bring C{setId}) and stopped by its PID; the rest
    run in one bash script that must exit 0.  A block that installs with
    pip runs in a scratch copy of the package with a venv of its own, so
    that the project's venv is never touched.

Ports 8080, 9100 and 6379 in a block stand for free ports the test picks
(and, for 6379, a C{redis-server} it starts), in the block and in its
server's command alike.

A marker in an HTML comment on the line before a block says more:

  - C{<!-- snippet: server: COMMAND -->}: start COMMAND first (as above)
    and stop it after the block; C{server} alone, in a shell block: its
    commands are servers.
  - C{<!-- snippet: serves -->}: the Python program is a server on 8080:
    started, probed, stopped.
  - C{<!-- snippet: stream -->}: the command keeps printing a stream; it
    must print an event within seconds, and is then stopped.
  - C{<!-- snippet: continues -->}: a Python block that runs after the one
    before it on the page, as one program; C{<!-- snippet: aside -->}: a
    Python block that runs alone, and that a later C{continues} passes
    over.
  - C{<!-- snippet: file: PATH -->}: the block is the file PATH of the
    checkout (which L{DeployTests} checks with the tool that reads it).
  - C{<!-- snippet: skip: REASON -->}: not run (output, a synopsis, a
    fragment); the reason (the rest of the comment) says where its
    runnable version is, if any.

Other languages (C{js}, C{html}, C{text}, ...) are shown, not run.  The
README's commands that another test runs (the examples) are listed in
L{ELSEWHERE}, and that test must name them.  Each block is a test of its
own, named after its page and line.

The C{deploy/} files are checked by their own tools: C{nginx -t}, C{caddy
validate}, C{haproxy -c} and C{systemd-analyze verify}; each proxy is then
run in front of a real C{twistd graphsse}, and an event published through
the server API must come through it at once; the systemd unit's command is
run as a server; the Dockerfile's files must exist and its command must be
a valid C{twistd graphsse} command line (no Docker daemon here to build
it).  Relative links of the guide must point at files and headings that
exist.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from markdown_it import MarkdownIt
from twisted.trial.unittest import SynchronousTestCase

from ._redis import RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent
#: The pages whose snippets run.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Seconds a snippet (or a server's start) may take.
TIMEOUT = 90.0
#: This interpreter's environment: what C{.venv/bin/} means in a command.
BIN = Path(sys.executable).parent
#: Ports a snippet may name, each replaced by a free one.
PORTS = (8080, 9100, 6379)
#: Languages run as Python and as shell commands.
PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell", "console"}
#: Commands of the README that another test runs: a piece of the command,
#: and the file that must name it.
ELSEWHERE = {
    "scripts/test": ".ci/run",
    "examples/chat/app.py": "tests/test_examples.py",
    "examples/dashboard/app.py": "tests/test_examples.py",
    "examples/calls/app.py": "tests/test_examples.py",
    "examples/python_calls.py": "tests/test_example_python_calls.py",
    "examples/api_curl.sh": "tests/test_api_client.py",
    "examples/publisher.mjs": "tests/test_api_client.py",
    "examples/cluster/run_cluster.py": "tests/_cluster.py",
}
#: What a scratch install copies of the checkout.
PACKAGE = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "txgraphsse"]

_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$", re.S)
_KINDS = {"server", "serves", "stream", "continues", "aside", "file", "skip"}


class Snippet:
    """
    One code block: its page, first line, language, text and marker.
    """

    def __init__(
        self, page: Path, line: int, lang: str, text: str, marker: dict[str, str]
    ) -> None:
        self.page = page
        self.line = line
        self.lang = lang
        self.text = text
        self.marker = marker
        #: The Python block this one continues, if any.
        self.previous: Snippet | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def runs_as(self) -> str | None:
        """
        C{"python"}, C{"shell"}, or L{None} (not run).
        """
        if "skip" in self.marker or "file" in self.marker:
            return None
        if self.lang in PYTHON:
            return "python"
        if self.lang in SHELL or self.lang == "":
            return "shell"
        return None


def parse_marker(text: str) -> dict[str, str]:
    """
    The kinds of a marker's text (C{stream; server: CMD}) and their
    arguments.

    @raise ValueError: for a kind this module does not know.
    """
    marker = {}
    text, skip, reason = text.partition("skip:")
    if skip:  # a reason may hold anything, ";" too
        marker["skip"] = reason.strip()
    for part in filter(None, (p.strip() for p in text.split(";"))):
        kind, _, argument = part.partition(":")
        kind = kind.strip()
        if kind not in _KINDS:
            raise ValueError(f"unknown snippet marker {kind!r}")
        marker[kind] = argument.strip()
    return marker


def snippets(page: Path) -> list[Snippet]:
    """
    The code blocks of C{page}: every fenced one, and, in the README, the
    indented ones (its commands; elsewhere they are wire samples and
    diagrams).
    """
    tokens = MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8"))
    found: list[Snippet] = []
    marker: dict[str, str] = {}
    last_python: Snippet | None = None
    for token in tokens:
        if token.type == "html_block":
            match = _MARKER.match(token.content)
            marker = parse_marker(match.group(1)) if match else {}
            continue
        if token.type == "fence" or (
            token.type == "code_block" and page.name == "README.md"
        ):
            lang = token.info.split()[0] if token.info.strip() else ""
            assert token.map is not None
            snippet = Snippet(page, token.map[0] + 1, lang, token.content, marker)
            if lang in PYTHON and "skip" not in marker:
                if "continues" in marker:
                    snippet.previous = last_python
                if "aside" not in marker:
                    last_python = snippet
            found.append(snippet)
        if token.type not in ("html_block",) and token.nesting >= 0:
            marker = {}
    return found


def commands(text: str, lang: str) -> list[str]:
    """
    The commands of a shell block: continuation lines joined, C{&&} chains
    split, comments and (in C{console}) output lines left out.
    """
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        found.extend(part.strip() for part in line.split(" && "))
    return found


def is_server(command: str) -> bool:
    """
    Whether C{command} runs a server in the foreground (C{twistd -n}).
    """
    words = shlex.split(command)
    return (
        bool(words)
        and Path(words[0]).name == "twistd"
        and ("-n" in words or "--nodaemon" in words)
    )


class Ports:
    """
    Free ports for the ports a snippet names, and a C{redis-server} for
    6379 when it names that.
    """

    def __init__(self, case: SynchronousTestCase, *texts: str) -> None:
        self.map: dict[int, int] = {}
        for port in PORTS:
            if any(re.search(rf"\b{port}\b", text) for text in texts):
                if port == 6379:
                    redis = RedisServer()
                    case.addCleanup(redis.cleanup)
                    redis.start()
                    self.map[port] = redis.port
                else:
                    self.map[port] = free_port()

    def __call__(self, text: str) -> str:
        for port, free in self.map.items():
            text = re.sub(rf"\b{port}\b", str(free), text)
        return text

    def port(self, original: int = 8080) -> int:
        return self.map.get(original, original)


def local(command: str, bindir: Path = BIN) -> str:
    """
    C{command} with C{.venv/bin/} as C{bindir}, and a leading C{python} or
    C{python3} as this interpreter.
    """
    command = re.sub(r"(?<![\w/.-])\.venv/bin/", f"{bindir}/", command)
    return re.sub(r"^python3? ", f"{sys.executable} ", command)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """
    A server process started from a command line, stopped by its PID.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        argv: list[str],
        port: int,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.port = port
        # Open for the process's life; closed by stop.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=environment() if env is None else env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        case.addCleanup(self.stop)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{shlex.join(self.argv)} exited with"
                    f" {self.process.returncode}:\n{self.output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{shlex.join(self.argv)} did not listen on {self.port}:"
                        f"\n{self.output()}"
                    ) from None
                time.sleep(0.1)

    def probe(self, path: str = "/sse") -> str:
        """
        Open a stream on C{path} and read until the session's C{setId}.
        """
        self.wait_listening()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 10) as conn:
                    conn.sendall(
                        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Accept: text/event-stream\r\n\r\n".encode()
                    )
                    got = b""
                    while b"setId" not in got:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    if b"setId" in got:
                        return got.decode("utf-8", "replace")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no setId from {shlex.join(self.argv)} on {path}:\n{self.output()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """
        SIGTERM to the server's PID (SIGKILL if it lingers), and wait.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if not self.log.closed:
            self.log.close()


def start_server(
    case: SynchronousTestCase,
    command: str,
    ports: Ports,
    cwd: Path = REPO,
    bindir: Path = BIN,
    env: dict[str, str] | None = None,
) -> Server:
    """
    Start the server C{command} (ports replaced) and probe it.
    """
    argv = shlex.split(local(ports(command), bindir))
    if Path(argv[0]).name == "twistd" and not any(
        a.startswith("--pidfile") for a in argv
    ):
        argv.insert(1, "--pidfile=")  # no twistd.pid in the checkout
    server = Server(case, argv, ports.port(), cwd, env)
    path = "/sse"
    if "--path" in argv:
        path = "/" + argv[argv.index("--path") + 1].strip("/")
    server.probe(path)
    return server


_scratch: dict[str, Path] = {}


def scratch() -> Path:
    """
    A copy of the package (what C{pip install .} reads) in a temporary
    directory, made once per process (and removed at its exit); its C{.venv}
    is made by the first block that needs it.
    """
    if "dir" not in _scratch:
        target = Path(tempfile.mkdtemp(prefix="txgraphsse-docs-"))
        atexit.register(shutil.rmtree, target, True)
        for name in PACKAGE:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source,
                    target / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(source, target / name)
        plugin = target / "twisted" / "plugins"
        plugin.mkdir(parents=True)
        shutil.copy2(REPO / "twisted" / "plugins" / "graphsse.py", plugin)
        _scratch["dir"] = target
    return _scratch["dir"]


def run_shell(
    case: SynchronousTestCase, script: str, cwd: Path, env: dict[str, str]
) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    case.assertEqual(
        done.returncode,
        0,
        f"exit {done.returncode}:\n{script}\n{done.stdout}\n{done.stderr}",
    )
    return done.stdout


class SnippetTests(SynchronousTestCase):
    """
    Each snippet of the README and the guide, run as written (a method per
    snippet is added below).
    """

    def run_snippet(self, snippet: Snippet) -> None:
        kind = snippet.runs_as
        if kind == "python":
            self.run_python(snippet)
        elif kind == "shell":
            self.run_commands(snippet)
        elif "file" in snippet.marker:
            path = REPO / snippet.marker["file"]
            self.assertTrue(path.is_file(), f"{snippet.where}: no {path}")
            self.assertEqual(
                snippet.text.rstrip(),
                path.read_text().rstrip(),
                f"{snippet.where} is not {snippet.marker['file']} as it is",
            )

    def servers(self, snippet: Snippet, ports: Ports) -> None:
        command = snippet.marker.get("server")
        if command:
            start_server(self, command, ports)

    def run_python(self, snippet: Snippet) -> None:
        chain = []
        link: Snippet | None = snippet
        while link is not None:
            chain.insert(0, link.text)
            link = link.previous
        source = "\n".join(chain)
        ports = Ports(self, source, snippet.marker.get("server", ""))
        self.servers(snippet, ports)
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-snippet-"))
        self.addCleanup(shutil.rmtree, directory, True)
        program = directory / "snippet.py"
        program.write_text(ports(source))
        if "serves" in snippet.marker:
            start_server(self, f"{sys.executable} {program}", ports)
            return
        try:
            done = subprocess.run(
                [sys.executable, str(program)],
                cwd=REPO,
                env=environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.fail(f"{snippet.where} ran over {TIMEOUT:.0f}s")
        self.assertEqual(
            done.returncode,
            0,
            f"{snippet.where} exited {done.returncode}:\n{done.stdout}{done.stderr}",
        )
        for bad in ("Traceback", "Unhandled error"):
            self.assertNotIn(bad, done.stderr, f"{snippet.where}:\n{done.stderr}")

    def run_commands(self, snippet: Snippet) -> None:
        lines = commands(snippet.text, snippet.lang)
        self.assertTrue(lines, f"{snippet.where}: no command (mark it skip?)")
        elsewhere = {
            piece: test
            for piece, test in ELSEWHERE.items()
            if any(piece in line for line in lines)
        }
        if elsewhere:
            for piece, test in elsewhere.items():
                self.assertIn(
                    piece,
                    (REPO / test).read_text(),
                    f"{snippet.where}: {test} should run {piece}",
                )
            return
        ports = Ports(self, snippet.text, snippet.marker.get("server", ""))
        self.servers(snippet, ports)
        installs = any("pip install" in line for line in lines)
        cwd, bindir = (
            (scratch(), scratch() / ".venv" / "bin")
            if installs
            else (
                REPO,
                BIN,
            )
        )
        env = environment()
        if installs:
            env.pop("PYTHONPATH")
            env["PATH"] = os.pathsep.join(
                [str(bindir), *env["PATH"].split(os.pathsep)[1:]]
            )
            if not any("-m venv .venv" in line for line in lines):
                run_shell(self, "python3 -m venv .venv", cwd, env)
        plain = [line for line in lines if not is_server(line)]
        served = [line for line in lines if is_server(line)]
        script = "\n".join(
            line if installs else local(ports(line), bindir) for line in plain
        )
        if "stream" in snippet.marker:
            self.run_stream(snippet, ports(local(script, bindir)))
        elif script:
            run_shell(self, ports(script), cwd, env)
        for line in served:
            start_server(self, line, ports, cwd, bindir, env).stop()

    def run_stream(self, snippet: Snippet, script: str) -> None:
        """
        Run C{script}, which prints a stream that does not end, until it has
        printed an event; then stop it by its PID.
        """
        with tempfile.TemporaryFile(mode="w+") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {script}"],
                cwd=REPO,
                env=environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            deadline = time.monotonic() + 20
            try:
                while True:
                    out.seek(0)
                    printed = out.read()
                    if "\ndata:" in printed or process.poll() is not None:
                        break
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
            finally:
                if process.poll() is None:
                    process.terminate()
                process.wait(10)
        self.assertIn("data:", printed, f"{snippet.where} printed:\n{printed}")


def _name(snippet: Snippet) -> str:
    page = re.sub(r"\W", "_", snippet.page.stem.lower())
    return f"test_{page}_line_{snippet.line}"


def _all() -> Iterator[Snippet]:
    for page in PAGES:
        yield from snippets(page)


def _add_tests() -> None:
    for snippet in _all():
        if snippet.runs_as is None and "file" not in snippet.marker:
            continue

        def test(self: SnippetTests, snippet: Snippet = snippet) -> None:
            self.run_snippet(snippet)

        test.__name__ = _name(snippet)
        test.__doc__ = f"{snippet.where} ({snippet.lang or 'indented'}) runs."
        setattr(SnippetTests, test.__name__, test)


_add_tests()


class PageTests(SynchronousTestCase):
    """
    The pages themselves: markers and links.
    """

    def test_skips_say_why(self) -> None:
        """
        Every C{skip} marker gives a reason, and every C{continues} follows
        a Python block.
        """
        for snippet in _all():
            if "skip" in snippet.marker:
                self.assertTrue(snippet.marker["skip"], snippet.where)
            if "continues" in snippet.marker:
                self.assertIsNotNone(snippet.previous, snippet.where)

    def test_guide_has_runnable_snippets(self) -> None:
        """
        The guide's pages are there, and each of them but the index and
        the troubleshooting page runs at least one snippet.
        """
        pages = {p.stem for p in PAGES}
        for page in [
            "GUIDE",
            "quickstart",
            "embedding",
            "channels",
            "calls",
            "server-api",
            "security",
            "deployment",
            "operations",
            "troubleshooting",
        ]:
            self.assertIn(page, pages)
            if page not in ("GUIDE", "troubleshooting"):
                runs = [
                    s
                    for s in snippets(REPO / "docs" / f"{page}.md")
                    if s.runs_as is not None
                ]
                self.assertTrue(runs, f"docs/{page}.md runs no snippet")

    def test_links(self) -> None:
        """
        Every relative link of the README and the guide names a file that
        exists, and an anchor that one of its headings makes.
        """
        for page in PAGES:
            text = page.read_text(encoding="utf-8")
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                self.assertTrue(file.exists(), f"{page.name}: {target}")
                if anchor and file.suffix == ".md":
                    self.assertIn(anchor, _anchors(file), f"{page.name}: {target}")


def _anchors(page: Path) -> set[str]:
    """
    The anchors GitHub makes of C{page}'s headings.
    """
    found = set()
    for token in MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8")):
        if token.type == "inline" and token.map is not None:
            line = page.read_text(encoding="utf-8").splitlines()[token.map[0]]
            if line.startswith("#"):
                title = token.content.lower()
                anchor = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
                found.add(anchor)
    return found


class DeployTests(SynchronousTestCase):
    """
    The files of C{deploy/}, checked by the tools that read them, and the
    proxies run in front of a real server.
    """

    def tool(self, name: str, package: str | None = None) -> str:
        found = shutil.which(name) or next(
            (
                p
                for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                if os.access(p, os.X_OK)
            ),
            None,
        )
        if found is None:
            self.fail(f"{name} is not installed: apt-get install {package or name}")
        return found

    def check(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(
            done.returncode, 0, f"{shlex.join(argv)}:\n{done.stdout}{done.stderr}"
        )
        return done.stdout + done.stderr

    def temp(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-deploy-"))
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def backend(self) -> tuple[Server, int]:
        """
        A C{twistd graphsse} with a channel and an API key, on a free port.
        """
        port = free_port()
        ports = Ports(self)
        ports.map[8080] = port
        server = start_server(
            self,
            ".venv/bin/twistd -n graphsse --port 8080 --channels news"
            " --api-key KEY --trusted-proxy 127.0.0.1",
            ports,
        )
        return server, port

    def through(self, front: int, back: int) -> None:
        """
        A stream through the proxy on C{front} gets an event published (on
        the server's own port, C{back}) within a second.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", front), 10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with conn:
            conn.sendall(
                f"GET /sse?channels=news HTTP/1.1\r\nHost: 127.0.0.1:{front}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            got = b""
            while b"setId" not in got:
                chunk = conn.recv(4096)
                self.assertTrue(chunk, got)
                got += chunk
            self.assertIn(b" 200 ", got.split(b"\r\n", 1)[0])
            request = urllib.request.Request(
                f"http://127.0.0.1:{back}/api/publish",
                data=json.dumps({"channel": "news", "data": "through"}).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "apikey KEY",
                },
            )
            sent = time.monotonic()
            urllib.request.urlopen(request, timeout=10).read()
            conn.settimeout(5)
            while b"through" not in got:
                chunk = conn.recv(4096)
                self.assertTrue(chunk, got)
                got += chunk
            self.assertLess(time.monotonic() - sent, 1.0, "the proxy held it back")

    def test_nginx(self) -> None:
        """
        C{deploy/nginx.conf} passes C{nginx -t} inside an C{http} block, and
        nginx with it passes an event on at once.
        """
        nginx = self.tool("nginx")
        _, back = self.backend()
        front = free_port()
        prefix = self.temp()
        (prefix / "logs").mkdir()
        site = (REPO / "deploy" / "nginx.conf").read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{front};")
        site = site.replace("127.0.0.1:8080", f"127.0.0.1:{back}")
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
            "daemon off;\nevents {}\nhttp {\n"
            f"    access_log {prefix}/logs/access.log;\n"
            f"    client_body_temp_path {prefix}/client;\n"
            f"    proxy_temp_path {prefix}/proxy;\n"
            f"    include {prefix}/site.conf;\n}}\n"
        )
        argv = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        argv += ["-e", str(prefix / "logs" / "error.log")]
        self.check([*argv, "-t"])
        proxy = Server(self, argv, front, prefix)
        proxy.wait_listening()
        self.through(front, back)

    def test_caddy(self) -> None:
        """
        C{deploy/Caddyfile} passes C{caddy validate}, and Caddy with it
        (on plain HTTP, without its admin endpoint) passes an event on at
        once.
        """
        caddy = self.tool("caddy")
        home = self.temp()
        env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"))
        env["XDG_CONFIG_HOME"] = str(home / "config")
        config = REPO / "deploy" / "Caddyfile"
        self.check(
            [caddy, "validate", "--config", str(config), "--adapter", "caddyfile"],
            env,
        )
        _, back = self.backend()
        front = free_port()
        text = config.read_text()
        text = text.replace("sse.example.com {", f"http://127.0.0.1:{front} {{")
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{back}")
        local_config = home / "Caddyfile"
        local_config.write_text("{\n\tadmin off\n}\n\n" + text)
        argv = [caddy, "run", "--config", str(local_config), "--adapter", "caddyfile"]
        proxy = Server(self, argv, front, home)
        proxy.wait_listening()
        self.through(front, back)

    def test_haproxy(self) -> None:
        """
        C{deploy/haproxy.cfg} passes C{haproxy -c}, and HAProxy with it
        passes an event on at once.
        """
        haproxy = self.tool("haproxy")
        config = REPO / "deploy" / "haproxy.cfg"
        self.check([haproxy, "-c", "-f", str(config)])
        _, back = self.backend()
        front = free_port()
        text = config.read_text()
        text = text.replace("bind :80", f"bind 127.0.0.1:{front}")
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{back}")
        local_config = self.temp() / "haproxy.cfg"
        local_config.write_text(text)
        proxy = Server(self, [haproxy, "-db", "-f", str(local_config)], front, REPO)
        proxy.wait_listening()
        self.through(front, back)

    def test_systemd_unit(self) -> None:
        """
        C{deploy/graphsse.service} passes C{systemd-analyze verify} (with
        this venv for C{/opt/graphsse/.venv}), and its C{ExecStart} serves.
        """
        analyze = self.tool("systemd-analyze", "systemd")
        unit = (REPO / "deploy" / "graphsse.service").read_text()
        venv = str(BIN.parent)
        local_unit = unit.replace("/opt/graphsse/.venv", venv).replace(
            "WorkingDirectory=/opt/graphsse", f"WorkingDirectory={REPO}"
        )
        path = self.temp() / "graphsse.service"
        path.write_text(local_unit)
        said = self.check([analyze, "verify", str(path)])
        self.assertEqual(said.strip(), "", said)
        start = re.search(r"^ExecStart=(.*)$", unit, re.M)
        assert start is not None
        command = start.group(1).replace("/opt/graphsse/.venv/bin/", ".venv/bin/")
        start_server(self, command, Ports(self, command))

    def test_dockerfile(self) -> None:
        """
        The files C{deploy/Dockerfile} copies exist, and its entry point and
        command make a C{twistd graphsse} command line that parses.
        """
        from txgraphsse.tap import Options

        text = (REPO / "deploy" / "Dockerfile").read_text()
        joined = re.sub(r"\\\n", " ", text)
        instructions = [
            line.split(None, 1)
            for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        known = {"FROM", "COPY", "RUN", "USER", "WORKDIR", "EXPOSE"}
        known |= {"ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL", "STOPSIGNAL"}
        argv: list[str] = []
        for instruction, rest in instructions:
            self.assertIn(instruction, known)
            if instruction == "COPY":
                for source in rest.split()[:-1]:
                    self.assertTrue((REPO / source).exists(), source)
            if instruction in ("ENTRYPOINT", "CMD"):
                argv += json.loads(rest)
        self.assertEqual(argv[:2], ["twistd", "--nodaemon"])
        options = Options()
        options.parseOptions(argv[argv.index("graphsse") + 1 :])
        self.assertEqual(options["ports"], ["tcp:8080"])
