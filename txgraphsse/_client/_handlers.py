# -*- test-case-name: tests.test_client -*-
"""
L{Handlers}: callbacks by event name, as an L{EventSource} and a
L{GraphSSEClient} both keep them; and L{call_logged}, how the client calls
any callback a caller gave it.

This module owns that table and how it is called: in the order the
handlers were added, each one's exception logged without stopping the
others, as every caller's callback is (C{on_open}, C{on_error}, a
subscriber...).  What is passed to a handler, and when, is its owner's; it
knows nothing of HTTP, SSE or graphscript.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, ParamSpec

from twisted.logger import Logger

__all__ = ["Handlers", "call_logged"]

_P = ParamSpec("_P")


def call_logged(
    log: Logger,
    failed: str,
    fields: Mapping[str, Any],
    callback: Callable[_P, object] | None,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> None:
    """
    Call C{callback}, a caller's, if there is one; if it raises, log the
    failure and go on.

    @param log: its owner's logger, so that the failure is logged as its
        owner's.
    @param failed: the log message's format, of C{fields}.
    """
    if callback is None:
        return
    try:
        callback(*args, **kwargs)
    except Exception:
        log.failure(failed, **fields)


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
            call_logged(
                self._log,
                "Handler {handler} of {event} events failed",
                {"handler": handler, "event": event_type},
                handler,
                *args,
                **kwargs,
            )
