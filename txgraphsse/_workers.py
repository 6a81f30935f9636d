# -*- test-case-name: tests.test_workers -*-
"""
C{twistd graphsse --workers N}: N processes of one machine serving the same
ports, tied together by the broker (Redis).

The parent, the twistd process, serves nothing itself: its service is the
L{WorkerSupervisor}.  It binds every C{--port} (TCP only, shared as
L{txgraphsse._ports} says) before twistd drops privileges, spawns the
workers with the listening sockets as inherited descriptors, relays their
logs into its own (L{txgraphsse._logpipe}), restarts a worker that dies
(with a growing delay), and on stop sends each worker C{SIGTERM}, then
C{SIGKILL} to any still running after L{WorkerSupervisor.stop_timeout}
seconds.  A worker whose parent is gone (even by C{SIGKILL}) sees its stdin
end and stops too: no orphans.  C{--metrics-port} is bound here too, and
handed to worker 0 alone, whose metrics answer for every worker.

What a worker runs is L{txgraphsse._worker.main}, named here by its module
only: this module sits below L{txgraphsse.tap} (which makes the supervisor
from its options) and never imports it, nor the worker's program.  It owns
processes; it never touches a request or a session, nor the broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorCore,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logpipe import relay
from ._ports import REUSE_PORT, bind_all, parse_tcp

__all__ = ["WorkerSupervisor"]

#: The package's parent directory: workers import txgraphsse from there.
_ROOT = str(Path(__file__).resolve().parent.parent)

#: What a worker runs: its configuration arrives on stdin.
_BOOT = "from txgraphsse._worker import main; main()"


@define
class _Worker:
    """
    One worker slot and the process that fills it now.
    """

    slot: int
    process: IProcessTransport | None = None
    pid: int | None = None
    started: float = 0.0
    failures: int = 0
    restart: IDelayedCall | None = None
    ended: list[Deferred[None]] = field(factory=list)


class _WorkerProtocol(ProcessProtocol):
    """
    The parent's end of one worker: its configuration goes in on stdin (which
    stays open: its end tells the worker that the parent is gone), its log
    events come back as JSON lines on stdout, anything else on stderr.
    """

    def __init__(self, supervisor: WorkerSupervisor, worker: _Worker, config: bytes):
        self._supervisor = supervisor
        self._worker = worker
        self._config = config
        self._buffers = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._config)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._buffers:
            return
        lines = (self._buffers[childFD] + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        for line in lines:
            self._supervisor._relay(self._worker, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest:
                self._supervisor._relay(self._worker, fd, rest)
        self._buffers = {1: b"", 2: b""}
        self._supervisor._ended(self._worker, reason)


class WorkerSupervisor(Service):
    """
    The service of a C{twistd graphsse --workers N} parent: binds the ports,
    runs N workers, restarts those that die, and stops them all on stop.

    @ivar count: the number of workers.
    @ivar specs: the ports, one L{TCPPort} per C{--port}.
    @ivar reuse_port: whether each worker slot gets its own C{SO_REUSEPORT}
        socket (else all share one).
    @ivar stop_timeout: seconds a worker has to stop after C{SIGTERM}
        before it gets C{SIGKILL}.
    @ivar restart_initial: seconds before a dead worker is restarted; the
        delay doubles with each death of a worker that ran less than
        C{stable_after} seconds, up to C{restart_max}.
    """

    _log = Logger()

    stop_timeout = 4.0
    restart_initial = 0.5
    restart_max = 30.0
    stable_after = 10.0

    def __init__(
        self,
        options: Mapping[str, Any],
        reactor: Any = None,
        executable: str | None = None,
    ) -> None:
        """
        @param options: the parsed command line, a L{txgraphsse.tap.Options}
            (its C{argv} goes to every worker, its C{ports} are bound here,
            its C{workers} is how many, its C{metrics} whether they share
            their stats, its C{metrics-port} where worker 0 serves them).
        @param reactor: an L{IReactorProcess} and L{IReactorTime}.
        @param executable: the Python that runs the workers.
        """
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self._reactor = reactor
        self._options = options
        self._argv: list[str] = list(options["argv"])
        self._executable = executable or sys.executable
        self.count: int = options["workers"]
        self.specs = [parse_tcp(d) for d in options["ports"]]
        #: C{--metrics-port}: bound here, served by worker 0 alone (its
        #: metrics answer for every worker).
        self.metrics_spec = (
            parse_tcp(options["metrics-port"]) if options.get("metrics-port") else None
        )
        self._metrics_socket: socket.socket | None = None
        self.reuse_port = REUSE_PORT
        self._sockets: list[list[socket.socket]] = []
        self.workers = [_Worker(slot) for slot in range(self.count)]
        self._stopping = False
        #: Where the workers share their metrics (with C{--metrics}).
        self.metrics_dir: str | None = None

    @property
    def pids(self) -> list[int]:
        """
        The PIDs of the workers running now.
        """
        return [w.pid for w in self.workers if w.pid is not None]

    @property
    def ports(self) -> list[int]:
        """
        The port numbers bound, one per C{--port} (empty before start).
        """
        return [socks[0].getsockname()[1] for socks in self._sockets]

    @property
    def metrics_port(self) -> int | None:
        """
        The port number of C{--metrics-port} once bound, else L{None}.
        """
        sock = self._metrics_socket
        return None if sock is None else int(sock.getsockname()[1])

    # Start

    def privilegedStartService(self) -> None:
        """
        Bind the ports now, while twistd still has its privileges.
        """
        self.bind()
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def bind(self) -> None:
        """
        Bind the ports (once): twistd's tap does it as it makes the service,
        so that a port in use ends the process before it writes its pid file.
        """
        if self._sockets:
            return
        self._sockets = bind_all(self.specs, self.count, self.reuse_port)
        if self.metrics_spec is not None:
            try:
                [[self._metrics_socket]] = bind_all([self.metrics_spec], 1, False)
            except BaseException:
                self._close_sockets()
                raise
            self._log.info(
                "Metrics on {address}:{port}, served by worker 0",
                address=self._metrics_socket.getsockname()[0],
                port=self.metrics_port,
            )
        self._log.info(
            "Listening on {ports} for {count} workers ({how})",
            ports=", ".join(
                f"{s[0].getsockname()[0]}:{s[0].getsockname()[1]}"
                for s in self._sockets
            ),
            count=self.count,
            how="SO_REUSEPORT, a socket per worker" if self.reuse_port else "shared",
        )

    def startService(self) -> None:
        self.bind()
        self._stopping = False
        if self._options["metrics"] and self.metrics_dir is None:
            # Memory, not disk, where there is a tmpfs: each worker rewrites
            # its file every second.
            shm = "/dev/shm"
            base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
            self.metrics_dir = tempfile.mkdtemp(prefix="txgraphsse-metrics-", dir=base)
        super().startService()  # type: ignore[no-untyped-call]
        reactor = cast(IReactorCore, self._reactor)
        reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for worker in self.workers:
            if worker.process is None and not self._stopping:
                self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping or not self._sockets:
            return
        fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        listen = []
        child_fd = 3
        for socks in self._sockets:
            sock = socks[worker.slot] if self.reuse_port else socks[0]
            fds[child_fd] = sock.fileno()
            listen.append({"fd": child_fd, "family": int(sock.family)})
            child_fd += 1
        config: dict[str, Any] = {
            "argv": self._argv,
            "listen": listen,
            "slot": worker.slot,
            "path": [p for p in sys.path if p],
            "metrics": self.metrics_dir,
        }
        if worker.slot == 0 and self._metrics_socket is not None:
            fds[child_fd] = self._metrics_socket.fileno()
            family = int(self._metrics_socket.family)
            config["metrics_listen"] = {"fd": child_fd, "family": family}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_ROOT, *filter(None, [env.get("PYTHONPATH")])]
        )
        protocol = _WorkerProtocol(self, worker, json.dumps(config).encode() + b"\n")
        spawner = cast(IReactorProcess, self._reactor)
        process = spawner.spawnProcess(
            protocol,
            self._executable,
            [
                self._executable,
                "-c",
                _BOOT,
                f"txgraphsse-worker-{worker.slot}",
            ],
            env=env,
            childFDs=fds,
        )
        worker.process = process
        worker.pid = process.pid
        worker.started = cast(IReactorTime, self._reactor).seconds()
        self._log.info(
            "Worker {slot} started: pid {pid}", slot=worker.slot, pid=worker.pid
        )

    # Logs

    def _relay(self, worker: _Worker, fd: int, line: bytes) -> None:
        relay(self._log, f"worker {worker.slot}", fd, line)

    # Deaths, restarts, stop

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid = worker.pid
        worker.process = None
        worker.pid = None
        waiting, worker.ended = worker.ended, []
        for d in waiting:
            d.callback(None)
        if self._stopping or not self.running:
            self._log.info(
                "Worker {slot} (pid {pid}) stopped: {why}",
                slot=worker.slot,
                pid=pid,
                why=reason.getErrorMessage(),
            )
            return
        clock = cast(IReactorTime, self._reactor)
        if clock.seconds() - worker.started >= self.stable_after:
            worker.failures = 0
        delay = min(self.restart_initial * 2**worker.failures, self.restart_max)
        worker.failures += 1
        self._log.warn(
            "Worker {slot} (pid {pid}) died: {why}; restarting in {delay} s",
            slot=worker.slot,
            pid=pid,
            why=reason.getErrorMessage(),
            delay=delay,
        )
        worker.restart = clock.callLater(delay, self._spawn, worker)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, send every worker C{SIGTERM}, and fire once they have
        all exited; C{SIGKILL} those still running after L{stop_timeout}.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        # The workers hold their own copies: they stop accepting as they
        # stop, and then nothing listens any more.
        self._close_sockets()
        waits: list[Deferred[None]] = []
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
            if worker.process is None:
                continue
            ended: Deferred[None] = Deferred()
            worker.ended.append(ended)
            waits.append(ended)
            self._signal(worker, "TERM")
        if not waits:
            self._forget_metrics()
            return succeed(None)
        clock = cast(IReactorTime, self._reactor)
        kill = clock.callLater(self.stop_timeout, self._kill_all)
        done = gatherResults(waits)

        def finished(_: object) -> None:
            if kill.active():
                kill.cancel()
            self._forget_metrics()

        return done.addBoth(finished)

    def _close_sockets(self) -> None:
        for socks in self._sockets:
            for sock in socks:
                sock.close()
        self._sockets = []
        if self._metrics_socket is not None:
            self._metrics_socket.close()
            self._metrics_socket = None

    def _forget_metrics(self) -> None:
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                self._log.warn(
                    "Worker {slot} (pid {pid}) did not stop in {timeout} s: SIGKILL",
                    slot=worker.slot,
                    pid=worker.pid,
                    timeout=self.stop_timeout,
                )
                self._signal(worker, "KILL")

    def _signal(self, worker: _Worker, name: str) -> None:
        if worker.process is None:
            return
        with contextlib.suppress(ProcessExitedAlready):
            worker.process.signalProcess(name)
