# -*- test-case-name: tests.test_calls -*-
"""
The table of pending server-to-client calls.

A call is a C{callbackId}, the session it went to and the L{Deferred} its
caller waits on.  This module owns their life: open, settle (only from the
session the call went to), cancel, time out, and fail every call of a session
that closed.  Whatever the outcome, the table forgets the call.  It knows
nothing of HTTP or SSE.
"""

from __future__ import annotations

import secrets
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ._stats import Histogram

__all__ = ["CallTable", "RemoteCallError", "RouteError", "SessionClosed"]


class SessionClosed(Exception):
    """
    The session a call went to closed before it answered.
    """


class RemoteCallError(Exception):
    """
    The client answered a call with an error (its route failed, or it has
    no such route).

    @ivar code: the client's machine word (C{route_failed}, C{no_route}).
    @ivar message: the client's one line for a person.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RouteError(RemoteCallError):
    """
    An error a server route raises on purpose, for its caller to read: the
    answer carries its C{code} and C{message} as they are, where any other
    exception's text is hidden unless the endpoint has C{expose_errors}.
    """

    def __init__(self, message: str, code: str = "route_failed") -> None:
        super().__init__(code, message)


@define
class _Pending:
    session_id: str
    deferred: Deferred[Any]
    opened: float


class CallTable:
    """
    Pending calls, by C{callbackId} and by session.

    @ivar default_timeout: seconds a call waits for its answer unless the
        caller says otherwise; L{None} or 0 for no limit.
    """

    def __init__(
        self,
        clock: IReactorTime,
        default_timeout: float | None = 30.0,
        prefix: str = "",
    ) -> None:
        self._clock = clock
        self.default_timeout = default_timeout
        self._prefix = prefix
        self._pending: dict[str, _Pending] = {}
        # The deadlines of calls that must time out, in the order they were
        # opened, which is the order they fall due while each deadline is no
        # earlier than the one before (one timeout for all, the usual case):
        # one timer, for the first, serves them all.  A call that would fall
        # due earlier than the last has a timer of its own.
        self._deadlines: dict[str, tuple[float, float]] = {}
        self._last_deadline = 0.0
        self._timer: IDelayedCall | None = None
        #: How long answered calls took.
        self.latency = Histogram()
        self._by_session: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def open(
        self, session_id: str, timeout: float | None = None
    ) -> tuple[str, Deferred[Any]]:
        """
        Open a call to C{session_id}.

        @param timeout: seconds to wait for the answer; L{None} takes the
            table's default.
        @return: the call's unguessable C{callbackId} and the L{Deferred} that
            fires with the answer, or fails with
            L{twisted.internet.defer.TimeoutError}, L{SessionClosed} or
            L{twisted.internet.defer.CancelledError}.
        """
        callback_id = self._prefix + secrets.token_urlsafe(16)

        def cancel(_: Deferred[Any]) -> None:
            self._forget(callback_id)

        deferred: Deferred[Any] = Deferred(cancel)
        now = self._clock.seconds()
        self._pending[callback_id] = _Pending(session_id, deferred, now)
        self._by_session.setdefault(session_id, set()).add(callback_id)
        limit = self.default_timeout if timeout is None else timeout
        if limit:
            deadline = now + limit
            if deadline >= self._last_deadline:
                self._last_deadline = deadline
                self._deadlines[callback_id] = (deadline, limit)
                if self._timer is None:
                    self._timer = self._clock.callLater(limit, self._expire)
            else:
                deferred.addTimeout(limit, self._clock)
        return callback_id, deferred

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expire(self) -> None:
        """
        Fail the calls that have fallen due with L{TimeoutError}, as
        C{Deferred.addTimeout} does; wait for the next.
        """
        self._timer = None
        now = self._clock.seconds()
        deadlines = self._deadlines
        for callback_id, (deadline, limit) in list(deadlines.items()):
            if deadline > now:
                if self._timer is None:
                    self._timer = self._clock.callLater(deadline - now, self._expire)
                return
            pending = self._forget(callback_id)
            if pending is not None:
                pending.deferred.errback(Failure(TimeoutError(limit, "Deferred")))

    def is_pending(self, callback_id: str, session_id: str) -> bool:
        pending = self._pending.get(callback_id)
        return pending is not None and pending.session_id == session_id

    def settle(self, callback_id: str, session_id: str, result: Any) -> bool:
        """
        Fire the call C{callback_id} with C{result}, if it is pending for
        C{session_id}; a reply from any other session changes nothing.

        @return: whether it was.
        """
        if not self.is_pending(callback_id, session_id):
            return False
        pending = self._forget(callback_id)
        assert pending is not None
        self.latency.observe(self._clock.seconds() - pending.opened)
        pending.deferred.callback(result)
        return True

    def refuse(self, callback_id: str, session_id: str, error: Exception) -> bool:
        """
        Fail the call C{callback_id} with C{error}, if it is pending for
        C{session_id}.

        @return: whether it was.
        """
        if not self.is_pending(callback_id, session_id):
            return False
        pending = self._forget(callback_id)
        assert pending is not None
        self.latency.observe(self._clock.seconds() - pending.opened)
        pending.deferred.errback(Failure(error))
        return True

    def fail_session(self, session_id: str, reason: str) -> int:
        """
        Fail every pending call to C{session_id} with L{SessionClosed}.

        @return: how many there were.
        """
        ids = self._by_session.pop(session_id, set())
        for callback_id in ids:
            pending = self._forget(callback_id)
            if pending is not None:
                pending.deferred.errback(
                    Failure(SessionClosed(f"session {session_id[:6]}… {reason}"))
                )
        return len(ids)

    def pending_for(self, session_id: str) -> int:
        return len(self._by_session.get(session_id, ()))

    def _forget(self, callback_id: str) -> _Pending | None:
        deadlines = self._deadlines
        if deadlines.pop(callback_id, None) is not None and not deadlines:
            self._stop_timer()
        pending = self._pending.pop(callback_id, None)
        if pending is not None:
            ids = self._by_session.get(pending.session_id)
            if ids is not None:
                ids.discard(callback_id)
                if not ids:
                    del self._by_session[pending.session_id]
        return pending
