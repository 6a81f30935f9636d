# -*- test-case-name: tests.test_client -*-
"""
L{GraphSSEClient}: the graphscript client side (graphscript's
C{EventSourceInfo}), which holds the routes the server may run and the
L{Connection}s it opens.

This module owns the client as a whole: its routes (added, removed, run
here with their outputs going to every connection), its event handlers,
opening a connection, the calls that act on the first one, what nobody
waits for (C{on_error}, C{on_session}), and terminating everything it
opened.  One connection's session and calls are C{_connection}'s; the
stream is L{EventSource}'s.  It knows nothing of the server.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

from attrs import evolve
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RedirectAgent
from twisted.web.iweb import IAgent, IPolicyForHTTPS

from .._parser import ServerSentEvent
from ._connection import Connection
from ._handlers import Handlers, call_logged
from ._http import Connections
from ._routes import run_route
from ._source import ClientClosed, EventSource, StreamOptions, default_reactor
from ._tokens import GetToken

__all__ = ["GraphSSEClient", "Handler"]

#: C{(data, event, connection)}: the event's data (its JSON value, or the
#: text when it is not JSON), the event, and the connection it came on.
Handler = Callable[[Any, ServerSentEvent, Connection], object]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
_V = TypeVar("_V")


class _StreamSetting(Generic[_V]):
    """
    An attribute of a L{GraphSSEClient} that is the field of the same name of
    the L{StreamOptions} its streams are opened with: setting it changes
    that field for the connections made from then on.
    """

    def __set_name__(self, owner: type[GraphSSEClient], name: str) -> None:
        self._name = name

    @overload
    def __get__(
        self, client: None, owner: type[GraphSSEClient]
    ) -> _StreamSetting[_V]: ...

    @overload
    def __get__(self, client: GraphSSEClient, owner: type[GraphSSEClient]) -> _V: ...

    def __get__(
        self, client: GraphSSEClient | None, owner: type[GraphSSEClient]
    ) -> _V | _StreamSetting[_V]:
        if client is None:
            return self
        return cast(_V, getattr(client._stream, self._name))

    def __set__(self, client: GraphSSEClient, value: _V) -> None:
        change: dict[str, Any] = {self._name: value}
        client._stream = evolve(client._stream, **change)


class GraphSSEClient:
    """
    The client side of graphscript's SSE (its C{EventSourceInfo}): routes
    the server may run, and connections to endpoints to call it back::

        client = GraphSSEClient()

        @client.route()
        def greet(name):
            return f"hello {name}"

        connection = await client.connect("http://127.0.0.1:8080/sse")
        print(await connection.run("ping"))

    One client may connect to several endpoints: each L{connect} gives a
    L{Connection} with its own session and the same call methods, and they
    all serve the client's routes.  The client's own call methods act on
    its first open connection.

    @ivar routes: the routes, by name: functions (plain, returning a
        L{Deferred}, or C{async def}), or objects whose public methods are
        verbs that a message's C{method} picks.
    @ivar connections: the open connections, in the order they were made.
    @ivar on_error: called with C{(failure, connection)} for what no caller
        waits for: a stream that ended or could not connect (before it
        reconnects), a route the server posted that failed, an answer or
        update the server refused.
    @ivar on_session: called with the L{Connection} each time it gets a
        session (again after each reconnection).
    @ivar max_answer: the most bytes of a C{POST} answer it reads.
    @ivar idle_timeout: see L{EventSource}, for the connections made from
        then on.
    @ivar max_backoff: likewise.
    @ivar jitter: likewise.
    """

    _log = Logger()

    idle_timeout: _StreamSetting[float | None] = _StreamSetting()
    max_backoff: _StreamSetting[float] = _StreamSetting()
    jitter: _StreamSetting[float] = _StreamSetting()

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        routes: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: HTTPClient | None = None,
        agent: IAgent | None = None,
        tls_policy: IPolicyForHTTPS | None = None,
        idle_timeout: float | None = 45.0,
        max_backoff: float = 30.0,
        jitter: float = 0.25,
        max_answer: int = 16 << 20,
        get_token: GetToken | None = None,
    ) -> None:
        """
        @param reactor: the reactor; the global one by default.
        @param routes: routes to start with.
        @param headers: extra headers for every request (stream and C{POST}).
        @param http_client: a treq client for the C{POST}s (and the streams,
            unless C{agent} is given).
        @param agent: an L{IAgent} for the streams (and the C{POST}s, unless
            C{http_client} is given).  With neither, the client makes its own
            connections, and L{terminate} waits until they are all closed.
        @param tls_policy: TLS settings of its own connections.
        @param idle_timeout: see L{EventSource}.
        @param max_backoff: see L{EventSource}.
        @param jitter: see L{EventSource}.
        @param get_token: where tokens come from, for servers that want
            them: a function returning a token (a JWT) or a L{Deferred} of
            one.  Each connection asks it before its stream opens and again
            shortly before each token's C{exp}, sends the token as
            C{Authorization: Bearer} with the stream and every C{POST}, and
            has its open session carry on under the new one
            (C{refreshToken}) instead of reconnecting.
        """
        self._get_token = get_token
        self._reactor = reactor if reactor is not None else default_reactor()
        self.routes: dict[str, Any] = dict(routes or {})
        self._own: Connections | None = None
        stream_agent = agent
        if agent is None and http_client is None:
            self._own = Connections(self._reactor, tls_policy)
            agent = self._own.agent
            stream_agent = RedirectAgent(agent)
        self._http: HTTPClient = (
            http_client if http_client is not None else HTTPClient(cast(IAgent, agent))
        )
        # What every stream is opened with: the way to the server chosen
        # here, and the rest as it was given.
        self._stream = StreamOptions(
            headers=dict(headers or {}),
            http_client=self._http if stream_agent is None else None,
            agent=stream_agent,
            tls_policy=tls_policy,
            idle_timeout=idle_timeout,
            max_backoff=max_backoff,
            jitter=jitter,
        )
        self.max_answer = max_answer
        self.connections: list[Connection] = []
        self.on_error: Callable[[Failure, Connection | None], object] | None = None
        self.on_session: Callable[[Connection], object] | None = None
        self.closed = False
        self._handlers: Handlers[[Any, ServerSentEvent, Connection]]
        self._handlers = Handlers(self._log)
        self._subs = itertools.count(1)
        self._calls = itertools.count(1)

    def __repr__(self) -> str:
        return f"<GraphSSEClient connections={len(self.connections)}>"

    # Routes

    def add_route(self, name: str, target: Any) -> None:
        """
        Add (or replace) route C{name}, which the server may run: a function
        (plain, returning a L{Deferred}, or C{async def}), or an object whose
        public methods are verbs.
        """
        if not name or name.startswith("_"):
            raise ValueError(
                f"a route name must not be empty or start with _: {name!r}"
            )
        self.routes[name] = target

    def route(self, name: str | None = None) -> Callable[[_F], _F]:
        """
        A decorator: C{@client.route()} adds the function as a route of its
        own name (or of C{name}).
        """

        def add(fn: _F) -> _F:
            self.add_route(name or fn.__name__, fn)
            return fn

        return add

    def remove_route(self, name: str) -> bool:
        """
        @return: whether there was a route C{name}.
        """
        return self.routes.pop(name, None) is not None

    def call_local(
        self, name: str, args: Any = None, method: str | None = None
    ) -> Deferred[Any]:
        """
        Run route C{name} here, as the server would (C{args} spread as on
        the wire); the server's subscribers to it, on every connection, get
        its result.

        @return: a L{Deferred} firing with the result; it fails with
            L{UnknownRoute} if there is no such route.
        """
        return self._run(name, args, method)

    def _run(self, name: str, args: Any, method: str | None) -> Deferred[Any]:
        def ran(result: Any) -> Any:
            for connection in list(self.connections):
                connection._emit(name, result)
            return result

        return run_route(self.routes, name, args, method).addCallback(ran)

    # Events

    def add_handler(self, event_type: str, handler: Handler) -> None:
        """
        Call C{handler(data, event, connection)} for every event named
        C{event_type} on every connection: for C{"message"}, every message
        that is not the framework's own (application data from the server's
        C{send}); for other names (a channel's, C{shutdown}, C{reset}),
        every event.  C{data} is the JSON value, or the text if it is not
        JSON.
        """
        self._handlers.add(event_type, handler)
        for connection in self.connections:
            connection._listen(event_type)

    def remove_handler(self, event_type: str, handler: Handler) -> bool:
        """
        @return: whether C{handler} was there.
        """
        return self._handlers.remove(event_type, handler)

    def _deliver(
        self, event_type: str, data: Any, event: ServerSentEvent, connection: Connection
    ) -> None:
        self._handlers.dispatch(event_type, data, event, connection)

    # Connections

    def connect(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        get_token: GetToken | None = None,
    ) -> Deferred[Connection]:
        """
        Open a stream to the endpoint at C{url}.

        @param headers: extra headers for this connection's requests.
        @param get_token: this connection's source of tokens, in place of
            the client's (see L{GraphSSEClient}).
        @param last_event_id: resume after this event id.
        @return: a L{Deferred} firing with the L{Connection} once the server
            has sent its session id; failing with L{RemoteError} if the
            server refuses the stream for good.  It keeps trying through
            network errors: add a timeout if you want one (cancelling it
            terminates the connection).
        """
        if self.closed:
            return fail(ClientClosed("this client was terminated"))
        merged = {**(self._stream.headers or {}), **(headers or {})}
        source = EventSource(
            url,
            self._reactor,
            last_event_id=last_event_id,
            start=False,
            **evolve(self._stream, headers=merged).keywords(),
        )
        connection = Connection(self, url, source, merged, get_token or self._get_token)
        self.connections.append(connection)
        for event_type in self._handlers:
            connection._listen(event_type)

        cancelled = False

        def cancel(_: Deferred[Connection]) -> None:
            nonlocal cancelled
            cancelled = True
            connection.terminate()

        result: Deferred[Connection] = Deferred(cancel)

        def ready(_: str) -> None:
            if not result.called:
                result.callback(connection)

        def failed(failure: Failure) -> None:
            if not result.called and not cancelled:
                result.errback(failure)

        connection.when_session().addCallbacks(ready, failed)
        if connection.tokens is None:
            source.start()
        else:

            def no_token(failure: Failure) -> None:
                connection._shutdown(failure)
                source.close()

            connection.tokens.start().addCallbacks(lambda _: source.start(), no_token)
        return result

    @property
    def connection(self) -> Connection:
        """
        The first open connection, which the client's own call methods use.

        @raise ClientClosed: there is none.
        """
        if not self.connections:
            raise ClientClosed("this client has no open connection")
        return self.connections[0]

    @property
    def session_id(self) -> str | None:
        """
        The first open connection's session id.
        """
        return self.connections[0].session_id if self.connections else None

    def _on_first(self, call: Callable[[Connection], Deferred[_T]]) -> Deferred[_T]:
        """
        C{call} on the first open connection, or a L{ClientClosed} failure
        if there is none.
        """
        try:
            connection = self.connection
        except ClientClosed:
            return fail()
        return call(connection)

    def send(self, message: Any) -> Deferred[Any]:
        """
        L{Connection.send} on the first open connection.
        """
        return self._on_first(lambda connection: connection.send(message))

    def post(
        self, route: str, args: Any = None, method: str | None = None
    ) -> Deferred[None]:
        """
        L{Connection.post} on the first open connection.
        """
        return self._on_first(lambda connection: connection.post(route, args, method))

    def run(
        self, route: str, args: Any = None, method: str | None = None
    ) -> Deferred[Any]:
        """
        L{Connection.run} on the first open connection.
        """
        return self._on_first(lambda connection: connection.run(route, args, method))

    def request(self, message: Any, method: str | None = None) -> Deferred[Any]:
        """
        L{Connection.request} on the first open connection.
        """
        return self._on_first(lambda connection: connection.request(message, method))

    def subscribe(
        self, route: str, callback: Callable[[Any], object], args: Any = None
    ) -> Deferred[int]:
        """
        L{Connection.subscribe} on the first open connection.
        """
        return self._on_first(
            lambda connection: connection.subscribe(route, callback, args)
        )

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        L{Connection.unsubscribe} on the first open connection.
        """
        return self._on_first(lambda connection: connection.unsubscribe(route, sub))

    def terminate(self) -> Deferred[None]:
        """
        Close every connection for good and everything the client opened.

        @return: a L{Deferred} that fires once no stream, no connection and
            no timer of the client is left.
        """
        self.closed = True
        waits = [connection.terminate() for connection in list(self.connections)]
        if self._own is not None:
            waits.append(self._own.close())
        return gatherResults(waits).addCallback(lambda _: None)

    # For connections

    def _forget(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)

    def _session_opened(self, connection: Connection) -> None:
        call_logged(self._log, "on_session failed", {}, self.on_session, connection)

    def _report(self, failure: Failure, connection: Connection | None) -> None:
        """
        Tell C{on_error} of something no caller waits for, or log it.
        """
        if self.on_error is None:
            self._log.info(
                "{url}: {why}",
                url=connection.url if connection is not None else None,
                why=failure.getErrorMessage(),
            )
            return
        call_logged(
            self._log, "on_error failed", {}, self.on_error, failure, connection
        )

    def _next_sub(self) -> int:
        return next(self._subs)

    def _callback_id(self) -> str:
        return f"py.{next(self._calls)}.{secrets.token_urlsafe(6)}"
