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
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["HoldNext", "serve"]


class HoldNext(Resource):
    """
    An endpoint's resource, except that after L{hold} the next C{POST}
    whose body has the marker waits a while before the endpoint gets it: a
    slow first request, which later ones on other connections could
    overtake.

    @ivar held: how many requests it has held.
    @ivar posts: how many C{POST}s it has had.
    """

    isLeaf = True

    def __init__(self, inner: Resource, clock: IReactorTime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.clock = clock
        self.marker: bytes | None = None
        self.seconds = 0.0
        self.held = 0
        self.posts = 0

    def hold(self, marker: bytes, seconds: float) -> None:
        """
        Hold the next C{POST} whose body has C{marker} for C{seconds}.
        """
        self.marker = marker
        self.seconds = seconds

    def render(self, request: Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        request.content.seek(0)
        if request.method == b"POST":
            self.posts += 1
        if request.method == b"POST" and self.marker and self.marker in body:
            self.marker = None
            self.held += 1
            self.clock.callLater(self.seconds, self._answer, request)
            return NOT_DONE_YET
        return self.inner.render(request)

    def _answer(self, request: Request) -> None:
        result = self.inner.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()


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
