# -*- test-case-name: tests.test_client -*-
"""
A connection's subscriptions to the server's routes: one on the server per
route, shared by every local callback, made again on each new session, and
the updates the stream brings handed to their callbacks.

This module owns that book.  Its C{POST}s go through the connection (the
L{_Link} protocol), which also says when a session begins and when it all
ends; it never touches the stream, the session or the client's own routes,
and knows nothing of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from attrs import Factory, define
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._handlers import call_logged
from ._http import RemoteError
from ._post import Link, args_of
from ._source import ClientClosed
from ._waiters import Waiters

__all__ = ["Subscriptions"]


class _Link(Link, Protocol):
    """
    What the subscriptions need of their connection (the L{Connection})
    besides posting through it.
    """

    @property
    def path(self) -> str:
        """
        The endpoint's path, as quoted in requests.
        """

    def _report(self, failure: Failure) -> None:
        """
        Tell the client of C{failure}, which nobody waits for.
        """


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


class Subscriptions:
    """
    One connection's subscriptions to server routes, by route.
    """

    def __init__(self, link: _Link, log: Logger) -> None:
        """
        @param link: the connection they are made on.
        @param log: where a failing callback is logged (the connection's
            logger).
        """
        self._link = link
        self._log = log
        self._entries: dict[str, _Subscription] = {}

    def subscribe(
        self, route: str, callback: Callable[[Any], object], args: Any
    ) -> Deferred[int]:
        """
        See L{Connection.subscribe}.
        """
        entry = self._entries.get(route)
        if entry is None:
            entry = self._entries[route] = _Subscription(route, args)
            self._subscribe_on_server(entry, initial=True)
        subscribed = entry
        return entry.wait().addCallback(lambda _: subscribed.add(callback))

    def _subscribe_on_server(self, entry: _Subscription, initial: bool) -> None:
        link = self._link

        def build(session_id: str) -> dict[str, Any]:
            return {
                "route": "subscribeSSE",
                "args": [entry.route, link.path, entry.args, None, None, session_id],
                "sessionId": session_id,
            }

        def subscribed(answer: Any) -> None:
            sub = args_of(answer)
            if not isinstance(sub, int) or isinstance(sub, bool):
                raise RemoteError(200, "bad_message", f"not a subscription: {sub!r}")
            if self._entries.get(entry.route) is not entry:
                # Unsubscribed while this was on its way.
                link._background(self._unsubscribe_on_server(entry.route, sub))
                return
            entry.server_sub = sub
            if entry.id is None:
                entry.id = sub
            entry.subscribed = True
            entry.settle(None)

        def refused(failure: Failure) -> None:
            if self._entries.get(entry.route) is entry:
                del self._entries[entry.route]
            if entry.waiters:
                entry.settle(failure)
            elif not initial and not (link.closed and failure.check(ClientClosed)):
                link._report(failure)

        link._post_with(build).addCallback(subscribed).addErrback(refused)

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        See L{Connection.unsubscribe}.
        """
        entry = self._entries.get(route)
        if entry is not None and sub in entry.callbacks:
            del entry.callbacks[sub]
            if entry.callbacks:
                return succeed(True)
            del self._entries[route]
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

        return self._link._post_with(build).addCallback(
            lambda answer: args_of(answer) is True
        )

    def deliver(self, callback_id: str, args: Any) -> bool:
        """
        An update of the subscription to route C{callback_id}: give C{args}
        to each of its callbacks.

        @return: whether there is such a subscription.
        """
        entry = self._entries.get(callback_id)
        if entry is None:
            return False
        for callback in list(entry.callbacks.values()):
            call_logged(
                self._log,
                "Subscriber of server route {route} failed",
                {"route": callback_id},
                callback,
                args,
            )
        return True

    def renew(self) -> None:
        """
        A new session began: make those already made again on it (those
        still being made wait for it by themselves).
        """
        for entry in list(self._entries.values()):
            if entry.subscribed:
                entry.server_sub = None
                self._subscribe_on_server(entry, initial=False)

    def end(self, failure: Failure) -> None:
        """
        The connection stopped for good: forget every subscription, failing
        those still being made with C{failure}.
        """
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            entry.settle(failure)
