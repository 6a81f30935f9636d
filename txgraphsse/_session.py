# -*- test-case-name: tests.test_session -*-
"""
One open event stream: its id, state, write path, backpressure and close.

A L{SSESession} wraps the C{GET} request that opened it.  It never encodes an
event (the encoder did, once for all receivers) and never picks receivers (the
channel and the outbox did); it only moves bytes to its transport, at most
once per reactor turn, and holds them in a bounded backlog while its transport
is paused.  It reports its end to its hub and knows nothing of channels,
calls or routes.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal, Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request
from zope.interface import implementer

from ._encoder import chunk, encode_event
from ._internals import direct_transport, write_direct
from ._messages import as_data
from ._stats import Counters

__all__ = ["OverflowPolicy", "SSESession", "new_session_id"]

OverflowPolicy = Literal["disconnect", "drop_oldest"]

#: The event a session gets after C{drop_oldest} threw events away.
MISSED_EVENT = encode_event('{"route":"missed","args":null}', event="missed")


def new_session_id() -> str:
    """
    A session id: 128 random bits from L{secrets}, URL-safe.
    """
    return secrets.token_urlsafe(16)


class _Hub(Protocol):
    """
    What a session needs from whoever holds it (the endpoint).
    """

    def _enqueue(self, session: SSESession, payload: bytes) -> None: ...

    def _session_closed(self, session: SSESession, reason: Failure | None) -> None: ...

    def _flush(self) -> None: ...

    @property
    def counters(self) -> Counters: ...


class _Writer(Protocol):
    """
    Where a session's bytes go when they cannot go straight to the socket:
    the HTTP/1.x channel, or (HTTP/2) the request.
    """

    def write(self, data: bytes) -> object: ...


@implementer(IPushProducer)
class SSESession:
    """
    An open C{text/event-stream} response.

    @ivar id: the session id, at least 128 random bits.
    @ivar state: the application's own per-session data.
    @ivar http_request: the C{GET} request that opened the stream.  Once the
        stream is open its endpoint lets go of what the request no longer
        needs (see C{keep_request_headers} on C{setup_sse}).
    @ivar last_event_id: what the client sent as C{Last-Event-ID} (header) or
        C{lastEventId} (query) when it opened the stream, or L{None}.
    @ivar principal: what the endpoint's authorizer said the client is.
    @ivar channels: names of the channels this session belongs to, in the
        order it joined them (a tuple).
    @ivar close_reason: why the stream ended, once it has.
    @ivar address: the client's address as the endpoint counts it.
    """

    # Ten thousand idle streams are ten thousand of these: every slot
    # counts, and what most sessions never use (a backlog, state) is made
    # on first use.
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_chunked",
        "_connected",
        "_dropped",
        "_hub",
        "_max_backlog",
        "_out",
        "_paused",
        "_policy",
        "_replaying",
        "_state",
        "_tcp",
        "address",
        "channels",
        "close_reason",
        "http_request",
        "id",
        "last_event_id",
        "principal",
    )

    _log = Logger()

    def __init__(
        self,
        hub: _Hub,
        request: Request,
        *,
        session_id: str | None = None,
        last_event_id: str | None = None,
        principal: Any = None,
        max_backlog: int = 1 << 20,
        policy: OverflowPolicy = "disconnect",
    ) -> None:
        self.id = session_id if session_id is not None else new_session_id()
        self._state: dict[str, Any] | None = None
        self.http_request = request
        self.last_event_id = last_event_id
        self.principal = principal
        self.channels: tuple[str, ...] = ()
        self.close_reason: str | None = None
        self.address = ""
        self._hub = hub
        self._connected = True
        self._paused = False
        self._dropped = False
        self._replaying = False
        self._backlog: list[bytes] | None = None
        self._backlog_bytes = 0
        self._max_backlog = max_backlog
        self._policy = policy
        # HTTP/1.x: write straight to the channel, chunk-framed by us when the
        # response is chunked, so that bytes shared by many streams are framed
        # once.  Anything else (HTTP/2) goes through the request.
        self._chunked = bool(request.chunked)
        channel = request.channel
        self._out: _Writer = channel if isinstance(channel, HTTPChannel) else request
        # Plain TCP: while the transport holds nothing back, send straight to
        # the socket.  Twisted's write would buffer, register for
        # writability, and send on a later turn: an epoll round trip per
        # write, which is most of what one event costs a stream.
        transport = channel.transport if isinstance(channel, HTTPChannel) else None
        if isinstance(transport, tcp.Connection):
            transport.setTcpNoDelay(True)
        self._tcp = direct_transport(transport)

    def __repr__(self) -> str:
        return f"<SSESession {self.id[:6]}… connected={self._connected}>"

    @property
    def state(self) -> dict[str, Any]:
        """
        The application's own per-session data: a dict, made on first use.
        """
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

    @property
    def is_connected(self) -> bool:
        """
        Whether the stream is still open.
        """
        return self._connected

    # Writing

    def push(self, data: Any, event: str | None = None, id: str | None = None) -> None:
        """
        Send one event to this session only: C{data} as text (C{str}),
        UTF-8 (C{bytes}) or JSON (anything else).

        @raise ValueError: for an C{event} or C{id} the encoder refuses.
        """
        self._hub._enqueue(self, encode_event(as_data(data), event, id))

    def _write(self, payload: bytes, framed: bytes | None = None) -> None:
        """
        Move C{payload} (whole events) towards the client now, or keep it in
        the backlog while the transport is paused.

        @param framed: C{payload} already framed as one HTTP/1.1 chunk, when
            the caller shares it between streams.
        """
        if not self._connected:
            return
        if self._paused or self._replaying:
            self._hold(payload)
            return
        if self._chunked:
            data = framed if framed is not None else chunk(payload)
        else:
            data = payload
        tcp_ = self._tcp
        if tcp_ is not None:
            data = write_direct(tcp_, data)
            if not data:
                return
        self._out.write(data)

    def _hold(self, payload: bytes) -> None:
        backlog = self._backlog
        if backlog is None:
            backlog = self._backlog = []
        backlog.append(payload)
        self._backlog_bytes += len(payload)
        if self._backlog_bytes <= self._max_backlog:
            return
        counters = self._hub.counters
        if self._policy == "drop_oldest":
            while self._backlog_bytes > self._max_backlog and backlog:
                dropped = backlog.pop(0)
                self._backlog_bytes -= len(dropped)
                counters.events_dropped += dropped.count(b"\n\n")
            self._dropped = True
            return
        counters.slow_disconnects += 1
        counters.events_dropped += sum(part.count(b"\n\n") for part in backlog)
        self._log.info(
            "Session {session} is too slow: {size} bytes waiting; disconnecting",
            session=self.id[:8],
            size=self._backlog_bytes,
        )
        self._backlog = None
        self._backlog_bytes = 0
        self.abort("slow consumer")

    # IPushProducer: the transport tells us when its buffer is full.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._replaying or (not self._backlog and not self._dropped):
            return
        parts = self._backlog or []
        if self._dropped:
            parts.insert(0, MISSED_EVENT)
            self._dropped = False
        self._backlog = None
        self._backlog_bytes = 0
        self._write(b"".join(parts))

    def _end_replay(self, replay: bytes) -> None:
        """
        Write C{replay} (events the client missed) before the live events
        that waited for it.
        """
        self._replaying = False
        if replay:
            if self._backlog is None:
                self._backlog = []
            self._backlog.insert(0, replay)
            self._backlog_bytes += len(replay)
        if not self._paused:
            self.resumeProducing()

    def stopProducing(self) -> None:
        # The connection is gone; notifyFinish's errback does the cleanup.
        self._connected = False

    # Ending

    def close(self, final: bytes | None = None) -> None:
        """
        End the stream cleanly: write C{final} (encoded events) if given,
        then finish the response.  The client's C{EventSource} reconnects
        unless told otherwise.
        """
        if not self._connected:
            return
        # What this turn queued for the stream and what a paused transport
        # held back go out before C{final} and the end (not while a replay is
        # awaited: the client must then reconnect from its old id).
        self._hub._flush()
        self.resumeProducing()
        if final:
            self._write(final)
        if not self._connected:
            return
        self.close_reason = self.close_reason or "closed by server"
        self._connected = False
        request = self.http_request
        request.unregisterProducer()
        # A lost connection has reached stopProducing or notifyFinish (both
        # clear _connected), so the request can still be finished.
        if not request.finished:
            request.finish()

    def abort(self, reason: str) -> None:
        """
        Drop the connection at once, without waiting for buffered bytes.
        """
        if not self._connected:
            return
        self.close_reason = reason
        self._connected = False
        transport = self.http_request.channel.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _finished(self, result: Failure | None) -> None:
        """
        The response ended: finished by us, or the connection was lost.
        """
        self._connected = False
        if self.close_reason is None:
            self.close_reason = (
                "client disconnected" if result is not None else "closed"
            )
        self._backlog = None
        self._backlog_bytes = 0
        self._hub._session_closed(self, result)
