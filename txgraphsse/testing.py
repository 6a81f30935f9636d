# -*- test-case-name: tests.test_testing -*-
"""
Test helpers for applications built on txgraphsse, as C{treq.testing} is for
treq: an in-memory server and Python client, with no sockets and a Clock
that the test advances::

    from txgraphsse.testing import SSETestPair

    class MyTests(SynchronousTestCase):
        def test_greets(self):
            pair = SSETestPair(setup=my_app.install)   # my_app.install(backend)
            self.addCleanup(pair.close)
            conn = pair.connect()
            self.assertEqual(pair.result(conn.run("greet", ["ada"])), "hi ada")

Works the same under trial and pytest: nothing touches the global reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from ._backend import SSEBackend
from ._endpoint import SSEEndpoint
from .client import Connection, GraphSSEClient
from .tap import mount

__all__ = ["SSETestPair"]

_T = TypeVar("_T")


class SSETestPair:
    """
    A server (an L{SSEBackend} with one endpoint) and a L{GraphSSEClient},
    joined in memory.

    @ivar clock: the reactor of both sides; L{advance} moves it.
    @ivar backend: the server's backend.
    @ivar endpoint: the server's endpoint at C{path}.
    @ivar client: the Python client; L{connect} opens its streams.
    """

    #: The host the client's URLs name; nothing resolves it.
    base = "http://testserver"

    def __init__(
        self,
        setup: Callable[[SSEBackend], object] | None = None,
        *,
        path: str = "/sse",
        routes: Mapping[str, Any] | None = None,
        client_routes: Mapping[str, Any] | None = None,
        **endpoint_options: Any,
    ) -> None:
        """
        @param setup: called with the new backend, to add the application's
            routes and endpoints (an endpoint it sets up at C{path} is used;
            otherwise one is set up with C{endpoint_options}).
        @param routes: server routes to add, by name.
        @param client_routes: the client's own routes, by name.
        """
        self.clock = MemoryReactorClock()
        self.backend = SSEBackend(reactor=self.clock)
        for name, target in (routes or {}).items():
            self.backend.add_route(name, target)
        if setup is not None:
            setup(self.backend)
        endpoint = self.backend.endpoints.get(path)
        if endpoint is None:
            endpoint_options.setdefault("keepalive", 0)
            endpoint = self.backend.setup_sse(path, **endpoint_options)
        self.endpoint: SSEEndpoint = endpoint
        self.path = path
        root = Resource()
        mount(root, path, endpoint.resource)
        self._agent = RequestTraversalAgent(root)
        self.client = GraphSSEClient(
            self.clock, agent=self._agent, routes=client_routes, jitter=0
        )

    @property
    def url(self) -> str:
        return self.base + self.path

    def pump(self, turns: int = 50) -> None:
        """
        Move bytes both ways and run what is due now, until nothing changes
        (or C{turns} rounds have passed).
        """
        for _ in range(turns):
            before = len(self.clock.getDelayedCalls())
            self.clock.advance(0)
            self._agent.flush()
            self.clock.advance(0)
            if len(self.clock.getDelayedCalls()) == before and not any(
                call.getTime() <= self.clock.seconds()
                for call in self.clock.getDelayedCalls()
            ):
                self._agent.flush()
                return

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass on both sides (timeouts, keep-alives, retries),
        moving bytes as they are written.
        """
        self.pump()
        self.clock.advance(seconds)
        self.pump()

    def result(self, deferred: Deferred[_T]) -> _T:
        """
        Pump until C{deferred} fires; return its result or raise its error.

        @raise AssertionError: if it has not fired once nothing moves.
        """
        outcome: list[Any] = []
        deferred.addBoth(outcome.append)
        self.pump()
        if not outcome:
            raise AssertionError(f"{deferred!r} has not fired; advance the clock?")
        value = outcome[0]
        if isinstance(value, Failure):
            value.raiseException()
        return value  # type: ignore[no-any-return]

    def connect(self, query: str = "", **kwargs: Any) -> Connection:
        """
        Open a stream from the client (C{query}: e.g. C{"?channels=news"})
        and return its L{Connection} once the server has given it its id.
        """
        return self.result(self.client.connect(self.url + query, **kwargs))

    def session(self, connection: Connection) -> Any:
        """
        The server's L{txgraphsse.SSEClient} for C{connection}.
        """
        assert connection.session_id is not None
        return self.endpoint.sessions[connection.session_id]

    def close(self) -> None:
        """
        Close the client and the endpoint; nothing stays behind.
        """
        closing = self.client.terminate()
        self.pump()
        if isinstance(closing, Deferred):
            closing.addErrback(lambda _: None)
        self.endpoint.terminate()
        self.pump()
