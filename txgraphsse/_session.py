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
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request
from zope.interface import implementer

from ._broker import IBroker, Replay, StoredEvent
from ._catchup import ROUND_BYTES, Lag, drop_oldest, grouped, reset_event
from ._encoder import KEEPALIVE, chunk, encode_event
from ._internals import direct_transport, write_cut, write_direct
from ._messages import as_data
from ._outbox import Outbox
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

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def broker(self) -> IBroker: ...

    @property
    def path(self) -> str: ...

    @property
    def channels(self) -> Mapping[str, Any]: ...

    @property
    def options(self) -> Any: ...

    @property
    def _outbox(self) -> Outbox: ...


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
    @ivar info: what the application tells a channel's presence about this
        session (a JSON-able dict, set in C{on_connection}), or L{None}.
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
        "_lag",
        "_mark",
        "_max_backlog",
        "_out",
        "_paused",
        "_policy",
        "_replaying",
        "_stall",
        "_state",
        "_tcp",
        "address",
        "channels",
        "close_reason",
        "http_request",
        "id",
        "info",
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
        self.info: dict[str, Any] | None = None
        self._hub = hub
        self._connected = True
        self._paused = False
        self._dropped = False
        self._replaying = False
        # What waits while the transport is paused: each payload, whether
        # history keeps all it holds, and the newest event handed out then.
        self._backlog: list[tuple[bytes, bool, int]] | None = None
        self._backlog_bytes = 0
        # The newest event with an id handed out when the transport paused,
        # and, once the backlog outgrew its bound, the way back by history.
        self._mark: StoredEvent | None = None
        self._lag: Lag | None = None
        self._stall: IDelayedCall | None = None
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
        if self._tcp is not None and len(payload) > ROUND_BYTES:
            parts = self._hub._outbox.parts()
            if parts is not None:
                _send_cut(self, self._tcp, parts)
                return
        self._send(payload, framed)

    def _send(self, payload: bytes, framed: bytes | None = None) -> None:
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

    # Holding back: never more than max_backlog, and, for what history
    # keeps, nothing but a cursor (txgraphsse._catchup).

    def _hold(self, payload: bytes) -> None:
        outbox = self._hub._outbox
        parts = outbox.parts()
        if parts is None:
            # Not the outbox's (a preamble, a final event): history has none
            # of it.
            position = outbox.position.seq if outbox.position else 0
            self._hold_part(payload, False, position)
            return
        # Each part at its place: after the newest event with an id before
        # it in this write, or before this flush.
        self._hold_parts(parts, outbox.before.seq if outbox.before else 0)

    def _hold_parts(
        self, parts: list[tuple[bytes, StoredEvent | None]], position: int
    ) -> None:
        for part, event in parts:
            if event is not None:
                position = event.seq
            elif part is KEEPALIVE:
                continue  # a sign of life, for a stream that moves
            self._hold_part(part, event is not None, position)
            if not self._connected:
                return

    def _hold_part(self, payload: bytes, kept: bool, position: int) -> None:
        """
        Hold C{payload} back: an event history keeps (C{kept}), or another
        thing, which comes after the event of sequence number C{position}.
        """
        lag = self._lag
        if lag is not None:
            if kept:
                lag.skipped = True
            elif lag.kept_bytes + len(payload) > self._max_backlog:
                self._overflow("what history does not keep", (payload, kept, position))
            else:
                lag.keep(position, payload)
            return
        if self._backlog_bytes + len(payload) <= self._max_backlog:
            if self._backlog is None:
                self._backlog = []
            self._backlog.append((payload, kept, position))
            self._backlog_bytes += len(payload)
            return
        # Paused before any event with an id was handed out: all of them
        # came after, and history has them from the first.
        mark = self._mark or self._hub._outbox.origin
        if mark is not None and self._replaying is False:
            # Over the bound: what history keeps is dropped, to be read
            # there again from the mark once the reader drains.
            self._lag = lag = Lag(mark)
            for held, held_kept, held_position in self._backlog or ():
                if not held_kept:
                    lag.keep(held_position, held)
            self._backlog = None
            self._backlog_bytes = 0
            self._replaying = True
            self._hub.counters.lagging += 1
            self._hold_part(payload, kept, position)
            return
        self._overflow("the backlog", (payload, kept, position))

    def _overflow(self, what: str, new: tuple[bytes, bool, int]) -> None:
        """
        C{new} would take what waits past C{max_backlog}: disconnect before
        it does, or (C{drop_oldest}) drop the oldest events, of what waits
        and then of C{new}, until it fits.
        """
        counters = self._hub.counters
        lag = self._lag
        if self._policy == "drop_oldest":
            if lag is not None:
                entries = [(p, False, pos) for pos, p in lag.kept]
            else:
                entries = list(self._backlog or [])
            entries.append(new)
            events, size, dropped = drop_oldest(entries, self._max_backlog)
            counters.events_dropped += dropped
            if lag is not None:
                lag.kept = [(position, event) for event, _, position in events]
                lag.kept_bytes = size
            else:
                self._backlog = events
                self._backlog_bytes = size
            self._dropped = True
            return
        held = self._backlog_bytes if lag is None else lag.kept_bytes
        if lag is None:
            waiting = [p for p, _, _ in self._backlog or ()]
        else:
            waiting = [p for _, p in lag.kept]
        waiting.append(new[0])
        counters.events_dropped += sum(part.count(b"\n\n") for part in waiting)
        counters.slow_disconnects += 1
        self._log.info(
            "Session {session} is too slow: {size} bytes of {what} waiting;"
            " disconnecting",
            session=self.id[:8],
            size=held,
            what=what,
        )
        self._backlog = None
        self._backlog_bytes = 0
        self._lag = None
        self.abort("slow consumer")

    # IPushProducer: the transport tells us when its buffer is full.

    def pauseProducing(self) -> None:
        if self._paused:
            return
        self._paused = True
        if self._lag is None:
            self._mark = self._hub._outbox.position
        timeout = self._hub.options.write_timeout
        if timeout and self._stall is None:
            self._stall = self._hub.clock.callLater(timeout, _stalled, self)

    def resumeProducing(self) -> None:
        self._paused = False
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()
        if self._lag is not None:
            self._catch_up()
            return
        if self._replaying or (not self._backlog and not self._dropped):
            return
        parts = self._backlog or []
        self._backlog = None
        self._backlog_bytes = 0
        if self._dropped:
            self._dropped = False
            self._send(MISSED_EVENT)
        # In writes of about ROUND_BYTES: never one copy of all that waited.
        for index, payload in grouped(parts):
            self._send(payload)
            if self._paused or not self._connected:
                rest = parts[index:]
                if rest and self._connected:
                    self._backlog = rest
                    self._backlog_bytes = sum(len(p) for p, _, _ in rest)
                return

    def _catch_up(self) -> None:
        """
        One round of the way back: the events after the cursor, read from
        history, written as the transport drains.
        """
        lag = self._lag
        if lag is None or lag.reading or self._paused or not self._connected:
            return
        hub = self._hub
        channels = [
            hub.channels[name] for name in self.channels if name in hub.channels
        ]
        # The broker could not answer: the client hears reset (it may have
        # missed events), as a replay that failed would tell it.
        lag.read(hub.broker, hub.path, channels).addErrback(_read_failed).addCallback(
            self._caught_up, lag
        )
        if lag.reading and lag is self._lag:
            # The broker answers later (over the network): what goes before
            # every event (a new stream's preamble) need not wait for it.
            for payload in lag.take_preamble():
                self._send(payload)

    def _caught_up(self, replay: Replay, lag: Lag) -> None:
        if lag is not self._lag or not self._connected:
            return
        hub = self._hub
        position = hub._outbox.position
        if replay.reset and lag.first:
            lag.reset_first()
        elif replay.reset:
            # The cursor has left history: say so, and carry on live, or go.
            self._hub.counters.lag_resets += 1
            if self._policy == "disconnect":
                self._lag = None
                self.abort("fell out of history")
                return
            self._send(reset_event(lag.cursor.id))
            if position is not None:
                lag.cursor = position
        lag.first = False
        if self._dropped:
            self._dropped = False
            self._send(MISSED_EVENT)
        done = lag.write_round(
            replay,
            hub.channels,
            hub._outbox.upto(self),
            self._send,
            lambda: self._paused or not self._connected,
        )
        if not self._connected:
            return
        if done and not self._paused:
            self._lag = None
            self._replaying = False
            return
        if not self._paused:
            self._hub.clock.callLater(0, self._catch_up)

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
        self._lag = None
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()
        self._hub._session_closed(self, result)


def _read_failed(failure: Failure) -> Replay:
    SSESession._log.failure("Reading history failed", failure=failure)
    return Replay((), True)


def _send_cut(
    session: SSESession,
    transport: tcp.Connection,
    parts: list[tuple[bytes, StoredEvent | None]],
) -> None:
    """
    Write a large turn's C{parts} to C{session}: never the whole turn into
    the transport, whatever the socket does not take waits as a slow
    reader's would (held, or read again from history).
    """
    framed = [chunk(p) if session._chunked else p for p, _ in parts]
    at = write_cut(transport, framed)
    if at is None:
        return
    handed = [e for _, e in parts[: at + 1] if e is not None]
    mark = handed[-1] if handed else session._hub._outbox.before
    if session._lag is None:
        # Paused as the transport paused it, but only what went is behind.
        session._mark = mark
    session._hold_parts(parts[at + 1 :], mark.seq if mark else 0)


def _stalled(session: SSESession) -> None:
    """
    C{session}'s socket made no progress for C{write_timeout}: drop it.
    """
    session._stall = None
    if session._paused and session._connected:
        session._hub.counters.stalls += 1
        session._log.info(
            "Session {session} made no progress for {timeout} s; dropping it",
            session=session.id[:8],
            timeout=session._hub.options.write_timeout,
        )
        session._backlog = None
        session._lag = None
        session.abort("stalled")
