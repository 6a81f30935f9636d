"""
The server that graphscript's own browser client (C{SSEfrontend}) is driven
against in C{tests/test_graphscript_compat.py}.

It serves, on one origin:

  - C{/}: C{tests/graphscript/page.html}, the page that opens the client;
  - C{/graphscript/}: the C{dist/} directory of the npm package installed in
    C{tests/graphscript/node_modules} (no external network);
  - C{/sse}: the txgraphsse endpoint, with the routes below.

The routes named C{test_*} let the test (a plain HTTP client) see and drive
the server side: which sessions are open, and the server's C{post}, C{run},
C{request} and C{subscribe} towards one session, whose results they return.
C{counter} is the route the page subscribes to: C{subscribable}, so that the
page sees the outputs of every client's calls, as graphscript's subscriptions
do.

Run it with C{python -m tests.servers.graphscript --port 0}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from txgraphsse import Caller, SSEBackend, SSEEndpoint

from . import serve

__all__ = ["DIST", "PAGE", "make_site"]

HERE = Path(__file__).resolve().parent.parent / "graphscript"
#: The page the browser opens.
PAGE = HERE / "page.html"
#: graphscript's browser builds.
DIST = HERE / "node_modules" / "graphscript" / "dist"


def _endpoint(caller: Caller) -> SSEEndpoint:
    endpoint = caller.endpoint
    assert isinstance(endpoint, SSEEndpoint)
    return endpoint


def add_routes(backend: SSEBackend) -> None:
    """
    Add the routes the test drives the server with.
    """
    #: Updates of client routes the server subscribed to, by session.
    updates: dict[str, list[Any]] = {}

    @backend.route("test_sessions")
    def sessions(*, caller: Caller) -> list[str]:
        """
        The ids of the sessions open on the endpoint.
        """
        return sorted(_endpoint(caller).sessions)

    @backend.route("test_post")
    def post(session_id: str, route: str, args: Any = None, *, caller: Caller) -> bool:
        """
        C{endpoint.post(route, args)} to one session: fire and forget.
        """
        _endpoint(caller).post(route, args, session_id=session_id)
        return True

    @backend.route("test_run")
    def run(
        session_id: str, route: str, args: Any = None, *, caller: Caller
    ) -> Deferred[Any]:
        """
        C{endpoint.run(route, args)} on one session: the client's answer.
        """
        result = _endpoint(caller).run(route, args, session_id=session_id)
        assert isinstance(result, Deferred)
        return result

    @backend.route("test_request")
    def request(session_id: str, message: Any, *, caller: Caller) -> Deferred[Any]:
        """
        C{endpoint.request(message)} on one session: the client's answer.
        """
        result = _endpoint(caller).request(message, session_id=session_id)
        assert isinstance(result, Deferred)
        return result

    @backend.route("test_watch")
    def watch(session_id: str, route: str, *, caller: Caller) -> Deferred[int]:
        """
        C{endpoint.subscribe(route)} on one session, keeping its updates
        for C{test_updates}: the client's subscription number.
        """
        seen = updates.setdefault(session_id, [])
        result = _endpoint(caller).subscribe(route, seen.append, session_id=session_id)
        assert isinstance(result, Deferred)
        return result

    @backend.route("test_updates")
    def updates_of(session_id: str) -> list[Any]:
        """
        The updates C{test_watch} has received for one session so far.
        """
        return updates.get(session_id, [])

    @backend.route("counter", subscribable=True)
    def counter(value: Any) -> Any:
        """
        The server route clients subscribe to: each run outputs its argument.
        """
        return value


def make_site() -> Site:
    """
    The page, graphscript's build and the endpoint, on one origin.
    """
    backend = SSEBackend()
    add_routes(backend)
    endpoint = backend.setup_sse(path="/sse", request_timeout=10.0)
    root = Resource()
    root.putChild(b"", File(str(PAGE), defaultType="text/html"))
    root.putChild(b"graphscript", File(str(DIST)))
    root.putChild(b"sse", endpoint.resource)
    return Site(root)


if __name__ == "__main__":
    serve(make_site)
