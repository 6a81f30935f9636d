# -*- test-case-name: tests.test_session,tests.test_channel,tests.test_leaks -*-
"""
The open streams of one endpoint: how a checked C{GET} becomes a session,
and how a session's end is accounted for.

L{Streams} owns the table of open sessions, their count by client address,
the endpoint's one keep-alive timer (running only while there are
sessions), and the order of opening (headers, preamble, replay, producer,
membership, C{on_connection}) and of ending.  It asks its endpoint, through
L{_Endpoint}, for what lies beyond the streams: channels, the broker, the
outbox and the calls a closed session leaves.  It never parses a request
(the resource has checked it) and never encodes an event beyond the
preamble and the replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.server import Request

from . import _messages as messages
from ._broker import IBroker
from ._catchup import Lag, resume_cursor
from ._channel import Channel
from ._encoder import encode_event, encode_retry
from ._logging import QuickLogger
from ._opening import set_stream_headers, slim
from ._outbox import Outbox
from ._session import SSESession
from ._stats import Counters

__all__ = ["Streams"]

_S = TypeVar("_S", bound=SSESession)


class _Endpoint(Protocol[_S]):
    """
    What the streams need of their endpoint.
    """

    path: str
    broker: IBroker
    counters: Counters
    channels: dict[str, Channel]
    default_channel: Channel
    keep_request_headers: tuple[bytes, ...] | None
    _outbox: Outbox

    def new_session(
        self, request: Request, last_event_id: str | None, principal: Any
    ) -> _S: ...

    def joined(self, session: _S) -> None:
        """
        C{session} opened: from now on the outbox writes to it.
        """

    def ping(self) -> None:
        """
        Send every session a keep-alive comment.
        """

    def forget_session(self, session: _S) -> None:
        """
        C{session} ended: drop what it left beyond the streams and its
        channels (its calls, subscriptions and rates).
        """

    def connection_callback(self, opened: bool) -> Callable[..., object] | None:
        """
        C{on_connection} (C{opened}) or C{on_connection_close}.
        """


class Streams(Generic[_S]):
    """
    The open sessions of one endpoint.

    @ivar sessions: open sessions of this node, by id.
    """

    _log = QuickLogger()

    def __init__(
        self,
        endpoint: _Endpoint[_S],
        clock: IReactorTime,
        keepalive: float,
        retry: int,
        logged: bool = True,
    ) -> None:
        self._endpoint = endpoint
        self._logged = logged
        self._clock = clock
        self._keepalive = keepalive
        self._keepalive_loop: LoopingCall | None = None
        self._preamble = encode_retry(retry)
        self._per_address: dict[str, int] = {}
        self.sessions: dict[str, _S] = {}

    def sessions_from(self, address: str) -> int:
        """
        How many open sessions came from C{address}.
        """
        return self._per_address.get(address, 0)

    # Opening

    def open(
        self,
        request: Request,
        channel_names: Iterable[str],
        last_event_id: str | None,
        principal: Any,
        address: str,
    ) -> _S:
        """
        Turn C{request} into an open session: headers, preamble, replay,
        channel membership.  The resource has checked everything already.
        """
        endpoint = self._endpoint
        set_stream_headers(request)
        # Twisted has already set "Connection: close" for a client that asked
        # to close; do not contradict it.
        if request.clientproto == b"HTTP/1.1" and not request.responseHeaders.hasHeader(
            b"connection"
        ):
            request.setHeader(b"connection", b"keep-alive")
        # Headers go out now; the session's write path depends on them
        # (chunked or not).
        request.write(b"")
        client = endpoint.new_session(request, last_event_id, principal)
        # The first frame carries the position (the newest event with an id
        # handed out), so that a client that reconnects before any event
        # came resumes exactly; a resuming client keeps its own.
        position = endpoint._outbox.position if last_event_id is None else None
        preamble = self._preamble + encode_event(
            messages.set_id(client.id),
            "message",
            position.id if position is not None else None,
        )
        channels = [endpoint.default_channel]
        channels.extend(endpoint.channels[name] for name in channel_names)
        if last_event_id is None:
            client._write(preamble)
        else:
            # What the client missed is read from history by a cursor and
            # written as the transport drains (txgraphsse._catchup), after
            # the preamble; live events wait for it, those history keeps as
            # the cursor alone.
            client._lag = lag = Lag(resume_cursor(last_event_id), first=True)
            lag.keep(-1, preamble)
            client._replaying = True
        request.registerProducer(client, True)
        request.notifyFinish().addBoth(client._finished)
        endpoint.joined(client)
        self.sessions[client.id] = client
        endpoint.counters.sessions_opened += 1
        client.address = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        for channel in channels:
            channel.register(client)
        if last_event_id is not None:
            client._catch_up()
        endpoint.broker.session_opened(endpoint.path, client.id)
        self._start_keepalive()
        if self._logged:
            self._log.info(
                "Session {session} opened on {path} from {peer}",
                session=client.id[:8],
                path=endpoint.path,
                peer=address,
            )
        self._callback(True, client, request)
        slim(request, endpoint.keep_request_headers)
        return client

    # Ending

    def ended(self, session: _S) -> None:
        """
        C{session}'s response ended (finished, or its connection lost).
        """
        if self.sessions.pop(session.id, None) is None:
            return
        endpoint = self._endpoint
        endpoint.counters.sessions_closed += 1
        for name in list(session.channels):
            channel = endpoint.channels.get(name)
            if channel is not None:
                channel.deregister(session)
        endpoint.broker.session_closed(endpoint.path, session.id)
        address = session.address
        left = self._per_address.get(address, 0) - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)
        endpoint.forget_session(session)
        if not self.sessions:
            self.stop_keepalive()
        if self._logged:
            self._log.info(
                "Session {session} closed: {why}",
                session=session.id[:8],
                why=session.close_reason,
            )
        self._callback(False, session, session.http_request)

    def _callback(self, opened: bool, client: _S, request: Request) -> None:
        callback = self._endpoint.connection_callback(opened)
        if callback is None:
            return
        try:
            callback(client, self._endpoint, client.id, request)
        except Exception:
            self._log.failure(
                "Connection callback {callback} failed", callback=callback
            )

    # Keep-alive: one timer per endpoint, running only while it has sessions.

    def _start_keepalive(self) -> None:
        if self._keepalive_loop is None and self._keepalive > 0:
            loop = self._keepalive_loop = LoopingCall(self._endpoint.ping)
            loop.clock = self._clock
            loop.start(self._keepalive, now=False)

    def stop_keepalive(self) -> None:
        """
        Stop the keep-alive timer, if it runs.
        """
        loop, self._keepalive_loop = self._keepalive_loop, None
        if loop is not None and loop.running:
            loop.stop()
