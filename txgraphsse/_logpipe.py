# -*- test-case-name: tests.test_workers -*-
"""
The log pipe between a C{twistd graphsse --workers N} worker and its parent.

A worker's log events travel on its stdout, one JSON line
C{[level, text, namespace]} each, formatted in the worker (tracebacks
included): L{log_to_parent} and L{LogPipe} write them without ever blocking
the worker's reactor.  The parent reads the lines and L{relay}s each into
its own log under the worker's name; anything else a worker writes (on
stderr, or a line that is not such JSON) is relayed as a warning.

This module owns that line format and both its ends; it never starts or
stops a process, and never touches a socket but the pipe's descriptor.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, cast

from twisted.internet.interfaces import IReactorFDSet, IWriteDescriptor
from twisted.logger import (
    ILogObserver,
    InvalidLogLevelError,
    Logger,
    LogLevel,
    eventAsText,
    globalLogBeginner,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["LogPipe", "log_line", "log_to_parent", "relay"]


def log_line(level: LogLevel, text: str, namespace: str = "txgraphsse.worker") -> bytes:
    """
    One log event as the worker sends it: a JSON line
    C{[level, text, namespace]}.
    """
    return json.dumps([level.name, text, namespace]).encode() + b"\n"


@implementer(IWriteDescriptor)
class LogPipe:
    """
    The worker's log, as lines on stdout (a pipe the parent reads), written
    without ever blocking the reactor: at once while the pipe takes them,
    else kept (up to C{limit} bytes; past it, lines are dropped and counted)
    and written when the pipe drains.
    """

    limit = 4 << 20

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._pending = bytearray()
        self._writing = False
        self.dropped = 0
        os.set_blocking(1, False)

    def fileno(self) -> int:
        return 1

    def logPrefix(self) -> str:
        return "log"

    def write(self, line: bytes) -> None:
        if self._pending:
            if len(self._pending) + len(line) > self.limit:
                self.dropped += 1
                return
            self._pending += line
            return
        try:
            written = os.write(1, line)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the parent is gone
        if written < len(line):
            self._pending += line[written:]
            self._start()

    def _start(self) -> None:
        if not self._writing:
            self._writing = True
            self._reactor.addWriter(self)

    def doWrite(self) -> None:
        try:
            written = os.write(1, self._pending)
        except BlockingIOError:
            return
        except OSError:
            self._pending.clear()
            written = 0
        del self._pending[:written]
        if not self._pending:
            self._writing = False
            self._reactor.removeWriter(self)
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                self.write(log_line(LogLevel.warn, f"{dropped} log lines dropped"))

    def flush(self) -> None:
        """
        Write what is kept, blocking: for the end of the process.
        """
        os.set_blocking(1, True)
        with contextlib.suppress(OSError):
            while self._pending:
                del self._pending[: os.write(1, self._pending)]

    def connectionLost(self, reason: Failure) -> None:
        self._writing = False


def log_to_parent(pipe: LogPipe) -> None:
    """
    Send every log event of C{info} or above to the parent, formatted here
    (tracebacks included), one JSON line C{[level, text, namespace]} each.
    """

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < LogLevel.info:
            return
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        pipe.write(log_line(level, text, str(event.get("log_namespace", "-"))))

    globalLogBeginner.beginLoggingTo(
        [cast(ILogObserver, observe)], redirectStandardIO=False
    )


def relay(log: Logger, system: str, fd: int, line: bytes) -> None:
    """
    Put one line a worker wrote into the parent's log.

    @param log: the parent's logger, for what is not a log event.
    @param system: the worker's name in the log (C{worker 0}).
    @param fd: the worker's descriptor the line came on: 1 (its log
        events) or 2 (its stderr).
    @param line: the line, without its newline or with it.
    """
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if not text:
        return
    if fd == 1 and text.startswith("["):
        try:
            level_name, message, namespace = json.loads(text)
            level = LogLevel.levelWithName(level_name)
        except (ValueError, TypeError, InvalidLogLevelError):
            pass
        else:
            globalLogPublisher(
                {
                    "log_level": level,
                    "log_format": "{log_text}",
                    "log_text": message,
                    "log_namespace": namespace,
                    "log_system": system,
                    "log_time": time.time(),
                }
            )
            return
    log.warn("{worker_output}", worker_output=text, log_system=system)
