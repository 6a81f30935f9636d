"""
What the Python bench servers share: the payload, the command line, and
(for the Twisted ones) a quiet Site and logging at warning level.

Every bench server prints ``READY <port>`` on stdout once it listens, serves
``GET /sse`` (the streams) and takes ``POST /control`` with a JSON body that
starts a scenario:

    {"scenario": "burst", "count": 20, "size": 64}
    {"scenario": "sustained", "rate": 5, "duration": 5, "size": 64}
    {"scenario": "targeted", "size": 64}
    {"scenario": "calls_s2c"}  /  {"scenario": "stop"}

Each event's data is JSON ``{"t":<time.monotonic_ns()>,"pad":"xx…"}`` of
``size`` bytes, so the load client measures latency on the same clock.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def payload(size: int) -> dict[str, object]:
    """
    The message of one event: its send time and padding up to C{size} bytes
    of compact JSON.
    """
    t = time.monotonic_ns()
    pad = size - 15 - len(str(t))
    return {"t": t, "pad": "x" * (pad if pad > 0 else 0)}


def payload_text(size: int) -> str:
    t = time.monotonic_ns()
    pad = size - 15 - len(str(t))
    return f'{{"t":{t},"pad":"{"x" * (pad if pad > 0 else 0)}"}}'


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument(
        "--nodelay",
        action="store_true",
        help="Twisted servers: set TCP_NODELAY on every connection",
    )
    return parser.parse_args()


def ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


def twisted_quiet() -> None:
    """
    Log warnings and worse to stderr, as a production server would; drop
    the per-request access log (Site.log) in the servers themselves.
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def twisted_site(
    root: object, nodelay: bool = False, base: Any = None, **kwargs: Any
) -> object:
    """
    A twisted.web Site (or a C{base} class of site, built with C{kwargs})
    without the access log (one log line per finished request), optionally
    with TCP_NODELAY on every connection (Twisted leaves Nagle on; Node and
    asyncio/uvloop turn it off).
    """
    from twisted.web.server import Site

    class BenchSite(base or Site):  # type: ignore[misc]
        def log(self, request: object) -> None:
            pass

        def buildProtocol(self, addr: object) -> object:
            protocol = super().buildProtocol(addr)
            if nodelay and protocol is not None:
                make = protocol.makeConnection

                def makeConnection(transport: object) -> None:
                    transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
                    make(transport)

                protocol.makeConnection = makeConnection  # type: ignore[method-assign]
            return protocol

    return BenchSite(root, **kwargs)
