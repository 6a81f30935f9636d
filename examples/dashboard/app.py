"""
A live dashboard: the server streams measurements several times a second
and the page plots them as moving charts (plain JavaScript on a
C{<canvas>}, no front-end framework).

Run it::

    python examples/dashboard/app.py --port 8080

then open http://127.0.0.1:8080/.

The measurements come from an async generator that
C{endpoint.stream_iterable} sends to every open stream as C{measurement}
events (L{RATE} a second unless C{--rate} says otherwise): a simulated
temperature and humidity, and this machine's load average.  A page that
connects is first pushed the last L{BACKLOG} samples (a C{backlog} event),
so its charts are full at once.  C{--interface 0.0.0.0} listens on every
interface.  Ctrl-C sends every stream a last C{shutdown} event.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.task import deferLater, react
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from txgraphsse import SSEBackend, SSEClient, SSEEndpoint

__all__ = ["BACKLOG", "RATE", "Dashboard", "main", "measurements"]

#: Measurements a second.
RATE = 10.0
#: Samples a page gets when it connects.
BACKLOG = 200

STATIC = Path(__file__).resolve().parent / "static"


async def measurements(
    clock: IReactorTime, rate: float
) -> AsyncIterator[dict[str, Any]]:
    """
    One sample every C{1 / rate} seconds, for ever: C{seq}, the time C{t}
    (ms since the epoch) and C{values}.
    """
    random.seed()
    humidity = 45.0
    start = clock.seconds()
    seq = 0
    while True:
        seq += 1
        # Sleep until the sample's slot, so that the rate does not drift.
        await deferLater(clock, max(0.0, start + seq / rate - clock.seconds()))
        now = time.time()
        humidity = min(80.0, max(20.0, humidity + random.gauss(0, 0.4)))
        values = {
            "temperature": round(
                21
                + 3 * math.sin(now / 8)
                + math.sin(now * 1.7) / 2
                + random.gauss(0, 0.15),
                2,
            ),
            "humidity": round(humidity, 2),
            "load": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0,
        }
        yield {"seq": seq, "t": int(now * 1000), "values": values}


class Dashboard:
    """
    The endpoint, its stream of measurements, and the samples kept for
    newcomers.

    @ivar endpoint: the SSE endpoint at C{/sse}.
    @ivar recent: the last L{BACKLOG} samples.
    """

    def __init__(self, backend: SSEBackend, rate: float = RATE) -> None:
        self.endpoint: SSEEndpoint = backend.setup_sse(
            "/sse", on_connection=self.connected
        )
        self.rate = rate
        self.recent: deque[dict[str, Any]] = deque(maxlen=BACKLOG)

    def connected(
        self,
        client: SSEClient,
        endpoint: SSEEndpoint,
        session_id: str,
        request: Request,
    ) -> None:
        """
        A page connected: push it what the charts show already.
        """
        client.push(list(self.recent), "backlog")

    async def _kept(
        self, samples: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        async for sample in samples:
            sample["viewers"] = len(self.endpoint.sessions)
            self.recent.append(sample)
            yield sample

    def start(self, clock: IReactorTime) -> Deferred[int]:
        """
        Stream measurements to every open stream until the endpoint closes.

        @return: fires with the number of samples sent.
        """
        return self.endpoint.stream_iterable(
            self._kept(measurements(clock, self.rate)), event="measurement"
        )

    def site(self) -> Site:
        """
        The page and its files at C{/}, the endpoint at C{/sse}.
        """
        root = File(str(STATIC))
        root.indexNames = ["index.html"]
        root.putChild(b"sse", self.endpoint.resource)
        return Site(cast(Resource, root))


def main(reactor: IReactorTCP, argv: Sequence[str]) -> Deferred[None]:
    """
    Serve the dashboard until the reactor stops.
    """
    parser = argparse.ArgumentParser(description="txgraphsse live dashboard")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="address")
    parser.add_argument("--rate", type=float, default=RATE, help="samples a second")
    args = parser.parse_args(list(argv))
    clock = cast(IReactorTime, reactor)
    backend = SSEBackend(clock)
    dashboard = Dashboard(backend, args.rate)
    port = reactor.listenTCP(args.port, dashboard.site(), interface=args.interface)
    dashboard.start(clock)
    # Ctrl-C or SIGTERM: every stream gets a last `shutdown` event.
    cast(IReactorCore, reactor).addSystemEventTrigger(
        "before", "shutdown", backend.shutdown
    )
    host = port.getHost()
    print(f"dashboard on http://{host.host}:{host.port}/ (Ctrl-C to stop)", flush=True)  # type: ignore[attr-defined]
    return Deferred()


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
