"""
A txgraphsse endpoint in a Klein app, next to an ordinary JSON route.

The app uses Klein's class-attribute pattern (C{app = Klein()} on a class, so
each instance has its own state); C{@app.route("/sse", branch=True)} returns
the endpoint's resource, which Klein renders without finishing the request.
A tick is broadcast every second on the C{ticks} channel, and C{/status}
answers JSON.

Run it::

    python examples/klein_embed.py --port 8080

then::

    curl -N 'http://127.0.0.1:8080/sse?channels=ticks'
    curl http://127.0.0.1:8080/status
    curl -H 'content-type: application/json' -d '{"route":"ping"}' \\
        http://127.0.0.1:8080/sse

C{--interface 0.0.0.0} listens on every interface; C{--interval} changes the
tick period (seconds).  Ctrl-C sends every open stream a last C{shutdown}
event before the process exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import cast

from klein import Klein
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.task import LoopingCall, react
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from txgraphsse import SSEBackend, SSEEndpoint

__all__ = ["TICKS", "Server", "TickApp", "main", "parse_args"]

#: The channel the ticks are broadcast on.
TICKS = "ticks"


class TickApp:
    """
    A Klein app that serves an SSE endpoint at C{/sse} and its status at
    C{/status}.

    @ivar endpoint: the SSE endpoint.
    @ivar ticks_sent: how many ticks were broadcast.
    """

    app = Klein()

    def __init__(self, backend: SSEBackend, history: int = 10) -> None:
        self.backend = backend
        self.endpoint: SSEEndpoint = backend.setup_sse(
            "/sse", channels=[TICKS], history=history
        )
        self.ticks_sent = 0
        self._loop: LoopingCall | None = None

    @app.route("/sse", branch=True)
    def sse(self, request: IRequest) -> IResource:
        """
        The stream (C{GET}), the way back (C{POST}), and the browser client
        below it: all of it is the endpoint's resource.
        """
        return self.endpoint.resource

    @app.route("/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """
        An ordinary JSON route beside the stream.
        """
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "sessions": len(self.endpoint.sessions),
                "ticks": self.ticks_sent,
            }
        ).encode("utf-8")

    def tick(self) -> int:
        """
        Broadcast the next tick on the C{ticks} channel.

        @return: how many of this node's sessions it was queued for.
        """
        self.ticks_sent += 1
        return self.endpoint.channels[TICKS].broadcast({"tick": self.ticks_sent})

    def start_ticks(self, clock: IReactorTime, interval: float = 1.0) -> None:
        """
        Call L{tick} every C{interval} seconds, the first one C{interval}
        seconds from now.
        """
        loop = self._loop = LoopingCall(self.tick)
        loop.clock = clock
        loop.start(interval, now=False)

    def stop(self) -> Deferred[None]:
        """
        Stop ticking; send every stream a last C{shutdown} event and close it.

        @return: fires once the streams' connections are gone.
        """
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        return self.endpoint.shutdown()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line: C{--port}, C{--interface}, C{--interval}.
    """
    parser = argparse.ArgumentParser(description="txgraphsse in a Klein app")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between ticks"
    )
    return parser.parse_args(list(argv))


class Server:
    """
    What L{main} started: the app and its listening port.

    @ivar app: the L{TickApp}.
    @ivar port: the listening port.
    @ivar stopped: fires once L{stop} has finished.
    """

    def __init__(
        self, reactor: IReactorCore, tick_app: TickApp, port: IListeningPort
    ) -> None:
        self.app = tick_app
        self.port = port
        self.stopped: Deferred[None] = Deferred()
        self._reactor = reactor
        self._stopping = False
        self._trigger: object | None = reactor.addSystemEventTrigger(
            "before", "shutdown", self._reactor_stopping
        )

    @property
    def url(self) -> str:
        """
        The base URL of the app.
        """
        host = self.port.getHost()
        return f"http://{host.host}:{host.port}"  # type: ignore[attr-defined]

    def _reactor_stopping(self) -> Deferred[None]:
        self._trigger = None
        return self.stop()

    def stop(self) -> Deferred[None]:
        """
        Stop ticking, close every stream after a last C{shutdown} event, and
        stop listening.

        @return: L{stopped}.
        """
        if self._stopping:
            return self.stopped
        self._stopping = True
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        done = gatherResults([self.app.stop(), maybeDeferred(self.port.stopListening)])
        done.addBoth(lambda _: self.stopped.callback(None))
        return self.stopped


def main(
    reactor: IReactorTCP,
    argv: Sequence[str],
    on_ready: Callable[[Server], object] | None = None,
) -> Deferred[None]:
    """
    Serve until the reactor stops (or until L{Server.stop} is called).

    @param reactor: the reactor to listen with; it must also provide
        C{IReactorTime} and C{IReactorCore}.
    @param argv: the command line, without the program name.
    @param on_ready: called with the L{Server} once it listens, instead of
        printing its URL (for tests).
    @return: a L{Deferred} that fires when the server has stopped.
    """
    args = parse_args(argv)
    clock = cast(IReactorTime, reactor)
    tick_app = TickApp(SSEBackend(clock))
    site = Site(tick_app.app.resource())
    port = reactor.listenTCP(args.port, site, interface=args.interface)
    tick_app.start_ticks(clock, args.interval)
    server = Server(cast(IReactorCore, reactor), tick_app, port)
    if on_ready is None:
        print(f"serving {server.url}/sse (Ctrl-C to stop)", flush=True)
    else:
        on_ready(server)
    return server.stopped


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
