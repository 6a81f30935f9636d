# -*- test-case-name: tests.test_client -*-
"""
The graphscript client side: L{GraphSSEClient} (graphscript's
C{EventSourceInfo}) and its L{Connection}s.

This module owns what a Python client does with the envelopes of
PROTOCOL.md: it learns its session id from C{setId}, runs its own routes when
the server posts or requests them, answers requests and subscriptions by
C{POST}, settles its own requests, delivers the updates of its subscriptions,
and makes the calls of section 2.  The stream itself is L{EventSource}'s;
HTTP is treq's; the envelopes are L{txgraphsse._messages}'.  It knows nothing
of the server.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from attrs import Factory, define
from treq.client import HTTPClient
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RedirectAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS, IResponse

from .. import _messages as messages
from .._parser import ServerSentEvent
from ._handlers import Handlers
from ._http import (
    BodyReader,
    BytesProducer,
    Connections,
    RemoteError,
    remote_error,
)
from ._routes import UnknownRoute, error_of, run_route
from ._source import ClientClosed, EventSource, default_reactor
from ._waiters import Waiters

__all__ = ["Connection", "GraphSSEClient", "UnknownRoute"]

#: C{(data, event, connection)}: the event's data (its JSON value, or the
#: text when it is not JSON), the event, and the connection it came on.
Handler = Callable[[Any, ServerSentEvent, "Connection"], object]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")

#: Request ids settled lately, so that their copy on the stream is known.
_SETTLED_MEMORY = 256


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _args_of(answer: Any) -> Any:
    return answer.get("args") if isinstance(answer, dict) else None


@define(eq=False)
class _Subscription:
    """
    This connection's subscription to a server route: one on the server,
    shared by every local callback.

    @ivar id: the server's number when it was first made; the first
        callback's handle.
    @ivar server_sub: the server's number now (a new one after each
        reconnection), or L{None} while being made.
    @ivar callbacks: local callbacks by handle.
    """

    route: str
    args: Any
    id: int | None = None
    server_sub: int | None = None
    subscribed: bool = False
    callbacks: dict[int, Callable[[Any], object]] = Factory(dict)
    waiters: Waiters[None] = Factory(Waiters)

    def wait(self) -> Deferred[None]:
        if self.subscribed:
            return succeed(None)
        return self.waiters.wait()

    def settle(self, failure: Failure | None) -> None:
        if failure is None:
            self.waiters.fire(None)
        else:
            self.waiters.fail(failure)

    def add(self, callback: Callable[[Any], object]) -> int:
        assert self.id is not None
        handle = self.id if self.id not in self.callbacks else max(self.callbacks) + 1
        self.callbacks[handle] = callback
        return handle


class Connection:
    """
    One stream of a L{GraphSSEClient} to one endpoint URL, and the calls
    made through it; L{GraphSSEClient.connect} makes them.

    Every C{POST} goes to the endpoint's URL with C{Content-Type:
    application/json}, the C{X-GraphSSE-Session} header and C{"sessionId"}
    in the body; one made before the session is known waits for it.  A
    refusal fails with L{RemoteError}; a call cut short by L{terminate}, with
    L{ClientClosed}.

    @ivar client: the client whose routes it serves.
    @ivar url: the endpoint's URL.
    @ivar path: its path, as quoted in requests.
    @ivar source: the L{EventSource} reading the stream.
    @ivar session_id: the current session id, or L{None} while there is
        none (before C{setId}, and between a stream's end and the next
        one's C{setId}: each stream is a new session).
    @ivar closed: whether it stopped for good.
    """

    _log = Logger()

    def __init__(
        self,
        client: GraphSSEClient,
        url: str,
        source: EventSource,
        headers: Mapping[str, str],
    ) -> None:
        self.client = client
        self.url = url
        self.path = urlsplit(url).path or "/"
        self.source = source
        self.session_id: str | None = None
        self.closed = False
        self._headers = dict(headers)
        self._had_session = False
        self._session_waiters: Waiters[str] = Waiters()
        self._requests: set[str] = set()
        self._settled: deque[str] = deque(maxlen=_SETTLED_MEMORY)
        self._subscriptions: dict[str, _Subscription] = {}
        self._served: dict[str, set[int]] = {}
        # One update of a route at a time, so that they arrive in order.
        self._updating: dict[str, DeferredLock] = {}
        self._posts: set[Deferred[Any]] = set()
        self._tasks: set[Deferred[Any]] = set()
        self._event_types = {"message"}
        source.on_error = self._stream_error
        source.on_close = self._stream_closed
        source.add_handler("message", self._on_message)

    def __repr__(self) -> str:
        session = self.session_id[:8] if self.session_id else None
        return f"<Connection {self.url!r} session={session}>"

    # The session

    def when_session(self) -> Deferred[str]:
        """
        @return: a L{Deferred} firing with the session id once there is one
            (at once if there is), or failing if the connection stops first.
        """
        if self.session_id is not None:
            return succeed(self.session_id)
        if self.closed:
            return fail(self._closed_failure())
        return self._session_waiters.wait()

    def _closed_failure(self) -> Failure:
        reason = self.source.close_reason
        if reason is not None:
            return reason
        return Failure(ClientClosed(f"the connection to {self.url} was terminated"))

    def _set_session(self, session_id: str) -> None:
        again = self._had_session
        self._had_session = True
        self.session_id = session_id
        # The server's subscriptions to our routes ended with the old session.
        self._served.clear()
        self._log.debug(
            "Session {session} on {url}", session=session_id[:8], url=self.url
        )
        self._session_waiters.fire(session_id)
        if again:
            # Those still being made wait for this session by themselves.
            for entry in list(self._subscriptions.values()):
                if entry.subscribed:
                    entry.server_sub = None
                    self._subscribe_on_server(entry, initial=False)
        self.client._session_opened(self)

    def _stream_error(self, reason: Failure) -> None:
        # The stream's end is its session's end; the next stream brings a new
        # one with its own setId.
        self.session_id = None
        self.client._report(reason, self)

    def _stream_closed(self, reason: Failure | None) -> None:
        self._shutdown(reason)

    def terminate(self) -> Deferred[None]:
        """
        Close the stream for good; calls still waiting fail with
        L{ClientClosed}.  The client's idle pooled connections stay until
        L{GraphSSEClient.terminate}.

        @return: a L{Deferred} that fires once the stream's connection is
            gone.
        """
        self._shutdown(None)
        return self.source.close()

    def _shutdown(self, reason: Failure | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.session_id = None
        self.client._forget(self)
        failure = reason if reason is not None else self._closed_failure()
        self._session_waiters.fail(failure)
        for deferred in list(self._posts) + list(self._tasks):
            deferred.cancel()
        entries = list(self._subscriptions.values())
        self._subscriptions.clear()
        for entry in entries:
            entry.settle(failure)
        self._served.clear()

    # The stream

    def _listen(self, event_type: str) -> None:
        if event_type not in self._event_types:
            self._event_types.add(event_type)
            self.source.add_handler(event_type, self._on_named)

    def _on_named(self, event: ServerSentEvent) -> None:
        self.client._deliver(event.type, _parse(event.data), event, self)

    def _on_message(self, event: ServerSentEvent) -> None:
        data = _parse(event.data)
        if isinstance(data, dict):
            route = data.get("route")
            if route == "setId" and isinstance(data.get("args"), str):
                self._set_session(data["args"])
                return
            if route == "runRequest":
                self._answer(data.get("args"))
                return
            if isinstance(route, str) and route in self.client.routes:
                method = data.get("method")
                self._posted(route, data.get("args"), method)
                return
            if route is None and "callbackId" in data:
                self._settle(data["callbackId"], data.get("args"))
                return
        self.client._deliver("message", data, event, self)

    def _posted(self, route: str, args: Any, method: Any) -> None:
        """
        The server posted C{route}: run it, answer nothing.
        """
        work = self.client._run(
            route, args, method if isinstance(method, str) else None
        )
        self._track(work)

        def failed(failure: Failure) -> Failure:
            if not failure.check(CancelledError):
                self._log.failure(
                    "Route {route} posted by the server failed",
                    failure=failure,
                    route=route,
                )
            return failure

        self._background(work.addErrback(failed))

    def _settle(self, callback_id: Any, args: Any) -> None:
        """
        C{{"args","callbackId"}} on the stream: the copy of one of our
        requests' answers (their C{POST} answer settles them), or an update
        of one of our subscriptions.
        """
        if not isinstance(callback_id, str):
            callback_id = str(callback_id)
        if callback_id in self._requests or callback_id in self._settled:
            return
        entry = self._subscriptions.get(callback_id)
        if entry is None:
            self._log.debug(
                "Nothing waits for {callback} on {url}",
                callback=callback_id,
                url=self.url,
            )
            return
        for callback in list(entry.callbacks.values()):
            try:
                callback(args)
            except Exception:
                self._log.failure(
                    "Subscriber of server route {route} failed", route=callback_id
                )

    def _answer(self, request: Any) -> None:
        """
        The server's request C{[message, path, callbackId, sessionId]}: run
        C{message} and C{POST} the result back, quoting C{callbackId}.
        """
        if not isinstance(request, list) or len(request) < 3:
            self._log.warn(
                "A runRequest without [message, path, callbackId] on {url}",
                url=self.url,
            )
            return
        message, callback_id = request[0], request[2]
        session_id = request[3] if len(request) > 3 else None
        if not isinstance(session_id, str) or not session_id:
            session_id = self.session_id
        work: Deferred[Any]
        if isinstance(message, dict):
            route, args, method = (
                message.get("route"),
                message.get("args"),
                message.get("method"),
            )
            if route == "subscribeSSE":
                work = maybeDeferred(self._serve, args)
            elif route == "unsubscribe":
                work = maybeDeferred(self._unserve, args)
            elif isinstance(route, str):
                work = self.client._run(
                    route, args, method if isinstance(method, str) else None
                )
            else:
                work = fail(UnknownRoute(f"no route {route!r}"))
        else:
            work = fail(ValueError("a request's message must be an object"))
        self._track(work)

        def reply(result: Any) -> dict[str, Any]:
            body: dict[str, Any] = {
                "args": result,
                "callbackId": callback_id,
                "sessionId": session_id,
            }
            try:
                messages.dumps(body)
            except (TypeError, ValueError) as error:
                return refused(Failure(TypeError(f"the result is not JSON: {error}")))
            return body

        def refused(failure: Failure) -> dict[str, Any]:
            if not failure.check(UnknownRoute, CancelledError):
                self._log.failure("Route run for the server failed", failure=failure)
            return {
                "args": None,
                "callbackId": callback_id,
                "sessionId": session_id,
                "error": error_of(failure),
            }

        answered = work.addCallbacks(reply, refused)
        self._background(
            answered.addCallback(
                lambda body: self._post_with(lambda _: body, session_id=session_id)
            )
        )

    def _serve(self, args: Any) -> int:
        """
        The server subscribes to our route C{args[0]}.
        """
        route = args[0] if isinstance(args, list) and args else None
        if not isinstance(route, str) or route not in self.client.routes:
            raise UnknownRoute(f"no route {route!r} here")
        sub = self.client._next_sub()
        self._served.setdefault(route, set()).add(sub)
        return sub

    def _unserve(self, args: Any) -> bool:
        """
        The server ends its subscription C{args[1]} to our route C{args[0]}.
        """
        if not isinstance(args, list) or len(args) < 2:
            return False
        route, sub = args[0], args[1]
        subs = self._served.get(route) if isinstance(route, str) else None
        if subs is None or sub not in subs:
            return False
        subs.discard(sub)
        if not subs:
            del self._served[route]
        return True

    def _emit(self, route: str, output: Any) -> None:
        """
        Route C{route} ran here: give its output to the server's
        subscriptions to it, if any.
        """
        session_id = self.session_id
        if self.closed or session_id is None or not self._served.get(route):
            return

        def gone(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, RemoteError) and error.status in (404, 409):
                self._served.pop(route, None)
            return failure

        update = {"args": output, "callbackId": route, "sessionId": session_id}
        # Each update waits for the one before it: POSTs on several
        # connections may overtake one another, and a subscriber must see
        # the route's outputs in the order the route made them.
        lock = self._updating.get(route)
        if lock is None:
            lock = self._updating[route] = DeferredLock()

        def idle(result: object) -> object:
            free = not lock.locked and not lock.waiting
            if free and self._updating.get(route) is lock:
                del self._updating[route]
            return result

        posted = lock.run(self._post_with, lambda _: update, session_id=session_id)
        self._background(posted.addErrback(gone).addBoth(idle))

    def _track(self, work: Deferred[Any]) -> None:
        self._tasks.add(work)

        def done(result: object) -> object:
            self._tasks.discard(work)
            return result

        work.addBoth(done)

    def _background(self, work: Deferred[Any]) -> None:
        def report(failure: Failure) -> None:
            if self.closed and failure.check(CancelledError, ClientClosed):
                return
            self.client._report(failure, self)

        work.addErrback(report)

    # POSTs

    def _post_with(
        self, build: Callable[[str], Any], session_id: str | None = None
    ) -> Deferred[Any]:
        """
        C{POST} C{build(session_id)} once there is a session.

        @param session_id: the session to quote (by default the current one,
            once there is one).
        @return: a L{Deferred} firing with the answer's JSON value (L{None}
            for an empty answer).
        """
        if self.closed:
            return fail(self._closed_failure())
        session: Deferred[str] = (
            succeed(session_id) if session_id is not None else self.when_session()
        )
        posted = session.addCallback(lambda sid: self._post_now(build(sid), sid))
        self._posts.add(posted)

        def done(result: object) -> object:
            self._posts.discard(posted)
            if (
                isinstance(result, Failure)
                and self.closed
                and not result.check(RemoteError)
            ):
                # Cut short by terminate(), however the cut shows.
                return self._closed_failure()
            return result

        return posted.addBoth(done)

    def _post_now(self, body: Any, session_id: str) -> Deferred[Any]:
        try:
            payload = messages.dumps(body).encode("utf-8")
        except (TypeError, ValueError):
            return fail()
        headers = Headers()
        for name, value in self._headers.items():
            headers.addRawHeader(name, value)
        headers.setRawHeaders(b"content-type", [b"application/json"])
        headers.setRawHeaders(b"accept", [b"application/json"])
        headers.setRawHeaders(b"x-graphsse-session", [session_id.encode("utf-8")])
        requested = cast(
            "Deferred[IResponse]",
            self.client._http.request(
                "POST",
                self.url,
                data=BytesProducer(payload),
                headers=headers,
                allow_redirects=False,
                unbuffered=True,
                reactor=cast(Any, self.client._reactor),
            ),
        )
        return requested.addCallback(self._read_answer)

    def _read_answer(self, response: IResponse) -> Deferred[Any]:
        reader = BodyReader.read(response, self.client.max_answer)

        def parse(body: bytes) -> Any:
            code = response.code
            if not 200 <= code < 300:
                raise remote_error(code, body)
            if not body.strip():
                return None
            try:
                return json.loads(body)
            except ValueError:
                raise RemoteError(code, "bad_json", "the answer is not JSON") from None

        return reader.done.addCallback(parse)

    # Calls to the server

    def send(self, message: Any) -> Deferred[Any]:
        """
        C{POST} C{message} as it is (an object gets C{"sessionId"} unless it
        has one).

        @return: a L{Deferred} firing with the answer's JSON value, or
            L{None} for an empty answer.
        """

        def build(session_id: str) -> Any:
            if isinstance(message, dict) and "sessionId" not in message:
                return {**message, "sessionId": session_id}
            return message

        return self._post_with(build)

    def _call(self, route: str, args: Any, method: str | None) -> Deferred[Any]:
        def build(session_id: str) -> dict[str, Any]:
            return {**messages.route_call(route, args, method), "sessionId": session_id}

        return self._post_with(build)

    def post(
        self, route: str, args: Any = None, method: str | None = None
    ) -> Deferred[None]:
        """
        Run server route C{route} with C{args}; its result is dropped.

        @return: a L{Deferred} firing with L{None} once the server answered.
        """
        return self._call(route, args, method).addCallback(lambda _: None)

    def run(
        self, route: str, args: Any = None, method: str | None = None
    ) -> Deferred[Any]:
        """
        Run server route C{route} with C{args} (a list is spread into
        positional arguments).

        @return: a L{Deferred} firing with its result.
        """
        return self._call(route, args, method).addCallback(_args_of)

    def request(self, message: Any, method: str | None = None) -> Deferred[Any]:
        """
        Have the server run C{message} (C{{"route":..,"args":..}}) through
        C{runRequest} with a fresh C{callbackId}.  The result comes in the
        C{POST}'s answer, which settles the call, and again on the stream,
        where it is ignored.

        @return: a L{Deferred} firing with the result.
        """
        if method is not None and isinstance(message, dict):
            message = {**message, "method": method}
        callback_id = self.client._callback_id()
        self._requests.add(callback_id)

        def build(session_id: str) -> dict[str, Any]:
            return {
                **messages.run_request(message, self.path, callback_id, session_id),
                "sessionId": session_id,
            }

        def settled(result: object) -> object:
            self._requests.discard(callback_id)
            self._settled.append(callback_id)
            return result

        return self._post_with(build).addBoth(settled).addCallback(_args_of)

    def subscribe(
        self, route: str, callback: Callable[[Any], object], args: Any = None
    ) -> Deferred[int]:
        """
        Have C{callback} called with every output of server route C{route}.

        One server subscription per route serves every callback of this
        connection; it is made again, by itself, on each new session.

        @return: a L{Deferred} firing with the subscription's number for
            L{unsubscribe}: the server's, for the route's first callback.
        """
        if self.closed:
            return fail(self._closed_failure())
        entry = self._subscriptions.get(route)
        if entry is None:
            entry = self._subscriptions[route] = _Subscription(route, args)
            self._subscribe_on_server(entry, initial=True)
        subscribed = entry
        return entry.wait().addCallback(lambda _: subscribed.add(callback))

    def _subscribe_on_server(self, entry: _Subscription, initial: bool) -> None:
        def build(session_id: str) -> dict[str, Any]:
            return {
                "route": "subscribeSSE",
                "args": [entry.route, self.path, entry.args, None, None, session_id],
                "sessionId": session_id,
            }

        def subscribed(answer: Any) -> None:
            sub = _args_of(answer)
            if not isinstance(sub, int) or isinstance(sub, bool):
                raise RemoteError(200, "bad_message", f"not a subscription: {sub!r}")
            if self._subscriptions.get(entry.route) is not entry:
                # Unsubscribed while this was on its way.
                self._background(self._unsubscribe_on_server(entry.route, sub))
                return
            entry.server_sub = sub
            if entry.id is None:
                entry.id = sub
            entry.subscribed = True
            entry.settle(None)

        def refused(failure: Failure) -> None:
            if self._subscriptions.get(entry.route) is entry:
                del self._subscriptions[entry.route]
            if entry.waiters:
                entry.settle(failure)
            elif not initial and not (self.closed and failure.check(ClientClosed)):
                self.client._report(failure, self)

        self._post_with(build).addCallback(subscribed).addErrback(refused)

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        End subscription C{sub} to server route C{route}: one callback of
        ours (and the server's subscription with the last one), or else the
        server's subscription of that number.

        @return: a L{Deferred} firing with whether there was one.
        """
        entry = self._subscriptions.get(route)
        if entry is not None and sub in entry.callbacks:
            del entry.callbacks[sub]
            if entry.callbacks:
                return succeed(True)
            del self._subscriptions[route]
            if entry.server_sub is None:
                # Being made again: it is ended when the server answers.
                return succeed(True)
            return self._unsubscribe_on_server(route, entry.server_sub)
        return self._unsubscribe_on_server(route, sub)

    def _unsubscribe_on_server(self, route: str, sub: int) -> Deferred[bool]:
        def build(session_id: str) -> dict[str, Any]:
            return {
                "route": "unsubscribe",
                "args": [route, sub],
                "sessionId": session_id,
            }

        return self._post_with(build).addCallback(
            lambda answer: _args_of(answer) is True
        )


class GraphSSEClient:
    """
    The client side of graphscript's SSE (its C{EventSourceInfo}): routes
    the server may run, and connections to endpoints to call it back.

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
    """

    _log = Logger()

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
        """
        self._reactor = reactor if reactor is not None else default_reactor()
        self.routes: dict[str, Any] = dict(routes or {})
        self._headers = dict(headers or {})
        self._own: Connections | None = None
        stream_agent = agent
        if agent is None and http_client is None:
            self._own = Connections(self._reactor, tls_policy)
            agent = self._own.agent
            stream_agent = RedirectAgent(agent)
        self._stream_agent = stream_agent
        self._http: HTTPClient = (
            http_client if http_client is not None else HTTPClient(cast(IAgent, agent))
        )
        self.idle_timeout = idle_timeout
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.max_answer = max_answer
        self.connections: list[Connection] = []
        self.on_error: Callable[[Failure, Connection | None], object] | None = None
        self.on_session: Callable[[Connection], object] | None = None
        self.closed = False
        self._handlers: Handlers[[Any, ServerSentEvent, Connection]] = Handlers(
            self._log
        )
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
    ) -> Deferred[Connection]:
        """
        Open a stream to the endpoint at C{url}.

        @param headers: extra headers for this connection's requests.
        @param last_event_id: resume after this event id.
        @return: a L{Deferred} firing with the L{Connection} once the server
            has sent its session id; failing with L{RemoteError} if the
            server refuses the stream for good.  It keeps trying through
            network errors: add a timeout if you want one (cancelling it
            terminates the connection).
        """
        if self.closed:
            return fail(ClientClosed("this client was terminated"))
        merged = {**self._headers, **(headers or {})}
        source = EventSource(
            url,
            self._reactor,
            headers=merged,
            last_event_id=last_event_id,
            agent=self._stream_agent,
            http_client=self._http if self._stream_agent is None else None,
            idle_timeout=self.idle_timeout,
            max_backoff=self.max_backoff,
            jitter=self.jitter,
            start=False,
        )
        connection = Connection(self, url, source, merged)
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
        source.start()
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
        if self.on_session is not None:
            try:
                self.on_session(connection)
            except Exception:
                self._log.failure("on_session failed")

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
        try:
            self.on_error(failure, connection)
        except Exception:
            self._log.failure("on_error failed")

    def _next_sub(self) -> int:
        return next(self._subs)

    def _callback_id(self) -> str:
        return f"py.{next(self._calls)}.{secrets.token_urlsafe(6)}"
