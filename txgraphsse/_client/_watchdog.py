# -*- test-case-name: tests.test_client -*-
"""
L{Watchdog}: a deadline that every sign of life pushes back, for a stream
that must not go quiet.

This module owns that one timer.  What a sign of life is, and what to do
when none came (drop the stream, reconnect), are its owner's; it knows
nothing of HTTP, SSE or graphscript.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Watchdog"]


class Watchdog:
    """
    Calls C{on_idle} once nothing has called L{pet} for the timeout that
    the last L{pet} named.
    """

    def __init__(self, clock: IReactorTime, on_idle: Callable[[], object]) -> None:
        """
        @param clock: whose C{callLater} keeps the deadline.
        @param on_idle: called with no argument when the deadline passes.
        """
        self._clock = clock
        self._on_idle = on_idle
        self._call: IDelayedCall | None = None

    def pet(self, timeout: float | None) -> None:
        """
        Start the deadline, or push it back, to C{timeout} seconds from now
        (L{None} or 0: leave it as it is).
        """
        if not timeout:
            return
        if self._call is not None and self._call.active():
            self._call.reset(timeout)
        else:
            self._call = self._clock.callLater(timeout, self._expired)

    def stop(self) -> None:
        """
        Forget the deadline, if there is one.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _expired(self) -> None:
        self._call = None
        self._on_idle()
