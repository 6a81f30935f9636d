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

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.server import Request

from . import _messages as messages
from ._broker import IBroker, Replay
from ._channel import Channel
from ._encoder import encode_event, encode_retry
from ._logging import QuickLogger
from ._opening import encode_replay, set_stream_headers, slim
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
    ) -> None:
        self._endpoint = endpoint
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
        preamble = self._preamble + encode_event(messages.set_id(client.id), "message")
        channels = [endpoint.default_channel]
        channels.extend(endpoint.channels[name] for name in channel_names)
        pending: Deferred[bytes] | None = None
        if last_event_id is not None:
            now, pending = self._replay(channels, last_event_id)
            preamble += now
        client._write(preamble)
        if pending is not None:
            # A broker that must ask the network: live events wait in the
            # session's backlog until the replay is written before them (the
            # broker answers up to the last event this node has delivered).
            client._replaying = True
            pending.addCallback(client._end_replay)
        request.registerProducer(client, True)
        request.notifyFinish().addBoth(client._finished)
        endpoint.joined(client)
        self.sessions[client.id] = client
        endpoint.counters.sessions_opened += 1
        client.address = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        for channel in channels:
            channel.register(client)
        endpoint.broker.session_opened(endpoint.path, client.id)
        self._start_keepalive()
        self._log.info(
            "Session {session} opened on {path} from {peer}",
            session=client.id[:8],
            path=endpoint.path,
            peer=address,
        )
        self._callback(True, client, request)
        slim(request, endpoint.keep_request_headers)
        return client

    def _replay(
        self, channels: list[Channel], last_event_id: str
    ) -> tuple[bytes, Deferred[bytes] | None]:
        """
        What the client missed since C{last_event_id} in C{channels}: the
        bytes now, if the broker answered at once, or a L{Deferred} of them.
        """
        endpoint = self._endpoint
        replay = endpoint.broker.replay(
            endpoint.path,
            [(c.name, c.history) for c in channels if c.history.enabled],
            last_event_id,
        )
        replayed: list[Replay] = []

        def keep(result: Replay) -> Replay:
            replayed.append(result)
            return result

        replay.addCallback(keep)
        if replayed:
            return self._encode_replay(replayed[0], last_event_id), None

        def failed(failure: Failure) -> bytes:
            self._log.failure("Replay failed", failure=failure)
            return self._encode_replay(Replay((), True), last_event_id)

        return b"", replay.addCallbacks(
            lambda result: self._encode_replay(result, last_event_id), failed
        )

    def _encode_replay(self, replay: Replay, last_event_id: str | None) -> bytes:
        return encode_replay(replay, last_event_id, self._event_of)

    def _event_of(self, name: str) -> str | None:
        channel = self._endpoint.channels.get(name)
        return channel.event if channel is not None else None

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
