# -*- test-case-name: tests.test_client -*-
"""
L{Connection}: one stream of a L{GraphSSEClient} to one endpoint, its
session, and the calls made through it.

This module owns what a connection does with the envelopes of PROTOCOL.md
on its own behalf: it learns its session id from C{setId}, sorts what the
stream brings (the server's calls, the copies of its own requests'
answers, its subscriptions' updates, application events), makes the calls
of section 2 by C{POST} and settles them, and stops for good.  Answering
the server's calls is C{_serving}'s, the subscriptions to server routes are
C{_subscriptions}', one C{POST} on the wire is C{_post}'s; the stream itself
is L{EventSource}'s.  What it needs of its client it names in L{_Client}.
It knows nothing of the server.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import _messages as messages
from .._parser import ServerSentEvent
from ._batch import Batcher
from ._http import RemoteError
from ._post import args_of
from ._serving import Serving
from ._source import ClientClosed, EventSource
from ._subscriptions import Subscriptions
from ._tokens import GetToken, TokenKeeper
from ._waiters import Waiters

__all__ = ["Connection"]

#: Request ids settled lately, so that their copy on the stream is known.
_SETTLED_MEMORY = 256


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Client(Protocol):
    """
    What a connection needs of its client (the L{GraphSSEClient}).
    """

    @property
    def routes(self) -> Mapping[str, Any]:
        """
        The client's routes, by name.
        """

    @property
    def max_answer(self) -> int:
        """
        The most bytes of a C{POST} answer to read.
        """

    @property
    def _http(self) -> HTTPClient:
        """
        The treq client the C{POST}s go through.
        """

    @property
    def _reactor(self) -> IReactorTime:
        """
        The reactor.
        """

    def _run(self, name: str, args: Any, method: str | None) -> Deferred[Any]:
        """
        Run route C{name} here, its output going to every subscriber.
        """

    def _next_sub(self) -> int:
        """
        A new number for a subscription the server makes.
        """

    def _callback_id(self) -> str:
        """
        A new C{callbackId} for a request.
        """

    def _deliver(
        self, event_type: str, data: Any, event: ServerSentEvent, connection: Connection
    ) -> None:
        """
        Hand an application event to the client's handlers.
        """

    def _session_opened(self, connection: Connection) -> None:
        """
        C{connection} got a session.
        """

    def _report(self, failure: Failure, connection: Connection | None) -> None:
        """
        Tell of C{failure}, which nobody waits for.
        """

    def _forget(self, connection: Connection) -> None:
        """
        C{connection} stopped for good.
        """


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
        client: _Client,
        url: str,
        source: EventSource,
        headers: Mapping[str, str],
        get_token: GetToken | None = None,
    ) -> None:
        """
        @param get_token: where its tokens come from, if it has them (see
            L{TokenKeeper}).
        """
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
        self._subscriptions = Subscriptions(self, self._log)
        self._serving = Serving(self, client, self._log)
        self._posts: set[Deferred[Any]] = set()
        self._batcher = Batcher(client, url, headers)
        self._event_types = {"message"}
        source.on_error = self._stream_error
        source.on_close = self._stream_closed
        source.add_handler("message", self._on_message)
        self.tokens: TokenKeeper | None = None
        if get_token is not None:
            self.tokens = TokenKeeper(
                client._reactor, get_token, self._set_token, self._refresh_token
            )
            source.add_handler("expired", self._expired)
            source.before_reconnect = self._fresh_token

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
        self._serving.forget()
        self._log.debug(
            "Session {session} on {url}", session=session_id[:8], url=self.url
        )
        self._session_waiters.fire(session_id)
        if again:
            self._subscriptions.renew()
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

    def _set_token(self, token: str) -> None:
        value = f"Bearer {token}"
        self.source.set_header("Authorization", value)
        self._batcher.set_header("Authorization", value)

    def _refresh_token(self) -> Deferred[Any] | None:
        """
        Have the session carry on under the token now in the headers.
        """
        if self.session_id is None or self.closed:
            return None
        return self._post_with(
            lambda sid: {"route": "refreshToken", "sessionId": sid}, self.session_id
        )

    def _expired(self, event: ServerSentEvent) -> None:
        # The server ended the stream at the token's expiry: the reconnect
        # takes a fresh one (and its Last-Event-ID).
        assert self.tokens is not None
        self.tokens.stale = True

    def _fresh_token(self) -> Deferred[None]:
        assert self.tokens is not None

        def failed(failure: Failure) -> None:
            self._report(failure)

        return self.tokens.fresh().addErrback(failed)

    def _shutdown(self, reason: Failure | None) -> None:
        if self.closed:
            return
        if self.tokens is not None:
            self.tokens.stop()
        self.closed = True
        self.session_id = None
        self.client._forget(self)
        failure = reason if reason is not None else self._closed_failure()
        self._session_waiters.fail(failure)
        for deferred in list(self._posts) + self._serving.in_flight():
            deferred.cancel()
        self._subscriptions.end(failure)
        self._serving.forget()

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
                self._serving.answer(data.get("args"))
                return
            if isinstance(route, str) and route in self.client.routes:
                method = data.get("method")
                self._serving.posted(route, data.get("args"), method)
                return
            if route is None and "callbackId" in data:
                self._settle(data["callbackId"], data.get("args"))
                return
        self.client._deliver("message", data, event, self)

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
        if not self._subscriptions.deliver(callback_id, args):
            self._log.debug(
                "Nothing waits for {callback} on {url}",
                callback=callback_id,
                url=self.url,
            )

    def _emit(self, route: str, output: Any) -> None:
        """
        Route C{route} ran here: give its output to the server's
        subscriptions to it, if any.
        """
        self._serving.emit(route, output)

    def _report(self, failure: Failure) -> None:
        self.client._report(failure, self)

    def _background(self, work: Deferred[Any]) -> None:
        def report(failure: Failure) -> None:
            if self.closed and failure.check(CancelledError, ClientClosed):
                return
            self._report(failure)

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
        posted = session.addCallback(lambda sid: self._batcher.post(build(sid), sid))
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
        return self._call(route, args, method).addCallback(args_of)

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

        return self._post_with(build).addBoth(settled).addCallback(args_of)

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
        return self._subscriptions.subscribe(route, callback, args)

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        End subscription C{sub} to server route C{route}: one callback of
        ours (and the server's subscription with the last one), or else the
        server's subscription of that number.

        @return: a L{Deferred} firing with whether there was one.
        """
        return self._subscriptions.unsubscribe(route, sub)
