# -*- test-case-name: tests.test_internals -*-
"""
A L{Logger} for the lines logged once per stream or per request.

Twisted's C{Logger.emit} first checks that its level is a C{LogLevel} by
walking C{LogLevel.iterconstants()}, which sorts the constants on every
call: for a stream's "opened" and "closed" lines, that check cost more than
the rest of the event.  L{QuickLogger} checks against a set made once, and
hands anything it does not know to Twisted's own C{emit}, which reports it
as it always has.  Observers see the same events.

It knows loggers and levels, never what is logged.
"""

from __future__ import annotations

from time import time

from twisted.logger import Logger, LogLevel

__all__ = ["QuickLogger"]

#: Every level C{Logger.emit} accepts.
_LEVELS = frozenset(LogLevel.iterconstants())


class QuickLogger(Logger):
    """
    A L{Logger} whose C{emit} checks the level against a set made once.
    """

    def emit(
        self, level: LogLevel, format: str | None = None, **kwargs: object
    ) -> None:
        if level not in _LEVELS or "log_trace" in kwargs:
            super().emit(level, format, **kwargs)
            return
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time(),
        )
        self.observer(kwargs)
