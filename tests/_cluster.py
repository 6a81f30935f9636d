"""
What the worker and cluster tests share: real C{twistd -n graphsse}
processes and nginx started as subprocesses (stopped by their own PIDs), and
an SSE client of them on treq that parses with the project's own
L{EventStreamParser}, answers the server's calls, and reconnects with
C{Last-Event-ID} the way a browser does.

Nothing here relies on a server already running: every process is started
by the test that uses it, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IResponse

from txgraphsse import EventStreamParser, ServerSentEvent

from ._redis import free_port

__all__ = [
    "REPO",
    "ClusterClient",
    "Node",
    "Process",
    "alive",
    "children_of",
    "free_port",
    "poll",
    "run_cluster",
]

#: The checkout: the plugin lives in its C{twisted/plugins}.
REPO = Path(__file__).resolve().parent.parent

#: The test app every node loads.
APP = "tests.apps.cluster_app:setup"


def reactor() -> Any:
    from twisted.internet import reactor as default

    return default


def clock() -> IReactorTime:
    return cast(IReactorTime, reactor())


def run_cluster() -> ModuleType:
    """
    C{examples/cluster/run_cluster.py}, imported by its path (the examples
    are scripts, not a package), once per process.
    """
    name = "_txgraphsse_run_cluster"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    path = REPO / "examples" / "cluster" / "run_cluster.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def poll(
    predicate: Callable[[], bool],
    what: str,
    timeout: float,
    step: float = 0.02,
    detail: Callable[[], str] | None = None,
) -> None:
    """
    Wait, C{step} seconds at a time and at most C{timeout} seconds, until
    C{predicate()} holds; the failure says what C{detail()} says.
    """
    deadline = clock().seconds() + timeout
    while not predicate():
        if clock().seconds() > deadline:
            extra = f":\n{detail()}" if detail is not None else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}{extra}"
            )
        await deferLater(clock(), step, lambda: None)


def children_of(pid: int) -> set[int]:
    """
    The PIDs of C{pid}'s live child processes (Linux C{/proc}).
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists and is not a zombie.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Process:
    """
    One child process with its output in a log file of a temporary
    directory; stopped in the test's cleanup by its own PID if it still runs.

    @ivar process: the C{Popen}.
    @ivar log: the path of its output.
    @ivar workdir: its working directory.
    """

    def __init__(
        self,
        case: TestCase,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"txgraphsse-{name}-"))
        case.addCleanup(shutil.rmtree, self.workdir, True)
        self.log = self.workdir / "output.log"
        with self.log.open("wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                list(command),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        case.addCleanup(self.stop)

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        """
        Its output so far.
        """
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """
        If it still runs: C{SIGTERM} it (by its PID), C{SIGKILL} it after
        C{timeout} seconds, collect it, and C{SIGKILL} any child of it
        (nginx's workers, graphsse's workers) that outlived it.
        """
        if self.process.poll() is not None:
            return
        children = children_of(self.process.pid)
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        deadline = time.monotonic() + timeout
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """
        C{SIGKILL} it now (by its PID), as a crash would, and collect it.
        """
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    async def listening(self, port: int, timeout: float = 20.0) -> None:
        """
        Wait until it accepts connections on C{port}; fail (with its output)
        if it exits first or takes longer than C{timeout}.
        """
        deadline = clock().seconds() + timeout
        while not _listening(port):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.text()}"
                )
            if clock().seconds() > deadline:
                raise AssertionError(
                    f"{self.name} did not listen on {port}:\n{self.text()}"
                )
            await deferLater(clock(), 0.05, lambda: None)

    async def exited(self, timeout: float) -> int:
        """
        Wait until it has exited, at most C{timeout} seconds; its exit code.
        """
        await poll(lambda: self.process.poll() is not None, f"{self.name}", timeout)
        code = self.process.returncode
        assert code is not None
        return code


class Node(Process):
    """
    One C{twistd -n graphsse} on 127.0.0.1:C{port} with the test app.
    """

    def __init__(
        self, case: TestCase, name: str, port: int, redis_url: str, *argv: str
    ) -> None:
        self.port = port
        cluster = run_cluster()
        command = cluster.node_command(port, redis_url, ["--app", APP, *argv])
        super().__init__(case, name, command, cluster.python_env())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"


def start_nginx(case: TestCase, port: int, upstreams: Sequence[int]) -> Process:
    """
    nginx with C{examples/cluster/nginx.conf} on 127.0.0.1:C{port}, in front
    of the nodes on C{upstreams}.  Fails (never skips) without nginx.
    """
    cluster = run_cluster()
    if cluster.find_nginx() is None:
        case.fail(
            "nginx is not installed: the cluster test needs a real one;"
            " install it with `sudo apt-get install nginx`"
        )
    prefix = Path(tempfile.mkdtemp(prefix="txgraphsse-nginx-"))
    case.addCleanup(shutil.rmtree, prefix, True)
    command, _ = cluster.prepare_nginx(
        prefix, f"127.0.0.1:{port}", [f"127.0.0.1:{p}" for p in upstreams]
    )
    process = Process(case, "nginx", command)
    process.log = prefix / "logs" / "error.log"
    return process


class _Body(Protocol):
    """
    Receives one stream's body and hands each chunk to its client.
    """

    def __init__(self, client: ClusterClient) -> None:
        self._client = client
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._client._data(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done.callback(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class ClusterClient:
    """
    An SSE client of one URL: a stream that reconnects with C{Last-Event-ID}
    whenever it ends, like a browser's C{EventSource}, plus C{POST}s.

    It answers the server's C{runRequest}s for its routes (C{double} doubles
    a number; C{subscribeSSE}, a subscription to one of its routes, answers
    with a subscription number) by C{POST}ing the reply.

    @ivar events: every event received, over every connection.
    @ivar session_ids: the session id of each connection, in order.
    @ivar connections: how many times the stream was opened (a 200).
    @ivar subscriptions: client routes the server subscribed to.
    @ivar answered: results of C{POST}ed replies: C{(callbackId, status)}.
    """

    retry_delay = 0.1

    def __init__(
        self, url: str, streams: HTTPClient, posts: HTTPClient, name: str = ""
    ) -> None:
        self.url = url
        self.name = name
        self._streams = streams
        self._posts = posts
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []
        self.session_ids: list[str] = []
        self.connections = 0
        self.subscriptions: dict[str, int] = {}
        self.answered: list[tuple[str, int]] = []
        self._closing = False
        self._get: Deferred[IResponse] | None = None
        self._body: _Body | None = None
        self._retry: IDelayedCall | None = None
        self._replies: list[Deferred[Any]] = []
        self._idle: Deferred[None] = succeed(None)

    @property
    def session_id(self) -> str:
        """
        The current connection's session id.
        """
        assert self.session_ids, "no session yet"
        return self.session_ids[-1]

    # The stream

    async def open(self, timeout: float = 10.0) -> str:
        """
        Open the stream; fire with the session id once C{setId} arrived.
        """
        self._connect()
        await poll(lambda: bool(self.session_ids), f"{self.name} setId", timeout)
        return self.session_id

    def _connect(self) -> None:
        self._retry = None
        if self._closing:
            return
        self.parser = _continue(self.parser.last_event_id)
        headers = {"Accept": ["text/event-stream"]}
        if self.parser.last_event_id:
            headers["Last-Event-ID"] = [self.parser.last_event_id]
        self._idle = Deferred()
        get = self._get = self._streams.get(self.url, headers=headers, unbuffered=True)
        get.addCallbacks(self._response, self._lost)

    def _response(self, response: IResponse) -> None:
        self._get = None
        if response.code != 200 or self._closing:
            # Refused (an nginx 502 while a node dies): read it away, retry.
            treq.content(response).addBoth(self._lost)
            return
        self.connections += 1
        body = self._body = _Body(self)
        response.deliverBody(body)
        body.done.addBoth(self._lost)

    def _lost(self, _: object) -> None:
        self._get = None
        self._body = None
        idle, self._idle = self._idle, succeed(None)
        if self._closing:
            if not idle.called:
                idle.callback(None)
            return
        if not idle.called:
            idle.callback(None)
        self._retry = clock().callLater(self.retry_delay, self._connect)

    def _data(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            self.events.append(event)
            self._event(event)

    def _event(self, event: ServerSentEvent) -> None:
        try:
            message = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        route = message.get("route")
        if route == "setId":
            self.session_ids.append(message["args"])
        elif route == "runRequest":
            self._run_request(message["args"])

    def _run_request(self, args: list[Any]) -> None:
        request, _path, callback_id, session_id = args
        route = request.get("route")
        given = request.get("args")
        if route == "double":
            value = (given[0] if isinstance(given, list) else given) * 2
        elif route == "subscribeSSE":
            self.subscriptions[given[0]] = len(self.subscriptions) + 1
            value = self.subscriptions[given[0]]
        else:
            value = None
        reply = self.post({"args": value, "callbackId": callback_id}, session_id)
        self._replies.append(reply)

        def done(result: tuple[int, Any]) -> None:
            self._replies.remove(reply)
            self.answered.append((callback_id, result[0]))

        reply.addCallback(done)

    async def close(self) -> None:
        """
        Close the stream for good (no reconnecting), and wait until its
        connection and any reply in flight have ended.
        """
        self._closing = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._get is not None:
            self._get.cancel()
        if self._body is not None:
            self._body.close()
        await poll(lambda: self._idle.called and not self._replies, "closing", 10)

    # Reading

    def messages(self) -> list[Any]:
        """
        The JSON of every event received, C{setId}s and replays included.
        """
        found = []
        for event in self.events:
            try:
                found.append(json.loads(event.data))
            except ValueError:
                found.append(event.data)
        return found

    def received(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """
        The messages that satisfy C{predicate}.
        """
        return [m for m in self.messages() if predicate(m)]

    # The back-channel

    async def call(
        self, route: str, *args: Any, session: bool = False
    ) -> tuple[int, Any]:
        """
        C{POST} a route call; with C{session}, naming this client's session.
        """
        body: dict[str, Any] = {"route": route, "args": list(args)}
        return await self.post(body, self.session_id if session else None)

    def post(self, body: dict[str, Any], session_id: str | None) -> Deferred[Any]:
        """
        C{POST} C{body} (with C{sessionId} if given); fire with C{(status,
        JSON body or None)}.
        """
        if session_id is not None:
            body = {**body, "sessionId": session_id}
        sent = self._posts.post(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": ["application/json"]},
        )

        async def read(response: IResponse) -> tuple[int, Any]:
            raw = await treq.content(response)
            return response.code, json.loads(raw) if raw else None

        return sent.addCallback(lambda r: Deferred.fromCoroutine(read(r)))


def _continue(last_event_id: str) -> EventStreamParser:
    """
    A fresh parser for a new connection that keeps the last event id, as an
    C{EventSource} does across reconnections.
    """
    parser = EventStreamParser()
    if last_event_id:
        parser.feed(f"id: {last_event_id}\n".encode())
        parser.last_event_id = last_event_id
    return parser
