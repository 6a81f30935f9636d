# -*- test-case-name: tests.test_calls,tests.test_backchannel -*-
"""
Calls from the server to its clients, one session at a time: C{request},
C{run}, C{subscribe} and C{unsubscribe} on a client's routes, and the
updates of client routes the server subscribed to.

L{ClientCalls} owns which client routes the server subscribed to, by
session, and turns a call into a C{runRequest} envelope pushed to the
session with a pending entry in the endpoint's L{CallTable}.  It reaches
sessions only by id, through the endpoint's C{send}; it never touches a
request, a channel or the wire beyond the envelopes of L{_messages}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from . import _messages as messages
from ._broker import IBroker
from ._calls import CallTable, SessionClosed
from ._limits import Limits

__all__ = ["ClientCalls", "TooManyCalls"]


class TooManyCalls(Exception):
    """
    A session has as many server-to-client calls waiting as its endpoint
    allows (C{Limits.max_pending_calls}).
    """


class _Session(Protocol):
    @property
    def is_connected(self) -> bool: ...


class _Endpoint(Protocol):
    """
    What the calls need of their endpoint.
    """

    path: str
    broker: IBroker
    limits: Limits
    calls: CallTable

    @property
    def sessions(self) -> Mapping[str, _Session]: ...

    def send(
        self, message: Any, event: str | None = None, session_id: str | None = None
    ) -> int: ...


class ClientCalls:
    """
    The server-to-client calls of one endpoint.
    """

    _log = Logger()

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        # Client-side routes the server subscribed to, by (session, route).
        self._subscriptions: dict[tuple[str, str], Callable[[Any], object]] = {}
        # The same, by session: closing a session touches only its own.
        self._routes: dict[str, set[str]] = {}

    def request(
        self,
        session_id: str,
        message: Any,
        method: str | None,
        timeout: float | None,
    ) -> Deferred[Any]:
        """
        Ask session C{session_id} to run C{message}; fire with its answer.
        """
        endpoint = self._endpoint
        sessions = endpoint.sessions
        if session_id not in sessions and not endpoint.broker.clustered:
            return fail(SessionClosed(f"no open session {session_id[:6]}…"))
        local = sessions.get(session_id)
        if local is not None and not local.is_connected:
            # Aborted or lost, not yet reported: the envelope would be dropped.
            return fail(SessionClosed(f"session {session_id[:6]}… is closing"))
        limit = endpoint.limits.max_pending_calls
        if limit is not None and endpoint.calls.pending_for(session_id) >= limit:
            return fail(TooManyCalls(f"{limit} calls are waiting on that session"))
        if method is not None and isinstance(message, dict):
            message = {**message, "method": method}
        callback_id, deferred = endpoint.calls.open(session_id, timeout)
        sent = endpoint.send(
            messages.run_request(message, endpoint.path, callback_id, session_id),
            session_id=session_id,
        )
        if not sent:
            endpoint.calls.fail_session(session_id, "is not open anywhere")
        return deferred

    def subscribe(
        self,
        session_id: str,
        route: str,
        callback: Callable[[Any], object],
        args: Any,
    ) -> Deferred[int]:
        """
        Have C{callback} called with every output of the client's route
        C{route}; fire with the client's subscription number.
        """
        endpoint = self._endpoint
        message = messages.route_call(
            "subscribeSSE", [route, endpoint.path, args, None, None, session_id]
        )
        deferred = self.request(session_id, message, None, None)

        def subscribed(sub: Any) -> Any:
            # On a cluster the session may be another node's: its updates
            # come through settle_forwarded, and remote_session_closed ends
            # the subscription.
            if session_id in endpoint.sessions or endpoint.broker.clustered:
                self._subscriptions[(session_id, route)] = callback
                self._routes.setdefault(session_id, set()).add(route)
            return sub

        return deferred.addCallback(subscribed)

    def unsubscribe(self, session_id: str, route: str, sub: int) -> Deferred[bool]:
        """
        End the client-side subscription C{sub} to C{route}.
        """
        self._subscriptions.pop((session_id, route), None)
        routes = self._routes.get(session_id)
        if routes is not None:
            routes.discard(route)
            if not routes:
                del self._routes[session_id]
        deferred = self.request(
            session_id, messages.route_call("unsubscribe", [route, sub]), None, None
        )
        return deferred.addCallback(bool)

    def deliver_update(self, session_id: str, route: str, args: Any) -> bool:
        """
        A client's update of a route the server subscribed to on it.

        @return: whether the server had subscribed to it.
        """
        callback = self._subscriptions.get((session_id, route))
        if callback is None:
            return False
        try:
            callback(args)
        except Exception:
            self._log.failure("Subscriber of client route {route} failed", route=route)
        return True

    def forget(self, session_id: str) -> None:
        """
        Drop what the server subscribed to on a session that has closed.
        """
        for route in self._routes.pop(session_id, ()):
            self._subscriptions.pop((session_id, route), None)
