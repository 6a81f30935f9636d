"""
A txgraphsse endpoint in a plain twisted.web C{Site}, next to other resources.

The endpoint's resource is mounted with C{putChild} at C{/sse}, beside a page
at C{/} and a plain-text resource at C{/hello}; a tick is broadcast every
second on the C{ticks} channel.

Run it::

    python examples/site_embed.py --port 8080

then open http://127.0.0.1:8080/ in a browser, or::

    curl -N 'http://127.0.0.1:8080/sse?channels=ticks'
    curl -H 'content-type: application/json' -d '{"route":"ping"}' \\
        http://127.0.0.1:8080/sse

C{--interface 0.0.0.0} listens on every interface; C{--interval} changes the
tick period (seconds).  Ctrl-C sends every open stream a last C{shutdown}
event before the process exits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from itertools import count
from typing import cast

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.task import LoopingCall, react
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from txgraphsse import SSEBackend, SSEEndpoint

__all__ = ["TICKS", "Server", "build_site", "main", "parse_args", "start_ticks"]

#: The channel the ticks are broadcast on.
TICKS = "ticks"

_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>site_embed</title></head>
<body><h1>txgraphsse in a twisted.web Site</h1>
<p>Ticks from <code>/sse?channels=ticks</code>:</p><pre id="log"></pre>
<script>
const log = document.getElementById("log");
const source = new EventSource("/sse?channels=ticks");
source.addEventListener("ticks", (ev) => { log.textContent += ev.data + "\\n"; });
</script></body></html>
"""


def build_site(backend: SSEBackend, history: int = 10) -> tuple[SSEEndpoint, Site]:
    """
    Set up the endpoint on C{backend} and a C{Site} that serves it at
    C{/sse} beside other resources.

    @param history: ticks kept for clients that reconnect with
        C{Last-Event-ID}.
    @return: the endpoint and the site.
    """
    endpoint = backend.setup_sse("/sse", channels=[TICKS], history=history)
    root = Resource()
    root.putChild(b"", Data(_PAGE, "text/html; charset=utf-8"))
    root.putChild(b"hello", Data(b"hello, world\n", "text/plain; charset=utf-8"))
    root.putChild(b"sse", endpoint.resource)
    return endpoint, Site(root)


def start_ticks(
    endpoint: SSEEndpoint, clock: IReactorTime, interval: float = 1.0
) -> LoopingCall:
    """
    Broadcast C{{"tick": n, "time": seconds}} on the C{ticks} channel every
    C{interval} seconds, the first one C{interval} seconds from now.

    @return: the running loop; C{stop()} it to stop ticking.
    """
    numbers = count(1)
    channel = endpoint.channels[TICKS]

    def tick() -> None:
        channel.broadcast({"tick": next(numbers), "time": clock.seconds()})

    loop = LoopingCall(tick)
    loop.clock = clock
    loop.start(interval, now=False)
    return loop


class Server:
    """
    What L{main} started: a listening port, the endpoint and its ticks.

    @ivar port: the listening port.
    @ivar endpoint: the SSE endpoint mounted at C{/sse}.
    @ivar ticks: the loop that broadcasts the ticks.
    @ivar stopped: fires once L{stop} has finished.
    """

    def __init__(
        self,
        reactor: IReactorCore,
        port: IListeningPort,
        endpoint: SSEEndpoint,
        ticks: LoopingCall,
    ) -> None:
        self.port = port
        self.endpoint = endpoint
        self.ticks = ticks
        self.stopped: Deferred[None] = Deferred()
        self._reactor = reactor
        self._stopping = False
        self._trigger: object | None = reactor.addSystemEventTrigger(
            "before", "shutdown", self._reactor_stopping
        )

    @property
    def url(self) -> str:
        """
        The endpoint's URL.
        """
        host = self.port.getHost()
        return f"http://{host.host}:{host.port}/sse"  # type: ignore[attr-defined]

    def _reactor_stopping(self) -> Deferred[None]:
        self._trigger = None
        return self.stop()

    def stop(self) -> Deferred[None]:
        """
        Stop ticking, send every stream a last C{shutdown} event, close it,
        and stop listening.

        @return: L{stopped}.
        """
        if self._stopping:
            return self.stopped
        self._stopping = True
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        if self.ticks.running:
            self.ticks.stop()
        done = gatherResults(
            [self.endpoint.shutdown(), maybeDeferred(self.port.stopListening)]
        )
        done.addBoth(lambda _: self.stopped.callback(None))
        return self.stopped


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line: C{--port}, C{--interface}, C{--interval}.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between ticks"
    )
    return parser.parse_args(list(argv))


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
    backend = SSEBackend(cast(IReactorTime, reactor))
    endpoint, site = build_site(backend)
    port = reactor.listenTCP(args.port, site, interface=args.interface)
    ticks = start_ticks(endpoint, cast(IReactorTime, reactor), args.interval)
    server = Server(cast(IReactorCore, reactor), port, endpoint, ticks)
    if on_ready is None:
        print(f"serving {server.url} (Ctrl-C to stop)", flush=True)
    else:
        on_ready(server)
    return server.stopped


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
