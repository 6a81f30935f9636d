# -*- test-case-name: tests.test_graph,tests.test_shutdown_tls -*-
"""
L{SSEBackend}: the routes an application exposes and the endpoints that
serve them, as the seed's C{SSEbackend} with C{setupSSE}.

It owns the route graph shared by its endpoints, the broker they publish
through, and the service that shuts them down cleanly.  It builds each
endpoint with its HTTP face (L{SSEResource}), standing above both, and
never touches a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime

from ._auth import CallableAuthorizer, IAuthorizer
from ._broker import HistoryPolicy, IBroker, InMemoryBroker
from ._channel import ChannelSpec
from ._cors import CORSPolicy
from ._endpoint import ConnectionCallback, SSEEndpoint
from ._graph import Caller, RouteGraph
from ._limits import Limits
from ._options import KEPT_REQUEST_HEADERS, EndpointOptions
from ._resource import SSEResource
from ._session import OverflowPolicy

__all__ = ["SSEBackend", "SSEService"]


def _echo(*args: Any) -> Any:
    if not args:
        return None
    return args[0] if len(args) == 1 else list(args)


class SSEBackend:
    """
    Routes and SSE endpoints.

    @ivar graph: the routes, shared by every endpoint.
    @ivar endpoints: endpoints by path.
    @ivar broker: where endpoints publish (in memory unless given).
    """

    def __init__(
        self, reactor: IReactorTime | None = None, broker: IBroker | None = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = cast(IReactorTime, default)
        self.clock = reactor
        self.broker: IBroker = broker if broker is not None else InMemoryBroker(reactor)
        self.graph = RouteGraph()
        self.endpoints: dict[str, SSEEndpoint] = {}
        self.graph.add_route("ping", lambda: "pong")
        self.graph.add_route("echo", _echo)

    # Routes

    def route(
        self, name: str | None = None, exposed: bool = True, subscribable: bool = False
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """
        Decorator: C{@backend.route("name")} makes the function a route
        clients can call (unless C{exposed=False}).
        """
        return self.graph.route(name, exposed, subscribable)

    def add_route(
        self, name: str, target: Any, exposed: bool = True, subscribable: bool = False
    ) -> None:
        """
        Add route C{name}: a function (plain, returning a L{Deferred}, or
        C{async def}), or an object whose public methods are verbs that a
        message's C{method} picks.

        @param subscribable: whether a client that subscribes to the route
            sees the outputs of everyone's calls; by default it sees those
            of its own principal's calls (and of the server's own) only.
        """
        self.graph.add_route(name, target, exposed, subscribable)

    def load(self, obj: Any, exposed: bool = True) -> list[str]:
        """
        Add every public method of C{obj} as a route.
        """
        return self.graph.load(obj, exposed)

    def restrict(self, names: Iterable[str]) -> None:
        """
        Keep routes C{names} from clients; the server can still run them.
        """
        self.graph.restrict(names)

    def subscribe(self, route: str, callback: Callable[[Any], object]) -> int:
        """
        Call C{callback} with every output of route C{route}, local or
        remote runs alike.
        """
        return self.graph.subscribe(route, callback)

    def unsubscribe(self, route: str, sub: int | None = None) -> bool:
        return self.graph.unsubscribe(route, sub)

    def call(self, route: str, *args: Any, method: str | None = None) -> Deferred[Any]:
        """
        Run one of this backend's own routes from the server.
        """
        return self.graph.call(route, args, method, Caller())

    # Endpoints

    def setup_sse(
        self,
        path: str = "/sse",
        channels: Iterable[str | ChannelSpec] = (),
        on_connection: ConnectionCallback | None = None,
        on_close: Callable[[SSEEndpoint], object] | None = None,
        on_connection_close: ConnectionCallback | None = None,
        keepalive: float = 15.0,
        retry: int = 2000,
        history: int | HistoryPolicy = 0,
        dynamic_channels: bool = False,
        request_timeout: float | None = 30.0,
        max_backlog: int = 1 << 20,
        overflow: OverflowPolicy = "disconnect",
        authorizer: IAuthorizer | None = None,
        authorize: Callable[[Any], Any] | None = None,
        can_join: Callable[[Any, str], bool] | None = None,
        limits: Limits | None = None,
        cors: CORSPolicy | None = None,
        keep_request_headers: Iterable[bytes] | None = KEPT_REQUEST_HEADERS,
        expose_errors: bool = False,
        write_timeout: float | None = 60.0,
        log_streams: bool = True,
    ) -> SSEEndpoint:
        """
        Serve SSE at C{path}: returns the L{SSEEndpoint}, whose C{resource}
        you mount in a C{Site} or a Klein app.

        @param channels: named channels besides the default one (names, or
            L{ChannelSpec}s).
        @param on_connection: C{(client, endpoint, session_id, request)},
            called when a stream opens.
        @param on_close: C{(endpoint)}, called when the endpoint terminates.
        @param on_connection_close: as C{on_connection}, when a stream ends.
        @param keepalive: seconds between keep-alive comments (0: none).
        @param retry: the C{retry:} the client is told, in milliseconds.
        @param history: events each channel keeps for C{Last-Event-ID}
            replay (a count, or a L{HistoryPolicy} with an age).
        @param dynamic_channels: let clients join channels not configured.
        @param request_timeout: default seconds a server-to-client call waits.
        @param max_backlog: bytes a paused (slow) stream may hold back.
        @param overflow: what happens past C{max_backlog}: C{"disconnect"} or
            C{"drop_oldest"}.
        @param authorizer: who may connect and call, and which channels they
            may join (an L{IAuthorizer}, such as L{txgraphsse.JWTAuthorizer}).
        @param authorize: or just a function C{(request) -> principal} (or a
            L{Deferred} of it) that raises L{txgraphsse.Unauthorized} or
            L{txgraphsse.AccessDenied} to refuse ...
        @param can_join: ... and a function C{(principal, channel) -> bool}.
        @param limits: body size, rates, sessions, calls: L{Limits}.
        @param cors: which other origins may use the endpoint (none unless
            given): L{CORSPolicy}.
        @param keep_request_headers: the request headers an open stream's
            C{http_request} keeps once C{on_connection} has run (by default
            those an access log writes); L{None} keeps all of them.  Read
            any other header in C{authorize} or C{on_connection}.
        @param write_timeout: seconds a stream whose client reads nothing
            (its transport paused) may wait before it is dropped; L{None}
            for no limit.
        @param expose_errors: whether a failing route's answer says what
            failed (the exception's type and message); by default it says
            only C{route_failed} and an error id, which the log line with
            the traceback carries too.  A L{txgraphsse.RouteError} the route
            raises on purpose is always shown.
        @param log_streams: whether each stream's opening and end are logged
            (at C{info}); a server that opens thousands a second, with an
            access log of its own in front, may leave them out: they are a
            tenth of what opening a stream costs.
        """
        if authorizer is None and (authorize is not None or can_join is not None):
            authorizer = CallableAuthorizer(authorize, can_join)
        if path in self.endpoints and not self.endpoints[path].closed:
            raise ValueError(f"an endpoint is already set up at {path!r}")
        # Every parameter but path, authorize and can_join is an option of
        # the same name: tests.test_exports holds the two lists together.
        options = EndpointOptions.of(locals())
        endpoint = SSEEndpoint(
            path=path,
            graph=self.graph,
            clock=self.clock,
            broker=self.broker,
            face=SSEResource,
            options=options,
        )
        self.endpoints[path] = endpoint
        return endpoint

    def shutdown(self) -> Deferred[None]:
        """
        Send every stream a last C{shutdown} event, close it, and fail every
        pending call.
        """
        drained = [endpoint.shutdown() for endpoint in list(self.endpoints.values())]
        stop = getattr(self.broker, "stop", None)
        if stop is not None:
            drained.append(maybeDeferred(stop))
        return gatherResults(drained).addCallback(lambda _: None)


class SSEService(Service):
    """
    Runs an L{SSEBackend} as a twisted.application service: stopping it
    closes every stream cleanly.  Add it to a C{MultiService} before the
    listening port's service, so that the port stops listening first.
    """

    def __init__(self, backend: SSEBackend) -> None:
        self.backend = backend

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        start = getattr(self.backend.broker, "start", None)
        if start is not None:
            start()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.backend.shutdown()
