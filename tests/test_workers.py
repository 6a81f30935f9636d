"""
C{twistd graphsse --workers N}: the options, and real processes.

The process tests run the real C{twistd -n graphsse --workers 2 --redis ...}
against their own C{redis-server} on a free port, and find which worker
serves a stream by asking it (the test app's C{pid} route, which a C{POST}
naming a session reaches on the worker holding that session).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from txgraphsse import SSEBackend, SSEService, tap
from txgraphsse._ports import TCPPort, parse_tcp
from txgraphsse._workers import WorkerSupervisor

from ._cluster import (
    ClusterClient,
    Node,
    Process,
    alive,
    children_of,
    clock,
    free_port,
    poll,
    run_cluster,
)
from ._redis import RedisServer

#: Seconds a stop may take: SIGTERM to the parent, every worker gone.
STOP = 5.0


def _options(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{--workers}, C{--redis} and C{--redis-prefix}.
    """

    def test_default_is_one_process_in_memory(self) -> None:
        """
        By default there is one worker and no Redis: C{makeService} makes
        the single-process service with the in-memory broker.
        """
        options = _options()
        self.assertEqual(options["workers"], 1)
        self.assertIsNone(options["redis"])
        self.assertEqual(options["redis-prefix"], "graphsse")
        top = tap.makeService(options)
        assert isinstance(top, MultiService)
        first = next(iter(top))
        assert isinstance(first, SSEService)
        self.assertFalse(first.backend.broker.clustered)

    def test_workers_need_redis(self) -> None:
        """
        More than one worker without C{--redis} is refused: workers share
        nothing but what a broker they all reach carries.
        """
        error = self.assertRaises(UsageError, _options, "--workers", "2")
        self.assertIn("--redis", str(error))
        self.assertRaises(UsageError, _options, "--workers", "0")
        self.assertRaises(UsageError, _options, "--redis", "http://x")

    def test_workers_need_tcp(self) -> None:
        """
        Workers share TCP ports only.
        """
        for port in ("ssl:8443:privateKey=k.pem", "unix:/tmp/s.sock"):
            self.assertRaises(
                UsageError,
                _options,
                "--workers",
                "2",
                "--redis",
                "redis://127.0.0.1:1/0",
                "--port",
                port,
            )

    def test_parse_tcp(self) -> None:
        """
        L{parse_tcp} reads the C{tcp:} strports descriptions (and bare
        numbers), escaped colons of IPv6 addresses included.
        """
        self.assertEqual(parse_tcp("8080"), TCPPort(8080))
        self.assertEqual(parse_tcp("tcp:8080"), TCPPort(8080))
        self.assertEqual(
            parse_tcp("tcp:8080:interface=127.0.0.1:backlog=500"),
            TCPPort(8080, "127.0.0.1", 500),
        )
        self.assertEqual(
            parse_tcp("tcp:port=0:interface=\\:\\:1"), TCPPort(0, "::1", 50)
        )
        for bad in ("tcp:", "tcp:x", "tcp:1:2", "tcp:1:color=red", "ssl:1", "1:2"):
            self.assertRaises(ValueError, parse_tcp, bad)

    def test_redis_makes_a_redis_broker(self) -> None:
        """
        C{--redis} gives the single process a L{txgraphsse.redis.RedisBroker}
        with the URL and prefix asked for (not started here).
        """
        from txgraphsse.redis import RedisBroker

        top = tap.makeService(
            _options("--redis", "redis://127.0.0.1:1/3", "--redis-prefix", "p")
        )
        first = next(iter(top))  # type: ignore[call-overload]
        assert isinstance(first, SSEService)
        broker = first.backend.broker
        assert isinstance(broker, RedisBroker)
        self.assertEqual((broker.url, broker.prefix), ("redis://127.0.0.1:1/3", "p"))

    def test_redis_refuses_a_ready_backend(self) -> None:
        """
        An C{--app} that is an C{SSEBackend} already has its broker, so
        C{--redis} cannot give it one: a usage error, not a silent
        in-memory node.
        """
        module = type(sys)("_txgraphsse_ready_backend")
        module.backend = SSEBackend()  # type: ignore[attr-defined]
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__)
        options = _options(
            "--redis", "redis://127.0.0.1:1/0", "--app", f"{module.__name__}:backend"
        )
        self.assertRaises(UsageError, tap.makeService, options)

    def test_workers_service(self) -> None:
        """
        With C{--workers 3}, the service is a L{WorkerSupervisor} for three
        workers and the ports given; it keeps the command line for them.
        """
        argv = ("--workers", "3", "--redis", "redis://127.0.0.1:1/0", "--port", "0")
        top = tap.makeService(_options(*argv))
        (supervisor,) = list(top)  # type: ignore[call-overload]
        assert isinstance(supervisor, WorkerSupervisor)
        self.assertEqual(supervisor.count, 3)
        self.assertEqual(supervisor.specs, [TCPPort(0)])
        self.assertEqual(supervisor._argv, list(argv))

    def test_bind(self) -> None:
        """
        Where C{SO_REUSEPORT} exists, each worker slot gets its own socket,
        all on the same port (port 0: the one the first got); the sockets
        close on stop.
        """
        options = _options(
            "--workers",
            "2",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--port",
            "tcp:0:interface=127.0.0.1",
        )
        supervisor = WorkerSupervisor(options)
        supervisor.bind()
        sockets = supervisor._sockets
        self.addCleanup(lambda: [s.close() for group in sockets for s in group])
        (group,) = sockets
        self.assertEqual(len(group), 2 if supervisor.reuse_port else 1)
        port = supervisor.ports[0]
        self.assertNotEqual(port, 0)
        self.assertEqual({s.getsockname() for s in group}, {("127.0.0.1", port)})
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        self.successResultOf(supervisor.stopService())
        self.assertTrue(all(s.fileno() == -1 for s in group))


class WorkerProcessTests(TestCase):
    """
    A real C{twistd -n graphsse --workers 2} and its workers.
    """

    timeout = 90

    def setUp(self) -> None:
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        from twisted.internet import reactor

        self.stream_pool = HTTPConnectionPool(reactor, False)
        # A connection per POST too: a kept-alive one could lead to a worker
        # the test kills.
        self.post_pool = HTTPConnectionPool(reactor, False)
        self.streams = HTTPClient(Agent(reactor, pool=self.stream_pool))
        self.posts = HTTPClient(Agent(reactor, pool=self.post_pool))
        self.clients: list[ClusterClient] = []
        self.addCleanup(self._close_clients)

    async def _close_clients(self) -> None:
        for client in self.clients:
            await client.close()

    async def _start(self, *argv: str) -> Node:
        node = Node(
            self,
            "workers",
            free_port(),
            self.redis.url,
            "--workers",
            "2",
            "--keepalive",
            "1",
            "--history",
            "100",
            "--retry",
            "100",
            *argv,
        )
        await node.listening(node.port)
        await poll(lambda: len(children_of(node.pid)) == 2, "two workers", 10)
        return node

    async def _client(self, node: Node) -> ClusterClient:
        client = ClusterClient(
            node.url, self.streams, self.posts, f"c{len(self.clients)}"
        )
        self.clients.append(client)
        await client.open()
        return client

    async def _owner(self, client: ClusterClient) -> int:
        """
        The PID of the worker holding C{client}'s session, whichever worker
        the C{POST} lands on.
        """
        status, body = await client.call("pid", session=True)
        self.assertEqual(status, 200, body)
        return int(body["args"])

    async def _spread(self, node: Node) -> dict[int, list[ClusterClient]]:
        """
        Open streams until both workers hold some (at most 24).
        """
        by_worker: dict[int, list[ClusterClient]] = {}
        while len(by_worker) < 2 or min(len(c) for c in by_worker.values()) < 2:
            self.assertLess(len(self.clients), 24, f"all on one worker: {by_worker}")
            client = await self._client(node)
            by_worker.setdefault(await self._owner(client), []).append(client)
        return by_worker

    async def test_workers_share_the_port(self) -> None:
        """
        Streams land on both workers (the parent's children); a broadcast
        from whichever worker gets the C{POST} reaches the streams of both,
        and a push reaches a stream on the other worker.  C{SIGTERM} to the
        parent stops everything within 5 s: every stream gets its
        C{shutdown} event, and no worker outlives the parent.
        """
        node = await self._start()
        workers = children_of(node.pid)
        by_worker = await self._spread(node)
        self.assertEqual(set(by_worker), workers)

        sender = self.clients[0]
        for n in range(4):  # some land on each worker
            status, _ = await sender.call("broadcast", {"n": n})
            self.assertEqual(status, 200)

        def every_broadcast() -> bool:
            return all(
                len(c.received(lambda m: isinstance(m, dict) and "n" in m)) == 4
                for c in self.clients
            )

        await poll(every_broadcast, "the broadcasts on every stream", 10)
        for client in self.clients:
            got = [
                m["n"]
                for m in client.received(lambda m: isinstance(m, dict) and "n" in m)
            ]
            self.assertEqual(got, [0, 1, 2, 3])

        one, other = (clients[0] for clients in by_worker.values())
        status, body = await one.call("push", other.session_id, {"to": "other"})
        self.assertEqual((status, body["args"]["value"]), (200, 1))
        await poll(
            lambda: bool(other.received(lambda m: m == {"to": "other"})), "push", 10
        )
        self.assertEqual(one.received(lambda m: m == {"to": "other"}), [])

        os.kill(node.pid, signal.SIGTERM)
        code = await node.exited(STOP)
        self.assertEqual(code, -signal.SIGTERM, node.text())
        self.assertEqual([pid for pid in workers if alive(pid)], [])
        for client in self.clients:
            shutdowns = [e for e in client.events if e.type == "shutdown"]
            self.assertEqual(len(shutdowns), 1, client.name)
        text = node.text()
        self.assertIn("Server Shut Down.", text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("died", text)

    async def test_dead_worker_is_replaced(self) -> None:
        """
        A worker killed with C{SIGKILL} is restarted; its streams come back
        (on either worker) with every event they missed, none twice, and
        the port never stops accepting.
        """
        node = await self._start()
        by_worker = await self._spread(node)
        victim = next(iter(by_worker))
        sender = next(c for pid, cs in by_worker.items() if pid != victim for c in cs)
        status, _ = await sender.call("broadcast", {"n": 0})
        self.assertEqual(status, 200)
        # A client that has seen an event id resumes after it; one that
        # has not (as a browser) starts afresh.
        await poll(lambda: all(_numbers(c) for c in self.clients), "event 0", 10)

        os.kill(victim, signal.SIGKILL)
        await poll(
            lambda: len(children_of(node.pid) - {victim}) == 2, "a new worker", 10
        )
        (survivor,) = children_of(node.pid) & set(by_worker)
        for n in range(1, 4):
            # The sender's stream is on the survivor; the POST may land on
            # either slot (a new worker's, or the backlog it will serve).
            status, _ = await sender.call("broadcast", {"n": n})
            self.assertEqual(status, 200)

        def caught_up() -> bool:
            return all(len(_numbers(c)) >= 4 for c in self.clients)

        def state() -> str:
            lines = [
                f"{c.name}: {_numbers(c)} connections={c.connections}"
                f" ids={[e.last_event_id for e in c.events]}"
                for c in self.clients
            ]
            return "\n".join([*lines, node.text()[-6000:]])

        await poll(caught_up, "every stream caught up", 15, detail=state)
        for client in self.clients:
            self.assertEqual(_numbers(client), [0, 1, 2, 3], client.name)
        for client in by_worker[victim]:
            self.assertGreaterEqual(client.connections, 2)
            self.assertNotEqual(await self._owner(client), victim)
        for client in by_worker[survivor]:
            self.assertEqual(client.connections, 1)
        self.assertIn("died", node.text())

    async def test_metrics_count_every_worker(self) -> None:
        """
        With C{--metrics}, a scrape reaches whichever worker the kernel
        picks, and every scrape counts the streams of both workers.  The
        directory they share their numbers in is gone after C{SIGTERM}.
        """
        import tempfile
        from pathlib import Path

        from prometheus_client.parser import text_string_to_metric_families

        shm = Path("/dev/shm")
        base = shm if shm.is_dir() else Path(tempfile.gettempdir())
        before = set(base.glob("txgraphsse-metrics-*"))
        node = await self._start("--metrics", "/metrics")
        await self._spread(node)
        total = len(self.clients)

        async def sessions() -> float:
            response = await self.posts.get(f"http://127.0.0.1:{node.port}/metrics")
            text = (await response.text()).strip()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "graphsse_sessions":
                        return float(sample.value)
            self.fail(f"no graphsse_sessions in {text!r}")

        # Each worker adds the other's snapshot, at most a second old: within
        # a few seconds, eight scrapes in a row (new connections, spread
        # over both workers by the kernel) all count every stream.
        seen: list[float] = []
        deadline = clock().seconds() + 10
        while seen[-8:] != [total] * 8:
            self.assertLess(clock().seconds(), deadline, f"saw {seen}, not {total}")
            seen.append(await sessions())
            if seen[-1] != total:
                await deferLater(clock(), 0.2, lambda: None)

        os.kill(node.pid, signal.SIGTERM)
        await node.exited(STOP)
        self.assertEqual(set(base.glob("txgraphsse-metrics-*")), before)

    async def test_parent_killed_leaves_no_orphans(self) -> None:
        """
        Even a parent killed with C{SIGKILL}, which cannot stop its workers,
        leaves none behind: each sees its stdin end and stops.
        """
        node = await self._start()
        workers = children_of(node.pid)
        self.assertEqual(len(workers), 2)
        node.kill()
        await poll(
            lambda: not any(alive(pid) for pid in workers), "the workers' end", STOP
        )

    async def test_in_memory_refuses_workers(self) -> None:
        """
        C{twistd graphsse --workers 2} without C{--redis} does not start: it
        says that workers need C{--redis}.
        """
        cluster = run_cluster()
        command = [
            *cluster.twistd_command(),
            "-n",
            "--pidfile=",
            "graphsse",
            "--port",
            f"tcp:{free_port()}:interface=127.0.0.1",
            "--workers",
            "2",
        ]
        process = Process(self, "refused", command, cluster.python_env())
        code = await process.exited(30)
        self.assertNotEqual(code, 0)
        self.assertIn("--redis", process.text())
        self.assertFalse(children_of(process.pid))


def _numbers(client: ClusterClient) -> list[Any]:
    return [m["n"] for m in client.received(lambda m: isinstance(m, dict) and "n" in m)]


class _FakeProcess:
    """
    A worker process that only records the signals sent to it.
    """

    def __init__(self, pid: int, protocol: Any) -> None:
        self.pid = pid
        self.protocol = protocol
        self.signals: list[str] = []
        self.written = b""
        self.ended = False

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def end(self, code: int | None = None, signal_number: int | None = None) -> None:
        self.ended = True
        self.protocol.processEnded(
            Failure(ProcessTerminated(code, signal_number, None))
        )


class _FakeReactor(Clock):
    """
    A clock that runs C{callWhenRunning} at once and records every
    C{spawnProcess} (and, apart, the environment each was given).
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[_FakeProcess, list[str], dict[int, Any]]] = []
        self.environments: list[dict[str, str]] = []

    def callWhenRunning(self, f: Any, *args: Any) -> None:
        f(*args)

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: dict[int, Any],
    ) -> _FakeProcess:
        process = _FakeProcess(1000 + len(self.spawned), protocol)
        self.spawned.append((process, args, childFDs))
        self.environments.append(env)
        protocol.makeConnection(process)
        return process


class SupervisorTests(SynchronousTestCase):
    """
    L{WorkerSupervisor} on a fake reactor: what it spawns, when it restarts,
    and how it stops.
    """

    def _supervisor(self) -> tuple[WorkerSupervisor, _FakeReactor]:
        options = _options(
            "--workers",
            "2",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--port",
            "tcp:0:interface=127.0.0.1",
        )
        reactor = _FakeReactor()
        supervisor = WorkerSupervisor(options, reactor=reactor)
        supervisor.startService()
        self.addCleanup(
            lambda: [s.close() for group in supervisor._sockets for s in group]
        )
        return supervisor, reactor

    def test_spawn(self) -> None:
        """
        Each worker runs this Python with the listening socket of its slot as
        descriptor 3, and gets the command line and that descriptor as JSON
        on its stdin.
        """
        supervisor, reactor = self._supervisor()
        self.assertEqual(len(reactor.spawned), 2)
        for slot, (process, args, fds) in enumerate(reactor.spawned):
            self.assertEqual(args[0], sys.executable)
            self.assertEqual(args[-1], f"txgraphsse-worker-{slot}")
            expected = supervisor._sockets[0][slot if supervisor.reuse_port else 0]
            self.assertEqual(fds[3], expected.fileno())
            self.assertEqual((fds[0], fds[1], fds[2]), ("w", "r", "r"))
            config = json.loads(process.written)
            self.assertEqual(config["argv"], supervisor._argv)
            self.assertEqual(config["listen"], [{"fd": 3, "family": 2}])
            self.assertEqual(config["slot"], slot)
        self.assertEqual(supervisor.pids, [1000, 1001])

    def test_restart_backoff(self) -> None:
        """
        A worker that dies is restarted after 0.5 s, then 1 s, 2 s ... while
        it keeps dying young; one that ran 10 s or more restarts after 0.5 s
        again.
        """
        supervisor, reactor = self._supervisor()
        for delay in (0.5, 1.0, 2.0, 4.0):
            process = reactor.spawned[-1 if len(reactor.spawned) > 2 else 0][0]
            process.end(code=1)
            self.assertNotIn(process.pid, supervisor.pids)
            count = len(reactor.spawned)
            reactor.advance(delay - 0.01)
            self.assertEqual(len(reactor.spawned), count)
            reactor.advance(0.01)
            self.assertEqual(len(reactor.spawned), count + 1)
        reactor.advance(10)
        reactor.spawned[-1][0].end(signal_number=9)
        count = len(reactor.spawned)
        reactor.advance(0.5)
        self.assertEqual(len(reactor.spawned), count + 1)
        self.assertEqual(len(supervisor.pids), 2)

    def test_stop(self) -> None:
        """
        Stopping closes the sockets, sends every worker C{SIGTERM}, and fires
        once all have exited; a worker still running after 4 s gets
        C{SIGKILL}.  A worker that ends while stopping is not restarted.
        """
        supervisor, reactor = self._supervisor()
        (first, _, _), (second, _, _) = reactor.spawned
        sockets = [s for group in supervisor._sockets for s in group]
        stopped = supervisor.stopService()
        self.assertTrue(all(s.fileno() == -1 for s in sockets))
        self.assertEqual((first.signals, second.signals), (["TERM"], ["TERM"]))
        first.end(code=0)
        self.assertNoResult(stopped)
        reactor.advance(4)
        self.assertEqual(second.signals, ["TERM", "KILL"])
        second.end(signal_number=9)
        self.successResultOf(stopped)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stop_cancels_restart(self) -> None:
        """
        A restart that is waiting when the service stops never happens.
        """
        supervisor, reactor = self._supervisor()
        reactor.spawned[0][0].end(code=1)
        stopped = supervisor.stopService()
        reactor.spawned[1][0].end(code=0)
        self.successResultOf(stopped)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2)

    def test_command_runs_the_worker(self) -> None:
        """
        The command and environment a worker is spawned with, run from a
        directory outside the checkout, reach the worker's own C{main}: given
        no configuration on its stdin, it says so and exits.
        """
        _, reactor = self._supervisor()
        (_, args, _) = reactor.spawned[0]
        workdir = tempfile.mkdtemp(prefix="txgraphsse-boot-")
        self.addCleanup(shutil.rmtree, workdir, True)
        done = subprocess.run(
            args,
            env=reactor.environments[0],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(
            done.stderr.strip().splitlines()[-1],
            b"txgraphsse worker: no configuration on stdin",
        )


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name in a module, not a module
        return False


def _package_imports(module: str) -> set[str]:
    """
    The modules of the package that C{module} imports, anywhere in it
    (inside functions and under C{TYPE_CHECKING} too).
    """
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    package = module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else ""
            target = ".".join(filter(None, [base, node.module]))
            if not target.startswith("txgraphsse"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    return {name for name in found if name.startswith("txgraphsse")}


class LayoutTests(SynchronousTestCase):
    """
    The supervisor sits below the tap, and the worker's program above it.
    """

    def test_supervisor_never_imports_the_tap(self) -> None:
        """
        Nothing the supervisor imports, directly or through others, and
        counting imports inside functions and under C{TYPE_CHECKING}, is
        L{txgraphsse.tap} or the worker's program.
        """
        seen: set[str] = set()
        todo = ["txgraphsse._workers"]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            todo.extend(_package_imports(module))
        self.assertNotIn("txgraphsse.tap", seen)
        self.assertNotIn("txgraphsse._worker", seen)
        self.assertIn("txgraphsse._ports", seen)
        self.assertIn("txgraphsse._logpipe", seen)

    def test_worker_builds_on_the_tap(self) -> None:
        """
        The worker's program imports L{txgraphsse.tap}, which imports the
        supervisor and never the worker's program.
        """
        self.assertIn("txgraphsse.tap", _package_imports("txgraphsse._worker"))
        tap_imports = _package_imports("txgraphsse.tap")
        self.assertIn("txgraphsse._workers", tap_imports)
        self.assertNotIn("txgraphsse._worker", tap_imports)
