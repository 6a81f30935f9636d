# -*- test-case-name: tests.test_workers -*-
"""
The program of one C{twistd graphsse --workers N} worker process: L{main}.

The parent (L{txgraphsse._workers.WorkerSupervisor}) starts it with
C{python -c "from txgraphsse._worker import main; main()"}, the listening
sockets as inherited descriptors, and its configuration as one JSON line on
stdin.  The worker is an ordinary graphsse process built by
L{txgraphsse.tap.build} from the same command line, with its own
L{txgraphsse.redis.RedisBroker} node; it serves the inherited sockets once
the broker is linked, sends its log to the parent (L{txgraphsse._logpipe}),
and stops on C{SIGTERM} or when its stdin ends: a worker whose parent is
gone (even by C{SIGKILL}) stops too, so there are no orphans.

This module sits above L{txgraphsse.tap} and may import it; nothing in the
package imports this module.  It owns the worker's process (its signals, its
stdin, its reactor's run); it never binds a socket, and never touches a
request or a session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ReactorNotRunning
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorSocket,
    IReactorTime,
    IReadDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logpipe import LogPipe, log_to_parent
from ._ports import AdoptedPort

__all__ = ["main"]

#: Seconds a worker waits for its broker's link before serving anyway.
_LINK_TIMEOUT = 10.0


@implementer(IReadDescriptor)
class _ParentWatch:
    """
    Reads the worker's stdin, which the parent holds open: its end means the
    parent is gone, and the worker stops.
    """

    def __init__(self, gone: Callable[[], object]) -> None:
        self._gone = gone
        self._ended = False
        os.set_blocking(0, False)

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "parent"

    def doRead(self) -> Failure | None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError as error:
            self._ended = True
            return Failure(error)
        if not data:
            self._ended = True
            return Failure(ConnectionDone("the parent is gone"))
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor reports a hang-up without reading, and also
        # disconnects every reader when it stops: only an end of the pipe
        # means that the parent is gone.
        if self._ended or self._at_end():
            self._gone()

    def _at_end(self) -> bool:
        try:
            return os.read(0, 1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def main() -> None:
    """
    A worker process: read the configuration the parent writes on stdin,
    build the app from the same command line, serve the inherited sockets
    once the broker is linked, and stop on C{SIGTERM} or the parent's end
    (C{SIGINT} is the parent's to handle).
    """
    line = sys.stdin.buffer.readline()
    if not line:
        sys.exit("txgraphsse worker: no configuration on stdin")
    config = json.loads(line)
    sys.path[:0] = [p for p in config["path"] if p not in sys.path]
    # Ctrl-C in a terminal reaches the parent and every worker; the parent
    # stops the workers itself, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from twisted.internet import reactor

    pipe = LogPipe(cast(IReactorFDSet, reactor))
    # stdout carries the log: what an application prints goes to stderr.
    sys.stdout = sys.stderr
    log_to_parent(pipe)

    # Imported once the parent's path is on sys.path and the log goes to the
    # parent, as the app they import may log.
    from ._backend import SSEBackend, SSEService
    from .tap import Options, broker_for, build, metrics_site

    log = Logger(namespace="txgraphsse.worker")
    options = Options()
    options.parseOptions(config["argv"])
    broker = broker_for(options, cast(IReactorTime, reactor))
    given = None if broker is None else SSEBackend(reactor, broker=broker)
    shared = None
    if given is not None and options["metrics"] and config.get("metrics"):
        from .metrics import SharedStats

        # A scrape reaches one worker: each answers for all of them.
        shared = SharedStats(
            given, Path(config["metrics"]), cast(IReactorTime, reactor)
        )
    backend, _, site = build(options, given, shared)
    core = cast(IReactorCore, reactor)
    ready: Deferred[None] = Deferred()

    def linked() -> None:
        # Serve once the broker is linked to its peers (so that no POST is
        # refused for want of them), or after a while without: this node's
        # own sessions work meanwhile, and the broker keeps reconnecting.
        start = getattr(backend.broker, "start", None)
        waiting = succeed(None) if start is None else start()
        waiting.addTimeout(_LINK_TIMEOUT, cast(IReactorTime, reactor))

        def not_yet(failure: Failure) -> None:
            log.warn(
                "No link to the other nodes after {timeout} s; serving anyway",
                timeout=_LINK_TIMEOUT,
            )

        def serve(_: object) -> None:
            if not ready.called:
                ready.callback(None)

        waiting.addErrback(not_yet).addBoth(serve)

    top = MultiService()
    if shared is not None:
        shared.setServiceParent(top)  # type: ignore[no-untyped-call]
        # The last snapshot, with what closing the streams counted.
        core.addSystemEventTrigger("after", "shutdown", shared.publish, False)
    SSEService(backend).setServiceParent(top)  # type: ignore[no-untyped-call]
    for entry in config["listen"]:
        AdoptedPort(
            cast(IReactorSocket, reactor), entry["fd"], entry["family"], site, ready
        ).setServiceParent(top)  # type: ignore[no-untyped-call]
    entry = config.get("metrics_listen")
    private = metrics_site(options, backend, shared) if entry else None
    if entry and private is not None:
        # Worker 0's alone: its metrics answer for every worker.
        AdoptedPort(
            cast(IReactorSocket, reactor), entry["fd"], entry["family"], private, ready
        ).setServiceParent(top)  # type: ignore[no-untyped-call]

    def parent_gone() -> None:
        log.warn("The parent process is gone: stopping")
        stop()

    def terminated(signum: int, frame: object) -> None:
        # Both the parent and a service manager (systemd's control group,
        # coreutils' timeout) may send SIGTERM: stop once.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        core.callFromThread(stop, "Received SIGTERM, shutting down.")  # type: ignore[attr-defined]

    def stop(why: str | None = None) -> None:
        if why is not None:
            log.info("{why}", why=why)
        with contextlib.suppress(ReactorNotRunning):
            core.stop()

    cast(IReactorFDSet, reactor).addReader(_ParentWatch(parent_gone))
    core.callWhenRunning(signal.signal, signal.SIGTERM, terminated)
    core.callWhenRunning(top.startService)
    core.callWhenRunning(linked)
    core.addSystemEventTrigger("before", "shutdown", top.stopService)
    log.info(
        "Worker {slot} (pid {pid}) serving {path} as node {node}",
        slot=config["slot"],
        pid=os.getpid(),
        path=options["path"],
        node=backend.broker.node_id,
    )
    try:
        core.run()
    finally:
        pipe.flush()
