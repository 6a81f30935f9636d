"""
Calls both ways between Python and a page: buttons in the page run Python
routes, and Python runs functions of the page and prints their answers.

Run it::

    python examples/calls/app.py --port 8080

then open http://127.0.0.1:8080/ and watch this terminal.

  - Page to Python: each button runs a route with C{sse.run(route, args)}
    (C{add}, C{server_time}, C{reverse}) and shows the result.
  - Python to page: when a page connects, Python runs the page's
    C{describe} and C{multiply} with C{endpoint.run(route, args,
    session_id=...)} and prints what they return; the button "Python, call
    me" runs the route C{call_me}, which in turn runs the page's
    C{read_note} (what is typed in the page) and C{confirm}, and prints
    both answers.

C{--interface 0.0.0.0} listens on every interface.  Ctrl-C sends every
stream a last C{shutdown} event.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTCP
from twisted.internet.task import react
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from txgraphsse import Caller, ProtocolError, SSEBackend, SSEClient, SSEEndpoint

__all__ = ["CallsApp", "main"]

STATIC = Path(__file__).resolve().parent / "static"


def say(line: str) -> None:
    """
    Print one line for the person running the server.
    """
    print(line, flush=True)


class CallsApp:
    """
    The routes the page calls, and the calls Python makes to each page.

    @ivar endpoint: the SSE endpoint at C{/sse}.
    """

    def __init__(self, backend: SSEBackend) -> None:
        self.endpoint: SSEEndpoint = backend.setup_sse(
            "/sse", on_connection=self.connected, request_timeout=30.0
        )
        backend.add_route("add", self.add)
        backend.add_route("server_time", self.server_time)
        backend.add_route("reverse", self.reverse)
        backend.add_route("call_me", self.call_me)

    # Python to the page

    def connected(
        self,
        client: SSEClient,
        endpoint: SSEEndpoint,
        session_id: str,
        request: Request,
    ) -> None:
        """
        A page connected: ask it who it is and to multiply, and print the
        answers.
        """
        tag = session_id[:8]
        say(f"[{tag}] page connected")
        described = self._run(client, "describe")
        described.addCallback(lambda page: say(f"[{tag}] describe() -> {page}"))
        product = self._run(client, "multiply", [6, 7])
        product.addCallback(lambda value: say(f"[{tag}] multiply(6, 7) -> {value}"))
        for deferred, what in ((described, "describe"), (product, "multiply")):
            deferred.addErrback(self._failed, tag, what)

    def _run(self, client: SSEClient, route: str, args: Any = None) -> Deferred[Any]:
        """
        C{endpoint.run(route, args, session_id=...)}: the page's answer.
        """
        result = self.endpoint.run(route, args, session_id=client.id)
        assert isinstance(result, Deferred)
        return result

    def _failed(self, failure: Failure, tag: str, what: str) -> None:
        say(f"[{tag}] {what}() failed: {failure.getErrorMessage()}")

    async def call_me(self, *, caller: Caller) -> str:
        """
        The page asked Python to call it: read its note, ask it to confirm,
        print both answers.

        @return: what Python did, for the page to show.
        """
        session = caller.session
        if session is None:
            raise ProtocolError(403, "forbidden", "open a stream first")
        client = cast(SSEClient, session)
        tag = client.id[:8]
        note = await self._run(client, "read_note")
        say(f"[{tag}] read_note() -> {note!r}")
        answer = await self._run(client, "confirm", [f"Python read {note!r}"])
        say(f"[{tag}] confirm(...) -> {answer!r}")
        return f"Python read {note!r} and the page answered {answer!r}"

    # The page to Python

    def add(self, a: float, b: float) -> float:
        """
        C{a + b}.
        """
        return a + b

    def server_time(self) -> str:
        """
        The server's clock, in ISO 8601 (UTC).
        """
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    def reverse(self, text: str) -> str:
        """
        C{text} backwards.
        """
        return str(text)[::-1]

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
    Serve the page until the reactor stops.
    """
    parser = argparse.ArgumentParser(description="txgraphsse calls both ways")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="address")
    args = parser.parse_args(list(argv))
    backend = SSEBackend()
    app = CallsApp(backend)
    port = reactor.listenTCP(args.port, app.site(), interface=args.interface)
    # Ctrl-C or SIGTERM: every stream gets a last `shutdown` event.
    cast(IReactorCore, reactor).addSystemEventTrigger(
        "before", "shutdown", backend.shutdown
    )
    host = port.getHost()
    say(f"calls on http://{host.host}:{host.port}/ (Ctrl-C to stop)")  # type: ignore[attr-defined]
    return Deferred()


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
