# -*- test-case-name: tests.test_backchannel,tests.test_leaks -*-
"""
Sessions that observe the server's routes: a client's C{subscribeSSE}
makes every output of a route an event on its stream.

L{RouteObservers} owns which session subscribed to which route, so that a
session may end only its own subscriptions and its closing ends them all,
and whose calls each subscription sees: only its own principal's (and the
server's own), unless the route is C{subscribable} or the authorizer's
C{can_subscribe(principal, route)} lets it see everyone's.  A session
subscribes to a route once: asking again gives the same subscription.  It
reaches the graph for the subscriptions themselves and the session only by
id, through a C{send} function; it knows nothing of HTTP or the wire beyond
the reply envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _messages as messages
from ._auth import principal_key
from ._graph import EVERYONE, RouteGraph
from ._limits import Limits
from ._messages import ProtocolError

__all__ = ["RouteObservers"]

#: Sends C{message} to one session: C{send(message, session_id=...)}.
_Send = Callable[..., int]


class RouteObservers:
    """
    The server-route subscriptions of one endpoint's sessions.
    """

    def __init__(
        self,
        graph: RouteGraph,
        limits: Limits,
        send: _Send,
        authorizer: object = None,
    ) -> None:
        """
        @param authorizer: the endpoint's; its C{can_subscribe(principal,
            route)}, if it has one, says whether a principal's subscription
            to a route that is not C{subscribable} sees everyone's calls.
        """
        self._graph = graph
        self._limits = limits
        self._send = send
        self._may_see_all: Callable[[Any, str], bool] | None = getattr(
            authorizer, "can_subscribe", None
        )
        # session -> [(route, sub)]
        self._owned: dict[str, list[tuple[str, int]]] = {}

    def subscribe(self, session_id: str, route: str, principal: Any = None) -> int:
        """
        Push the outputs of server route C{route} that C{principal} may see
        to session C{session_id}: those of its own calls (its principal's,
        or the session's own if it is anonymous) and of the server's, or
        of every call where the route or the authorizer allows.

        @return: the subscription's number; the same number if the session
            already has a subscription to C{route}.
        @raise ProtocolError: the session has as many as it may.
        """
        owned = self._owned.get(session_id, [])
        for name, sub in owned:
            if name == route:
                return sub
        limit = self._limits.max_subscriptions
        if limit is not None and len(owned) >= limit:
            raise ProtocolError(429, "rate_limited", f"at most {limit} subscriptions")
        send = self._send

        def forward(output: Any) -> None:
            send(messages.reply(output, route), session_id=session_id)

        sub = self._graph.subscribe(
            route, forward, self._owner(session_id, route, principal)
        )
        self._owned.setdefault(session_id, []).append((route, sub))
        return sub

    def _owner(self, session_id: str, route: str, principal: Any) -> Any:
        if self._graph.routes[route].subscribable:
            return EVERYONE
        may_see_all = self._may_see_all
        if may_see_all is not None and may_see_all(principal, route):
            return EVERYONE
        if principal is None:
            return "session:" + session_id
        return principal_key(principal)

    def unsubscribe(self, session_id: str, route: str, sub: int) -> bool:
        """
        End C{session_id}'s subscription C{sub}; only its own.
        """
        owned = self._owned.get(session_id, [])
        if (route, sub) not in owned:
            return False
        owned.remove((route, sub))
        if not owned:
            del self._owned[session_id]
        return self._graph.unsubscribe(route, sub)

    def of(self, session_id: str) -> list[tuple[str, int]]:
        """
        The C{(route, sub)} subscriptions of a session.
        """
        return list(self._owned.get(session_id, ()))

    def forget(self, session_id: str) -> None:
        """
        End every subscription of a session that has closed.
        """
        for route, sub in self._owned.pop(session_id, ()):
            self._graph.unsubscribe(route, sub)
