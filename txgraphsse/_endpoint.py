# -*- test-case-name: tests.test_session,tests.test_channel -*-
"""
One SSE path: its sessions, channels, pending calls and the public API that
the seed calls C{SSEChannelInfo} (L{SSEEndpoint}) and C{SSEClientInfo}
(L{SSEClient}).

The endpoint joins the lower layers: it opens sessions for its HTTP face,
publishes channel events through the broker, fans delivered events out
through its outbox, and holds the calls both ways (L{ClientCalls} for the
server's calls to clients, L{RouteObservers} and L{CallRates} for the
clients' calls).  It knows twisted.web only as the request a session wraps
and the resource it is handed a factory for: parsing HTTP is the
resource's job, and the resource is built above both (by
C{SSEBackend.setup_sse}).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from attrs import asdict
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request
from zope.interface import implementer

from . import _messages as messages
from ._auth import AllowAll, IAuthorizer
from ._broker import IBroker, IDeliverySink, StoredEvent
from ._calls import CallTable, RemoteCallError
from ._channel import Channel, ChannelSpec, ChannelTable, missed_by
from ._cors import CORSPolicy
from ._dispatch import dispatch_forwarded
from ._drain import close_for_shutdown, disconnect, drained
from ._encoder import KEEPALIVE, encode_event
from ._graph import Caller, RouteGraph
from ._lifetime import Lifetimes
from ._limits import CallRates, Limits
from ._observers import RouteObservers
from ._options import EndpointOptions
from ._outbox import Outbox
from ._outcalls import ClientCalls
from ._pump import pump
from ._session import OverflowPolicy, SSESession
from ._stats import Counters
from ._streams import Streams

__all__ = ["ConnectionCallback", "SSEClient", "SSEEndpoint"]

#: C{(client, endpoint, session_id, request)}, as the seed's callbacks.
ConnectionCallback = Callable[["SSEClient", "SSEEndpoint", str, Request], object]

#: The name of the channel every session belongs to.
DEFAULT_CHANNEL = "message"

_T = TypeVar("_T")


class SSEClient(SSESession):
    """
    A session together with the calls bound to it: the seed's
    C{SSEClientInfo}.  C{endpoint.sessions} maps ids to these.

    @ivar info: what the channels that keep presence list for this session
        beside its id and subject (L{Channel.presence}, and the C{presence}
        events): a JSON-able dict, or L{None} (the default).  Set it in
        C{on_connection}: a channel's presence takes it once that has run.
    """

    __slots__ = ()

    @property
    def endpoint(self) -> SSEEndpoint:
        hub = self._hub
        assert isinstance(hub, SSEEndpoint)
        return hub

    def send(self, message: Any, event: str | None = None) -> int:
        """
        Send C{message} to this session only (see L{SSEEndpoint.send}).
        """
        return self.endpoint.send(message, event, session_id=self.id)

    def post(self, route: str, args: Any = None, method: str | None = None) -> None:
        """
        Run the client's route C{route} with C{args}; no answer comes back.
        """
        self.endpoint.post(route, args, method, session_id=self.id)

    def request(
        self, message: Any, method: str | None = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        Ask the client to run C{message} and answer (see
        L{SSEEndpoint.request}).
        """
        return self.endpoint.client_calls.request(self.id, message, method, timeout)

    def run(
        self,
        route: str,
        args: Any = None,
        method: str | None = None,
        timeout: float | None = None,
    ) -> Deferred[Any]:
        """
        Run the client's route C{route} and wait for its result.
        """
        return self.request(messages.route_call(route, args), method, timeout)

    def subscribe(
        self, route: str, callback: Callable[[Any], object], args: Any = None
    ) -> Deferred[int]:
        """
        Have C{callback} called with every output of the client's route
        C{route}; fires with the client's subscription number.
        """
        return self.endpoint.client_calls.subscribe(self.id, route, callback, args)

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        End the client-side subscription C{sub} to C{route}.
        """
        return self.endpoint.client_calls.unsubscribe(self.id, route, sub)

    def terminate(self) -> bool:
        """
        Close this session's stream.
        """
        was = self.is_connected
        self.close()
        return was


@implementer(IDeliverySink)
class SSEEndpoint:
    """
    One SSE path, made by L{txgraphsse.SSEBackend.setup_sse}.

    @ivar path: the path it serves (also its key with the broker).
    @ivar resource: the twisted.web resource to mount at that path.
    @ivar sessions: open sessions of this node, by id.
    @ivar channels: channels by name; C{channels["message"]} is the default
        channel every session belongs to.
    @ivar channel_table: what keeps them, and drops the dynamic ones
        (L{ChannelTable}: their cap and name bound are its attributes).
    @ivar calls: pending server-to-client calls.
    @ivar client_calls: the server's calls to its clients' routes.
    @ivar observers: the sessions' subscriptions to the server's routes.
    @ivar rates: the clients' call buckets.
    @ivar options: what the endpoint was set up with; the attributes below
        are read from it.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        graph: RouteGraph,
        clock: IReactorTime,
        broker: IBroker,
        face: Callable[[SSEEndpoint], IResource],
        options: EndpointOptions | None = None,
    ) -> None:
        """
        @param face: makes the endpoint's HTTP face (its C{resource}) of it.
        """
        if options is None:
            options = EndpointOptions()
        self.options = options
        self.path = path
        self.graph = graph
        self.clock = clock
        self.broker = broker
        self.on_connection: ConnectionCallback | None = options.on_connection
        self.on_close: Callable[[SSEEndpoint], object] | None = options.on_close
        self.on_connection_close: ConnectionCallback | None = (
            options.on_connection_close
        )
        self.keepalive = options.keepalive
        self.retry = options.retry
        self.history = options.history_policy()
        self.dynamic_channels = options.dynamic_channels
        self.max_backlog = options.max_backlog
        self.overflow: OverflowPolicy = options.overflow
        self.authorizer: IAuthorizer = (
            options.authorizer if options.authorizer is not None else AllowAll()
        )
        self.limits = options.limits if options.limits is not None else Limits()
        self.cors = options.cors if options.cors is not None else CORSPolicy()
        self.keep_request_headers = options.kept_headers()
        self.stopping = False
        self.streams: Streams[SSEClient] = Streams(
            self, clock, self.keepalive, self.retry, options.log_streams
        )
        self.sessions = self.streams.sessions
        self.channel_table = ChannelTable(
            self, clock, broker, path, self.history, DEFAULT_CHANNEL
        )
        self.channels = self.channel_table.channels
        self.calls = CallTable(
            clock,
            options.request_timeout,
            prefix=f"{broker.node_id}." if broker.clustered else "",
        )
        self.client_calls = ClientCalls(self)
        self.observers = RouteObservers(graph, self.limits, self.send, self.authorizer)
        self.rates = CallRates(self.limits)
        self.lifetimes = Lifetimes(
            clock, self.authorizer, self.channels, self.send, DEFAULT_CHANNEL
        )
        self.closed = False
        self._random = random.random
        self.counters = Counters()
        self._outbox = Outbox(clock, self.counters)
        self.default_channel = self.add_channel(ChannelSpec(DEFAULT_CHANNEL))
        for spec in options.channels:
            self.add_channel(spec)
        self.resource = face(self)
        broker.attach(path, self)

    def __repr__(self) -> str:
        return f"<SSEEndpoint {self.path!r} sessions={len(self.sessions)}>"

    # Channels

    def add_channel(self, spec: str | ChannelSpec) -> Channel:
        """
        Add a channel, kept for the endpoint's life (or return the one of
        that name).
        """
        return self.channel_table.add(spec)

    def _broadcast(
        self,
        channel: Channel,
        data: Any,
        event: str | None,
        filter: Callable[[SSESession], bool] | None,
    ) -> int:
        text = messages.as_data(data)
        if filter is not None:
            chosen = [s for s in channel.members if filter(s)]
            if chosen:
                self._outbox.to_members(
                    chosen, encode_event(text, event or channel.event)
                )
            return len(chosen)
        if event is not None:
            encode_event("", event)  # refuse it here, before it travels
        self.broker.publish(self.path, channel.name, event, text, channel.history)
        self.counters.events_published += 1
        return len(channel.members)

    # IDeliverySink: the broker hands back what this node must fan out.

    def deliver(self, event: StoredEvent) -> None:
        channel = self.channels.get(event.channel)
        if channel is None or not channel.members:
            return
        payload = encode_event(event.data, event.event or channel.event, event.id)
        self._outbox.to_members(channel.members, payload, event)

    def flushed(self) -> Deferred[None]:
        """
        Fire once every event this endpoint published has its place in the
        order every node delivers (at once with the in-memory broker).  A
        route that broadcasts and must not answer before the event is
        ordered ahead of later ones awaits it.
        """
        return self.broker.flushed(self.path)

    def missed(self, everything: bool, at: str | None) -> None:
        self._outbox.to_members(*missed_by(self.channels.values(), everything, at))

    def deliver_to_session(self, session_id: str, payload: bytes) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        self._outbox.to_session(session, payload)
        return True

    def handle_forwarded(
        self, body: Any, header_session: str | None, principal: Any
    ) -> Deferred[tuple[int, Any]]:
        return dispatch_forwarded(self, body, header_session, principal)

    def settle_forwarded(
        self,
        callback_id: str,
        session_id: str,
        args: Any,
        error: tuple[str, str] | None = None,
    ) -> bool:
        if error is not None:
            # An error answers a call, never a subscription's update.
            return self.calls.refuse(callback_id, session_id, RemoteCallError(*error))
        return self.calls.settle(
            callback_id, session_id, args
        ) or self.client_calls.deliver_update(session_id, callback_id, args)

    def disconnect_here(self, session_id: str | None, subject: str | None) -> int:
        return disconnect(self.sessions, session_id, subject, self.retry)

    def remote_session_closed(self, session_id: str) -> None:
        if session_id in self.sessions:
            return
        self.client_calls.forget(session_id)
        self.calls.fail_session(session_id, "closed on its node")

    # The session hub

    def _enqueue(self, session: SSESession, payload: bytes) -> None:
        self._outbox.to_session(session, payload)

    def _flush(self) -> None:
        self._outbox.flush()

    def open_session(
        self,
        request: Request,
        channel_names: Iterable[str],
        last_event_id: str | None,
        principal: Any = None,
        address: str = "",
    ) -> SSEClient:
        """
        Turn C{request} into an open session: headers, preamble, replay,
        channel membership.  The resource has checked everything already.
        """
        return self.streams.open(
            request, channel_names, last_event_id, principal, address
        )

    def _session_closed(self, session: SSESession, reason: Failure | None) -> None:
        assert isinstance(session, SSEClient)
        self.streams.ended(session)

    # What the streams ask of their endpoint

    def new_session(
        self, request: Request, last_event_id: str | None, principal: Any
    ) -> SSEClient:
        return SSEClient(
            self,
            request,
            last_event_id=last_event_id,
            principal=principal,
            max_backlog=self.max_backlog,
            policy=self.overflow,
        )

    def joined(self, session: SSEClient) -> None:
        self._outbox.joined(session)
        self.lifetimes.watch(session)

    def ping(self) -> None:
        self._outbox.to_members(self.default_channel.members, KEEPALIVE)

    def forget_session(self, session: SSEClient) -> None:
        self.lifetimes.forget(session.id)
        self.rates.forget(session.id)
        self.observers.forget(session.id)
        self.client_calls.forget(session.id)
        self.calls.fail_session(session.id, session.close_reason or "closed")

    def connection_callback(self, opened: bool) -> ConnectionCallback | None:
        return self.on_connection if opened else self.on_connection_close

    # The seed's API

    def send(
        self, message: Any, event: str | None = None, session_id: str | None = None
    ) -> int:
        """
        Send C{message} (text as it is, bytes as UTF-8, anything else as
        JSON) to one session, or on the default channel to all.

        @return: how many sessions it was queued for.
        """
        if session_id is None:
            return self.default_channel.broadcast(message, event)
        payload = encode_event(messages.as_data(message), event)
        return 1 if self.broker.push(self.path, session_id, payload) else 0

    def post(
        self,
        route: str,
        args: Any = None,
        method: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """
        Run the client's route C{route} with C{args}, fire and forget.
        """
        self.send(messages.route_call(route, args, method), session_id=session_id)

    def request(
        self,
        message: Any,
        method: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Deferred[Any] | dict[str, Deferred[Any]]:
        """
        Ask a client to run C{message} (C{{"route":..,"args":..}}) and answer.

        @return: with C{session_id}, a L{Deferred} that fires with the
            client's answer, or fails with L{twisted.internet.defer.TimeoutError}
            after C{timeout} (the endpoint's default), L{SessionClosed} if the
            session ends first, or L{twisted.internet.defer.CancelledError} if
            cancelled.  Without, a C{dict} mapping each session id to such a
            L{Deferred}.
        """
        return self._one_or_all(
            session_id,
            lambda sid: self.client_calls.request(sid, message, method, timeout),
        )

    def run(
        self,
        route: str,
        args: Any = None,
        method: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Deferred[Any] | dict[str, Deferred[Any]]:
        """
        Run the client's route C{route}, as L{request}.
        """
        return self.request(
            messages.route_call(route, args), method, session_id, timeout
        )

    def subscribe(
        self,
        route: str,
        callback: Callable[[Any], object],
        session_id: str | None = None,
        args: Any = None,
    ) -> Deferred[int] | dict[str, Deferred[int]]:
        """
        Have C{callback} called with every output of client route C{route}.

        @return: as L{request}: the client's subscription number.
        """
        return self._one_or_all(
            session_id,
            lambda sid: self.client_calls.subscribe(sid, route, callback, args),
        )

    def unsubscribe(
        self, route: str, sub: int, session_id: str | None = None
    ) -> Deferred[bool] | dict[str, Deferred[bool]]:
        """
        End a subscription made with L{subscribe}.
        """
        return self._one_or_all(
            session_id, lambda sid: self.client_calls.unsubscribe(sid, route, sub)
        )

    def _one_or_all(
        self, session_id: str | None, call: Callable[[str], _T]
    ) -> _T | dict[str, _T]:
        """
        C{call(session_id)}, or, without one, C{call} for every session, by
        id.
        """
        if session_id is not None:
            return call(session_id)
        return {sid: call(sid) for sid in list(self.sessions)}

    def terminate(self) -> bool:
        """
        Close every stream of this endpoint and stop serving it.
        """
        if self.closed:
            return False
        self.closed = True
        self._outbox.flush()
        for session in list(self.sessions.values()):
            session.close()
        self.streams.stop_keepalive()
        self.channel_table.close()
        self.broker.detach(self.path)
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                self._log.failure("on_close of {path} failed", path=self.path)
        return True

    def shutdown(
        self, final: Any = None, drain: float = 3.0, spread: float = 5.0
    ) -> Deferred[None]:
        """
        Close every stream after a last C{shutdown} event, for a process that
        is stopping, and drop its connection once its bytes are written.

        @param drain: seconds to wait for slow clients to take their last
            bytes before the connections are cut.
        @param spread: seconds over which the clients' reconnects are spread:
            each stream is told a C{retry:} of the endpoint's C{retry} plus a
            random share of it, so that they do not all reconnect (to the
            next node, say) at once.
        @return: a L{Deferred} that fires when every connection is gone or
            C{drain} has passed.
        """
        payload = encode_event(
            messages.dumps({"route": "shutdown", "args": final}), "shutdown"
        )
        self.stopping = True
        self._outbox.flush()
        transports = close_for_shutdown(
            list(self.sessions.values()), payload, self.retry, spread, self._random
        )
        self.terminate()
        return drained(self.clock, transports, drain)

    def stream_iterable(
        self,
        iterable: Iterable[Any] | AsyncIterable[Any],
        session_id: str | None = None,
        event: str | None = "message",
    ) -> Deferred[int]:
        """
        Send each item of C{iterable} as an event, one per reactor turn for a
        plain iterable, as they come for an async one; stop when the session
        (or, for all sessions, the endpoint) closes.

        @return: a L{Deferred} firing with the number of items sent.
        """
        name = None if event == "message" else event
        sessions = self.sessions
        return pump(
            iterable,
            lambda item: self.send(item, name, session_id),
            (lambda: session_id in sessions)
            if session_id is not None
            else lambda: not self.closed,
            self.clock,
        )

    # Calls from clients (the dispatcher and the resource call these)

    def caller_for(self, session: SSEClient | None, principal: Any = None) -> Caller:
        return Caller(
            session=session,
            principal=principal if session is None else session.principal,
            endpoint=self,
        )

    def sessions_from(self, address: str) -> int:
        """
        How many open sessions came from C{address}.
        """
        return self.streams.sessions_from(address)

    def take_call_token(self, key: str) -> bool:
        """
        Count one client call against C{key}'s rate (a session id, or C{@}
        and an address).

        @return: whether it is within C{Limits.calls_per_second}.
        """
        return self.rates.take(key, self.clock.seconds())

    def stats(self) -> Mapping[str, Any]:
        """
        What this endpoint holds and has done, for monitoring: plain values,
        cheap to compute.
        """
        return {
            "path": self.path,
            "sessions": len(self.sessions),
            "cluster_sessions": self.broker.session_count(self.path),
            "channels": {name: c.session_count for name, c in self.channels.items()},
            "dynamic_channels": self.channel_table.dynamic_count,
            "pending_calls": len(self.calls),
            **asdict(self.counters),
            "flushes": self._outbox.flushes,
            "call_latency": self.calls.latency.summary(),
        }
