"""
Servers that browser tests run in a subprocess.

Playwright's sync API blocks the thread it runs in, so a test cannot run a
Twisted reactor beside it; it starts one of these modules instead with
C{python -m tests.servers.<name> --port 0} (see L{tests._browser.start_server}).
Each module builds a C{Site} and hands it to L{serve}, which listens on
127.0.0.1, prints one JSON line C{{"port": N}} on stdout once it listens, logs
to stderr, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.server import Site

__all__ = ["serve"]


def serve(make_site: Callable[[], Site], argv: Sequence[str] | None = None) -> None:
    """
    Parse C{--port}, listen with the site C{make_site()} builds, announce the
    port on stdout and run the reactor until the process is told to stop.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        options.port, make_site(), interface="127.0.0.1"
    )
    sys.stdout.write(json.dumps({"port": port.getHost().port}) + "\n")
    sys.stdout.flush()
    reactor.run()  # type: ignore[attr-defined]
