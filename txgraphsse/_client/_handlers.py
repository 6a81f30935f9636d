# -*- test-case-name: tests.test_client -*-
"""
L{Handlers}: callbacks by event name, as an L{EventSource} and a
L{GraphSSEClient} both keep them.

This module owns that table and how it is called: in the order the
handlers were added, each one's exception logged without stopping the
others.  What is passed to a handler, and when, is its owner's; it knows
nothing of HTTP, SSE or graphscript.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec

from twisted.logger import Logger

__all__ = ["Handlers"]

_P = ParamSpec("_P")


class Handlers(Generic[_P]):
    """
    Handlers by event name, each called with the same arguments.
    """

    def __init__(self, log: Logger) -> None:
        """
        @param log: where a failing handler is logged (its owner's logger,
            so that the failure is logged as its owner's).
        """
        self._log = log
        self._by_type: dict[str, list[Callable[_P, object]]] = {}

    def __iter__(self) -> Iterator[str]:
        """
        The event names that have handlers.
        """
        return iter(list(self._by_type))

    def add(self, event_type: str, handler: Callable[_P, object]) -> None:
        """
        Call C{handler} for every event named C{event_type}.
        """
        self._by_type.setdefault(event_type, []).append(handler)

    def remove(self, event_type: str, handler: Callable[_P, object]) -> bool:
        """
        Stop calling C{handler} for C{event_type}.

        @return: whether it was there.
        """
        handlers = self._by_type.get(event_type, [])
        if handler not in handlers:
            return False
        handlers.remove(handler)
        if not handlers:
            del self._by_type[event_type]
        return True

    def dispatch(self, event_type: str, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """
        Call every handler of C{event_type} (those there when it starts),
        logging any that raises.
        """
        for handler in list(self._by_type.get(event_type, ())):
            try:
                handler(*args, **kwargs)
            except Exception:
                self._log.failure(
                    "Handler {handler} of {event} events failed",
                    handler=handler,
                    event=event_type,
                )
