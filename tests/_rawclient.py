"""
A lean SSE client for load-shaped tests: a Twisted protocol that sends one
GET, reads the HTTP/1.1 head, undoes chunked framing incrementally and feeds
the project's parser.  Thousands of them fit in one test process; treq would
cost far more per stream.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from txgraphsse import EventStreamParser, ServerSentEvent


def raise_fd_limit(wanted: int = 16_384) -> None:
    """
    Let this process hold C{wanted} sockets if the hard limit allows: a test
    with thousands of streams holds two descriptors per stream.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Dechunker:
    """
    Incremental HTTP/1.1 chunked decoding.

    @ivar done: whether the last (empty) chunk arrived.
    """

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self._buffer = b""
        self._left = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data
        while buffer and not self.done:
            if self._left > 0:
                take = buffer[: self._left]
                self._left -= len(take)
                buffer = buffer[len(take) :]
                if self._left == 0:
                    self._left = -2  # then CRLF
                self._sink(take)
                continue
            if self._left < 0:
                need = -self._left
                if len(buffer) < need:
                    self._left = -(need - len(buffer))
                    buffer = b""
                    break
                buffer = buffer[need:]
                self._left = 0
                continue
            line, sep, rest = buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(line.split(b";")[0], 16)
            buffer = rest
            if size == 0:
                self.done = True
                break
            self._left = size
        self._buffer = buffer


class RawSSE(Protocol):
    """
    One stream.

    @ivar status: the response's status code, once read.
    @ivar events: every event dispatched so far.
    @ivar closed: fires when the connection ends.
    @ivar reason: why it ended.
    @ivar ended: whether the chunked body ended properly.
    """

    def __init__(
        self,
        target: str,
        headers: dict[str, str] | None = None,
        on_event: Callable[[RawSSE, ServerSentEvent], None] | None = None,
    ) -> None:
        self.target = target
        self.headers = headers or {}
        self.on_event = on_event
        self.status: int | None = None
        self.events: list[ServerSentEvent] = []
        self.parser = EventStreamParser()
        self._head = b""
        self._body = Dechunker(self._body_bytes)
        self.opened: Deferred[RawSSE] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.session_id: str | None = None

    @property
    def ended(self) -> bool:
        return self._body.done

    def connectionMade(self) -> None:
        lines = [f"GET {self.target} HTTP/1.1", "Host: 127.0.0.1"]
        lines.extend(f"{k}: {v}" for k, v in self.headers.items())
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        if self.status is None:
            self._head += data
            head, sep, rest = self._head.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self._head = b""
            data = rest
            if self.status != 200:
                self.opened.errback(Exception(f"status {self.status}"))
                assert self.transport is not None
                self.transport.loseConnection()
                return
        self._body.feed(data)

    def _body_bytes(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            self.events.append(event)
            if self.session_id is None and event.data.startswith('{"route":"setId"'):
                self.session_id = json.loads(event.data)["args"]
                self.opened.callback(self)
            if self.on_event is not None:
                self.on_event(self, event)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(Exception("connection lost"))
        if not self.opened.called:
            self.opened.errback(reason)
        self.reason = reason
        self.closed.callback(None)

    def data(self, event_type: str | None = None) -> list[Any]:
        """
        The JSON data of the events of C{event_type} (all but setId if None).
        """
        return [
            json.loads(e.data)
            for e in self.events
            if (event_type is None or e.type == event_type)
            and not e.data.startswith('{"route":"setId"')
        ]


def open_stream(
    reactor: IReactorTCP,
    port: int,
    target: str = "/sse",
    headers: dict[str, str] | None = None,
    on_event: Callable[[RawSSE, ServerSentEvent], None] | None = None,
    source: str | None = None,
) -> Deferred[RawSSE]:
    """
    Connect a L{RawSSE} to 127.0.0.1:C{port}; fire once it has its session id.

    @param source: the loopback address to connect from (127.0.0.2, ...).
    """
    protocol = RawSSE(target, headers, on_event)
    endpoint = TCP4ClientEndpoint(
        reactor,
        "127.0.0.1",
        port,
        bindAddress=None if source is None else (source, 0),
    )
    connected = connectProtocol(endpoint, protocol)
    connected.addErrback(protocol.opened.errback)
    return protocol.opened
