# -*- test-case-name: tests.test_backchannel,tests.test_leaks -*-
"""
Sessions that observe the server's routes: a client's C{subscribeSSE}
makes every output of a route an event on its stream.

L{RouteObservers} owns which session subscribed to which route, so that a
session may end only its own subscriptions and its closing ends them all.
It reaches the graph for the subscriptions themselves and the session only
by id, through a C{send} function; it knows nothing of HTTP or the wire
beyond the reply envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _messages as messages
from ._graph import RouteGraph
from ._limits import Limits
from ._messages import ProtocolError

__all__ = ["RouteObservers"]

#: Sends C{message} to one session: C{send(message, session_id=...)}.
_Send = Callable[..., int]


class RouteObservers:
    """
    The server-route subscriptions of one endpoint's sessions.
    """

    def __init__(self, graph: RouteGraph, limits: Limits, send: _Send) -> None:
        self._graph = graph
        self._limits = limits
        self._send = send
        # session -> [(route, sub)]
        self._owned: dict[str, list[tuple[str, int]]] = {}

    def subscribe(self, session_id: str, route: str) -> int:
        """
        Push every output of server route C{route} to session C{session_id}.

        @raise ProtocolError: the session has as many as it may.
        """
        limit = self._limits.max_subscriptions
        owned = self._owned.get(session_id, [])
        if limit is not None and len(owned) >= limit:
            raise ProtocolError(429, "rate_limited", f"at most {limit} subscriptions")
        send = self._send

        def forward(output: Any) -> None:
            send(messages.reply(output, route), session_id=session_id)

        sub = self._graph.subscribe(route, forward)
        self._owned.setdefault(session_id, []).append((route, sub))
        return sub

    def unsubscribe(self, session_id: str, route: str, sub: int) -> bool:
        """
        End C{session_id}'s subscription C{sub}; only its own.
        """
        owned = self._owned.get(session_id, [])
        if (route, sub) not in owned:
            return False
        owned.remove((route, sub))
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
