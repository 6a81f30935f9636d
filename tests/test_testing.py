"""
Tests for L{txgraphsse.testing}: the in-memory pair that users' own tests
build on.  These are written the way a user would write theirs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import Caller, SessionClosed, SSEBackend
from txgraphsse.client import RemoteError
from txgraphsse.testing import SSETestPair


def install(backend: SSEBackend) -> None:
    """
    A small application: routes, and an endpoint with a channel.
    """

    def greet(name: str, *, caller: Caller) -> str:
        if caller.session is not None:
            caller.session.state["greeted"] = name
        return f"hi {name}"

    backend.add_route("greet", greet)
    backend.add_route("fail", lambda: 1 / 0)
    backend.setup_sse("/sse", channels=["news"], keepalive=0, request_timeout=10)


class PairTests(SynchronousTestCase):
    """
    An application's routes and calls, both ways, with no sockets.
    """

    def setUp(self) -> None:
        self.pair = SSETestPair(install, client_routes={"double": lambda x: 2 * x})
        self.addCleanup(self.pair.close)

    def test_client_calls_server(self) -> None:
        """
        The client runs a server route, which sees its session through
        caller; a route that raises reaches the test as RemoteError.
        """
        conn = self.pair.connect()
        self.assertEqual(self.pair.result(conn.run("greet", ["ada"])), "hi ada")
        self.assertEqual(self.pair.session(conn).state["greeted"], "ada")
        error = self.assertRaises(RemoteError, self.pair.result, conn.run("fail"))
        self.assertEqual(error.code, "route_failed")
        self.flushLoggedErrors(ZeroDivisionError)

    def test_server_calls_client(self) -> None:
        """
        The server runs the client's route and gets its answer.
        """
        conn = self.pair.connect()
        d = self.pair.endpoint.run("double", [21], session_id=conn.session_id)
        self.assertEqual(self.pair.result(d), 42)  # type: ignore[arg-type]

    def test_channels_and_subscriptions(self) -> None:
        """
        Channel events reach the client's handler; the client's subscription
        to a server route gets each output.
        """
        conn = self.pair.connect("?channels=news")
        news: list[Any] = []
        self.pair.client.add_handler("news", lambda data, event, c: news.append(data))
        self.pair.endpoint.channels["news"].broadcast({"headline": 1})
        self.pair.pump()
        self.assertEqual(news, [{"headline": 1}])
        outputs: list[Any] = []
        self.pair.result(conn.subscribe("greet", outputs.append))
        self.pair.result(self.pair.backend.call("greet", "bo"))
        self.pair.pump()
        self.assertEqual(outputs, ["hi bo"])

    def test_timeouts_with_the_clock(self) -> None:
        """
        A server call the client never answers times out when the test
        advances the clock past the endpoint's request_timeout.
        """
        conn = self.pair.connect()
        self.pair.client.add_route("slow", lambda: _pending())
        d = self.pair.endpoint.run("slow", session_id=conn.session_id)
        self.pair.pump()
        self.pair.advance(10)
        self.assertRaises(TimeoutError, self.pair.result, d)  # type: ignore[arg-type]

    def test_close_leaves_nothing(self) -> None:
        """
        Closing the pair fails calls in flight and leaves no timer, session
        or pending call.
        """
        conn = self.pair.connect()
        self.pair.client.add_route("slow", lambda: _pending())
        d = self.pair.endpoint.run("slow", session_id=conn.session_id)
        self.pair.pump()
        self.pair.close()
        self.assertRaises(SessionClosed, self.pair.result, d)  # type: ignore[arg-type]
        self.assertEqual(self.pair.endpoint.sessions, {})
        self.assertEqual(len(self.pair.endpoint.calls), 0)
        self.assertEqual(self.pair.clock.getDelayedCalls(), [])


def _pending() -> Deferred[Any]:
    """
    A client route that never answers.
    """
    return Deferred()
