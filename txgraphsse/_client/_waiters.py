# -*- test-case-name: tests.test_client -*-
"""
L{Waiters}: the L{Deferred}s of everyone waiting for one thing to happen
(a stream to open, a session id, a subscription, the last connection to
close), fired together when it does.

This module owns only that list and its cancellation.  It never decides
when the thing happens, nor what a caller that comes after it gets (each
holder answers those at once, with
L{succeed <twisted.internet.defer.succeed>} or
L{fail <twisted.internet.defer.fail>}); it knows nothing of HTTP, SSE or
graphscript.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["Waiters"]

_T = TypeVar("_T")


class Waiters(Generic[_T]):
    """
    Cancellable L{Deferred}s waiting for one value.

    Each L{wait} gives a new L{Deferred}; cancelling it forgets it.  L{fire}
    and L{fail} settle every one still waiting, once, in the order they
    came, and forget them all: a L{wait} after that waits for the next time.
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[_T]] = []

    def __len__(self) -> int:
        """
        How many are waiting.
        """
        return len(self._waiting)

    def wait(self) -> Deferred[_T]:
        """
        @return: a L{Deferred} that L{fire} or L{fail} settles; cancelling it
            takes it off the list.
        """
        waiter: Deferred[_T] = Deferred(self._cancel)
        self._waiting.append(waiter)
        return waiter

    def _cancel(self, waiter: Deferred[_T]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)

    def fire(self, value: _T) -> None:
        """
        Give C{value} to every waiter.
        """
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(value)

    def fail(self, failure: Failure) -> None:
        """
        Fail every waiter with C{failure}.
        """
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.errback(failure)
