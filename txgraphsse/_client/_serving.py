# -*- test-case-name: tests.test_client -*-
"""
Answering the server's calls on one connection: routes the server posts
(run, answer nothing), its C{runRequest}s (run, C{POST} the result back),
the subscriptions it makes to the client's routes, and the updates they get
whenever such a route runs, in the order it made them.

This module owns what the server asked of this client and is still owed.
Running a route is the client's (the L{_Local} protocol) and every C{POST}
goes through the connection (the L{_Link} protocol); it never touches the
stream, the session or the client's own calls to the server, and knows
nothing of the server's modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    fail,
    maybeDeferred,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import _messages as messages
from ._http import RemoteError
from ._post import Link
from ._routes import UnknownRoute, error_of

__all__ = ["Serving"]


class _Link(Link, Protocol):
    """
    What serving needs of its connection (the L{Connection}) besides
    posting through it.
    """

    @property
    def url(self) -> str:
        """
        The endpoint's URL.
        """

    @property
    def session_id(self) -> str | None:
        """
        The current session id, if there is one.
        """


class _Local(Protocol):
    """
    What serving needs of the client (the L{GraphSSEClient}): its routes.
    """

    @property
    def routes(self) -> Mapping[str, Any]:
        """
        The client's routes, by name.
        """

    def _run(self, name: str, args: Any, method: str | None) -> Deferred[Any]:
        """
        Run route C{name} here, its output going to every subscriber.
        """

    def _next_sub(self) -> int:
        """
        A new number for a subscription the server makes.
        """


class Serving:
    """
    The server's calls to the client on one connection.
    """

    def __init__(self, link: _Link, local: _Local, log: Logger) -> None:
        """
        @param link: the connection the calls came on.
        @param local: the client whose routes run.
        @param log: the connection's logger, which failures are logged on.
        """
        self._link = link
        self._local = local
        self._log = log
        self._served: dict[str, set[int]] = {}
        # One update of a route at a time, so that they arrive in order.
        self._updating: dict[str, DeferredLock] = {}
        self._tasks: set[Deferred[Any]] = set()

    def in_flight(self) -> list[Deferred[Any]]:
        """
        The routes running for the server now, to cancel.
        """
        return list(self._tasks)

    def forget(self) -> None:
        """
        The session ended: so did the server's subscriptions to our routes.
        """
        self._served.clear()

    def posted(self, route: str, args: Any, method: Any) -> None:
        """
        The server posted C{route}: run it, answer nothing.
        """
        work = self._local._run(
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

        self._link._background(work.addErrback(failed))

    def answer(self, request: Any) -> None:
        """
        The server's request C{[message, path, callbackId, sessionId]}: run
        C{message} and C{POST} the result back, quoting C{callbackId}.
        """
        if not isinstance(request, list) or len(request) < 3:
            self._log.warn(
                "A runRequest without [message, path, callbackId] on {url}",
                url=self._link.url,
            )
            return
        message, callback_id = request[0], request[2]
        session_id = request[3] if len(request) > 3 else None
        if not isinstance(session_id, str) or not session_id:
            session_id = self._link.session_id
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
                work = self._local._run(
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
        self._link._background(
            answered.addCallback(
                lambda body: self._link._post_with(
                    lambda _: body, session_id=session_id
                )
            )
        )

    def _serve(self, args: Any) -> int:
        """
        The server subscribes to our route C{args[0]}.
        """
        route = args[0] if isinstance(args, list) and args else None
        if not isinstance(route, str) or route not in self._local.routes:
            raise UnknownRoute(f"no route {route!r} here")
        sub = self._local._next_sub()
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

    def emit(self, route: str, output: Any) -> None:
        """
        Route C{route} ran here: give its output to the server's
        subscriptions to it, if any.
        """
        session_id = self._link.session_id
        if self._link.closed or session_id is None or not self._served.get(route):
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

        posted = lock.run(
            self._link._post_with, lambda _: update, session_id=session_id
        )
        self._link._background(posted.addErrback(gone).addBoth(idle))

    def _track(self, work: Deferred[Any]) -> None:
        self._tasks.add(work)

        def done(result: object) -> object:
            self._tasks.discard(work)
            return result

        work.addBoth(done)
