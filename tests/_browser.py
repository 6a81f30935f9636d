"""
Shared utilities of the browser tests: Chromium through Playwright's sync
API, npm packages the pages load, and txgraphsse servers run in a
subprocess.

Playwright's sync API blocks the thread that calls it, so the server a page
talks to cannot run on a reactor in the test's own process: L{start_server}
runs a module of L{tests.servers} as its own process and stops it by its PID.

Nothing here skips: a browser test whose tools are missing fails, with a
message that says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

T = TypeVar("T")

__all__ = [
    "ARTIFACTS",
    "CHROMIUM_ARGS",
    "REPO",
    "BrowserError",
    "ServerProcess",
    "await_js",
    "chromium_path",
    "free_port",
    "launch_chromium",
    "npm_install",
    "post_json",
    "require_playwright",
    "save_screenshot",
    "start_command",
    "start_server",
    "wait_until",
]

#: The repository's root.
REPO = Path(__file__).resolve().parent.parent
#: Screenshots and server logs of browser tests (gitignored).
ARTIFACTS = REPO / "tests" / "artifacts"

#: Arguments for a headless Chromium that makes no network traffic of its
#: own (updates, sync, QUIC probes): the tests talk to 127.0.0.1 only.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class BrowserError(AssertionError):
    """
    A browser test cannot run: a tool is missing or failed.  It is an
    C{AssertionError} so that the test fails rather than errors or skips.
    """


def chromium_path() -> str:
    """
    The Chromium executable: C{/usr/bin/chromium}, or C{chromium} on the
    C{PATH}.

    @raise BrowserError: when there is none.
    """
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrowserError(
        "Chromium is needed for the browser tests and was not found at"
        " /usr/bin/chromium or on the PATH: apt-get install chromium"
    )


def require_playwright() -> Callable[[], Any]:
    """
    Playwright's C{sync_playwright}, checking first that Chromium exists.

    @raise BrowserError: when Playwright for Python or Chromium is missing.
    """
    chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise BrowserError(
            "Playwright for Python is needed for the browser tests and cannot be"
            f" imported ({error}): pip install playwright (the tests use the"
            " system Chromium, so `playwright install` is not needed)"
        ) from None
    return sync_playwright


def launch_chromium(playwright: Playwright) -> Browser:
    """
    Launch the system Chromium headless with L{CHROMIUM_ARGS}.
    """
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
    )


_installed: set[Path] = set()
_install_lock = threading.Lock()


def npm_install(directory: Path, timeout: float = 300.0) -> Path:
    """
    Install the npm packages of C{directory} (its C{package.json}, with
    C{npm ci} when it has a C{package-lock.json}), once per process and only
    when C{node_modules} does not already hold every pinned version.

    @return: C{directory / "node_modules"}.
    @raise BrowserError: when npm is missing or the install fails.
    """
    directory = directory.resolve()
    modules = directory / "node_modules"
    with _install_lock:
        if directory in _installed or _up_to_date(directory):
            _installed.add(directory)
            return modules
        npm = shutil.which("npm")
        if npm is None:
            raise BrowserError(
                f"npm is needed to install the packages of {directory} and was"
                " not found on the PATH: apt-get install npm (or install Node.js)"
            )
        locked = (directory / "package-lock.json").exists()
        command = [npm, "ci" if locked else "install", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                command,
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BrowserError(
                f"{' '.join(command)} in {directory} took over {timeout:.0f}s"
            ) from None
        if done.returncode != 0 or not _up_to_date(directory):
            raise BrowserError(
                f"{' '.join(command)} in {directory} failed"
                f" (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        _installed.add(directory)
        return modules


def _up_to_date(directory: Path) -> bool:
    """
    Whether C{node_modules} holds each dependency of C{package.json} at the
    version it pins (a range is not checked beyond being installed).
    """
    try:
        wanted = json.loads((directory / "package.json").read_text())
    except (OSError, ValueError):
        return False
    for name, spec in (wanted.get("dependencies") or {}).items():
        manifest = directory / "node_modules" / name / "package.json"
        try:
            version = json.loads(manifest.read_text()).get("version")
        except (OSError, ValueError):
            return False
        if spec[:1].isdigit() and version != spec:
            return False
    return True


class ServerProcess:
    """
    A server module of L{tests.servers} running as a subprocess.

    @ivar port: the TCP port it listens on (127.0.0.1).
    @ivar log: the file its stderr (its log) goes to.
    """

    def __init__(
        self,
        process: subprocess.Popen[str],
        port: int,
        log: Path,
        logfile: IO[str],
        stdout: Path | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.log = log
        self._logfile = logfile
        #: The file its stdout goes to, when L{start_command} started it.
        self.stdout = stdout

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def log_text(self) -> str:
        """
        What the server has logged so far.
        """
        if not self._logfile.closed:
            self._logfile.flush()
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stdout_text(self) -> str:
        """
        What the server has printed so far (L{start_command} servers only).
        """
        if self.stdout is None:
            return ""
        try:
            return self.stdout.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop the server: SIGTERM to its own PID, then SIGKILL if it has not
        exited within C{timeout} seconds.
        """
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()
        self._logfile.close()


def start_server(
    module: str,
    *args: str,
    timeout: float = 30.0,
    name: str | None = None,
    port: int = 0,
) -> ServerProcess:
    """
    Run C{python -m <module> --port <port> <args>} from the repository's root
    and wait until it prints its port (a JSON line C{{"port": N}}).  Its
    stderr goes to C{tests/artifacts/<name>.server.log}.  Call L{ServerProcess.stop}
    when done (with C{addCleanup}).

    @param port: the port to listen on; 0 (any free one) unless a test must
        start a server again on the port it had.

    @raise BrowserError: when it exits or stays silent for C{timeout}
        seconds.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"{name or module.rsplit('.', 1)[-1]}.server.log"
    logfile = log.open("w")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=logfile,
        text=True,
    )
    lines: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(
        target=lambda: lines.append(stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(timeout)
    server = ServerProcess(process, 0, log, logfile)
    try:
        port = int(json.loads(lines[0])["port"]) if lines and lines[0] else None
    except (ValueError, KeyError, TypeError):
        port = None
    if port is None:
        server.stop()
        raise BrowserError(
            f"server {module} did not announce its port within {timeout:.0f}s"
            f" (exit code {process.returncode}); its log:\n{server.log_text()}"
        )
    server.port = port
    return server


def free_port() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_command(
    argv: Sequence[str], port: int, *, name: str, timeout: float = 30.0
) -> ServerProcess:
    """
    Run a command line as it is written for people (C{python ...}: the
    C{python} is this interpreter) from the repository's root, and wait until
    127.0.0.1:C{port} accepts connections.  Its stdout goes to
    C{tests/artifacts/<name>.stdout.log} (L{ServerProcess.stdout_text}), its
    stderr to C{tests/artifacts/<name>.server.log}.  Call
    L{ServerProcess.stop} when done.

    @raise BrowserError: when it exits or does not listen within C{timeout}
        seconds.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    argv = list(argv)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    log = ARTIFACTS / f"{name}.server.log"
    stdout = ARTIFACTS / f"{name}.stdout.log"
    logfile = log.open("w")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    with stdout.open("w") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=logfile,
            text=True,
        )
    server = ServerProcess(process, port, log, logfile, stdout)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise BrowserError(
                f"{' '.join(argv)} exited with {process.returncode} before it"
                f" listened; its output:\n{server.stdout_text()}{server.log_text()}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise BrowserError(
                    f"{' '.join(argv)} did not listen on port {port} within"
                    f" {timeout:.0f}s; its output:\n{server.stdout_text()}"
                    f"{server.log_text()}"
                ) from None
            time.sleep(0.05)
            continue
        return server


def await_js(page: Page, expression: str, timeout: float = 10.0) -> Any:
    """
    Evaluate the JavaScript C{expression} in C{page} and wait for the value
    of the Promise it gives (or the value itself), at most C{timeout}
    seconds: Playwright's C{evaluate} waits for a Promise without a limit.

    @raise Exception: Playwright's error, when the Promise rejects or the
        time is up.
    """
    ms = int(timeout * 1000)
    what = json.dumps(f"timed out after {ms} ms: {expression}")
    return page.evaluate(
        f"Promise.race([Promise.resolve().then(() => ({expression})),"
        f" new Promise((_, no) => setTimeout(() => no(new Error({what})), {ms}))])"
    )


def save_screenshot(page: Page, name: str) -> Path:
    """
    Save a screenshot of C{page} as C{tests/artifacts/<name>.png}.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def post_json(url: str, body: Any, timeout: float = 20.0) -> tuple[int, Any]:
    """
    C{POST} C{body} as C{application/json} to C{url}: the status and the
    decoded JSON answer (C{None} for an empty one), errors included.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def wait_until(
    check: Callable[[], T | None], timeout: float = 10.0, what: str = "a condition"
) -> T:
    """
    Call C{check} every 50 ms until it returns something other than C{None}
    or false, and return that.

    @raise AssertionError: after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
