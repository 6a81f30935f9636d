# -*- test-case-name: tests.test_session,tests.test_channel -*-
"""
One SSE path: its sessions, channels, pending calls and the public API that
the seed calls C{SSEChannelInfo} (L{SSEEndpoint}) and C{SSEClientInfo}
(L{SSEClient}).

The endpoint joins the lower layers: it opens sessions for the resource,
publishes channel events through the broker, fans delivered events out
through its outbox, and keeps the call table.  It knows twisted.web only as
the request a session wraps; parsing HTTP is the resource's job.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from . import _messages as messages
from ._auth import AllowAll, IAuthorizer
from ._broker import HistoryPolicy, IBroker, IDeliverySink, Replay, StoredEvent
from ._calls import CallTable, RemoteCallError, SessionClosed
from ._channel import Channel, ChannelSpec
from ._cors import CORSPolicy
from ._encoder import KEEPALIVE, encode_event, encode_retry
from ._graph import Caller, RouteGraph
from ._limits import Limits, TokenBucket
from ._messages import ProtocolError
from ._outbox import Outbox
from ._session import OverflowPolicy, SSESession
from ._stats import Counters

if TYPE_CHECKING:
    from ._resource import SSEResource

#: The request headers an open stream keeps by default: those that
#: C{twisted.web}'s combined access log writes when the stream ends.
KEPT_REQUEST_HEADERS: tuple[bytes, ...] = (b"user-agent", b"referer")

__all__ = ["ConnectionCallback", "SSEClient", "SSEEndpoint", "TooManyCalls"]

#: C{(client, endpoint, session_id, request)}, as the seed's callbacks.
ConnectionCallback = Callable[["SSEClient", "SSEEndpoint", str, Request], object]

#: The name of the channel every session belongs to.
DEFAULT_CHANNEL = "message"


class TooManyCalls(Exception):
    """
    A session has as many server-to-client calls waiting as its endpoint
    allows (C{Limits.max_pending_calls}).
    """


class SSEClient(SSESession):
    """
    A session together with the calls bound to it: the seed's
    C{SSEClientInfo}.  C{endpoint.sessions} maps ids to these.
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
        return self.endpoint._request_one(self.id, message, method, timeout)

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
        return self.endpoint._subscribe_one(self.id, route, callback, args)

    def unsubscribe(self, route: str, sub: int) -> Deferred[bool]:
        """
        End the client-side subscription C{sub} to C{route}.
        """
        return self.endpoint._unsubscribe_one(self.id, route, sub)

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
    @ivar calls: pending server-to-client calls.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        graph: RouteGraph,
        clock: IReactorTime,
        broker: IBroker,
        channels: Iterable[str | ChannelSpec] = (),
        on_connection: ConnectionCallback | None = None,
        on_close: Callable[[SSEEndpoint], object] | None = None,
        on_connection_close: ConnectionCallback | None = None,
        keepalive: float = 15.0,
        retry: int = 2000,
        history: int | HistoryPolicy = 0,
        dynamic_channels: bool = False,
        request_timeout: float | None = 30.0,
        max_backlog: int = 1 << 20,
        overflow: OverflowPolicy = "disconnect",
        authorizer: IAuthorizer | None = None,
        limits: Limits | None = None,
        cors: CORSPolicy | None = None,
        keep_request_headers: Iterable[bytes] | None = KEPT_REQUEST_HEADERS,
    ) -> None:
        from ._resource import SSEResource

        self.path = path
        self.graph = graph
        self.clock = clock
        self.broker = broker
        self.on_connection = on_connection
        self.on_close = on_close
        self.on_connection_close = on_connection_close
        self.keepalive = keepalive
        self.retry = retry
        self.history = (
            history if isinstance(history, HistoryPolicy) else HistoryPolicy(history)
        )
        self.dynamic_channels = dynamic_channels
        self.max_backlog = max_backlog
        self.overflow: OverflowPolicy = overflow
        self.authorizer: IAuthorizer = (
            authorizer if authorizer is not None else AllowAll()
        )
        self.limits = limits if limits is not None else Limits()
        self.cors = cors if cors is not None else CORSPolicy()
        self.keep_request_headers = (
            None if keep_request_headers is None else tuple(keep_request_headers)
        )
        self.stopping = False
        self._per_address: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.sessions: dict[str, SSEClient] = {}
        self.channels: dict[str, Channel] = {}
        self.calls = CallTable(
            clock,
            request_timeout,
            prefix=f"{broker.node_id}." if broker.clustered else "",
        )
        self.closed = False
        self.counters = Counters()
        self._outbox = Outbox(clock, self.counters)
        self._keepalive_loop: LoopingCall | None = None
        self._preamble = encode_retry(retry)
        # Client-side routes the server subscribed to, by (session, route).
        self._client_subscriptions: dict[tuple[str, str], Callable[[Any], object]] = {}
        # The same, by session: closing a session touches only its own.
        self._client_routes: dict[str, set[str]] = {}
        # Server routes each session subscribed to: session -> [(route, sub)].
        self._server_subscriptions: dict[str, list[tuple[str, int]]] = {}
        self.default_channel = self.add_channel(ChannelSpec(DEFAULT_CHANNEL))
        for spec in channels:
            self.add_channel(spec)
        self.resource: SSEResource = SSEResource(self)
        broker.attach(path, self)

    def __repr__(self) -> str:
        return f"<SSEEndpoint {self.path!r} sessions={len(self.sessions)}>"

    # Channels

    def add_channel(self, spec: str | ChannelSpec) -> Channel:
        """
        Add a channel (or return the one of that name).
        """
        if isinstance(spec, str):
            spec = ChannelSpec(spec)
        existing = self.channels.get(spec.name)
        if existing is not None:
            return existing
        if not spec.name or "," in spec.name:
            raise ValueError(f"bad channel name: {spec.name!r}")
        history = spec.history
        if history is None:
            policy = self.history
        elif isinstance(history, HistoryPolicy):
            policy = history
        else:
            policy = HistoryPolicy(history, self.history.age)
        if spec.event is not None:
            event: str | None = spec.event
        else:
            event = None if spec.name == DEFAULT_CHANNEL else spec.name
        if event is not None:
            encode_event("", event)  # refuse a name the wire cannot carry
        channel = Channel(self, spec.name, event, policy)
        self.channels[spec.name] = channel
        return channel

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
        self._outbox.to_members(channel.members, payload)

    def flushed(self) -> Deferred[None]:
        """
        Fire once every event this endpoint published has its place in the
        order every node delivers (at once with the in-memory broker).  A
        route that broadcasts and must not answer before the event is
        ordered ahead of later ones awaits it.
        """
        return self.broker.flushed(self.path)

    def deliver_to_session(self, session_id: str, payload: bytes) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        self._outbox.to_session(session, payload)
        return True

    def handle_forwarded(
        self, body: Any, header_session: str | None, principal: Any
    ) -> Deferred[tuple[int, Any]]:
        from ._dispatch import dispatch

        def answered(answer: Any) -> tuple[int, Any]:
            return answer.status, answer.body if answer.has_body else None

        def refused(failure: Failure) -> tuple[int, Any]:
            error = failure.value
            if not isinstance(error, ProtocolError):
                self._log.failure("Forwarded call failed", failure=failure)
                error = ProtocolError(500, "route_failed", "internal error")
            return error.status, {
                "error": {"code": error.code, "message": error.message}
            }

        return dispatch(
            self, body, header_session, principal, forwarded=True
        ).addCallbacks(answered, refused)

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
        return self.calls.settle(callback_id, session_id, args) or self.deliver_update(
            session_id, callback_id, args
        )

    def remote_session_closed(self, session_id: str) -> None:
        if session_id in self.sessions:
            return
        self._forget_client_subscriptions(session_id)
        self.calls.fail_session(session_id, "closed on its node")

    def _forget_client_subscriptions(self, session_id: str) -> None:
        for route in self._client_routes.pop(session_id, ()):
            self._client_subscriptions.pop((session_id, route), None)

    # The session hub

    def _enqueue(self, session: SSESession, payload: bytes) -> None:
        self._outbox.to_session(session, payload)

    def _flush(self) -> None:
        self._outbox.flush()

    def _open(
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
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-transform")
        request.setHeader(b"x-accel-buffering", b"no")
        # Twisted has already set "Connection: close" for a client that asked
        # to close; do not contradict it.
        if request.clientproto == b"HTTP/1.1" and not request.responseHeaders.hasHeader(
            b"connection"
        ):
            request.setHeader(b"connection", b"keep-alive")
        # Headers go out now; the session's write path depends on them
        # (chunked or not).
        request.write(b"")
        client = SSEClient(
            self,
            request,
            last_event_id=last_event_id,
            principal=principal,
            max_backlog=self.max_backlog,
            policy=self.overflow,
        )
        preamble = self._preamble + encode_event(messages.set_id(client.id), "message")
        channels = [self.default_channel]
        channels.extend(self.channels[name] for name in channel_names)
        pending: Deferred[Replay] | None = None
        if last_event_id is not None:
            replay = self.broker.replay(
                self.path,
                [(c.name, c.history) for c in channels if c.history.enabled],
                last_event_id,
            )
            replayed: list[Replay] = []

            def keep(result: Replay) -> Replay:
                replayed.append(result)
                return result

            replay.addCallback(keep)
            if replayed:
                preamble += self._encode_replay(replayed[0], last_event_id)
            else:
                pending = replay
        client._write(preamble)
        if pending is not None:
            # A broker that must ask the network: live events wait in the
            # session's backlog until the replay is written before them (the
            # broker answers up to the last event this node has delivered).
            client._replaying = True

            def replayed_late(result: Replay) -> None:
                client._end_replay(self._encode_replay(result, last_event_id))

            def replay_failed(failure: Failure) -> None:
                self._log.failure("Replay failed", failure=failure)
                client._end_replay(self._encode_replay(Replay((), True), last_event_id))

            pending.addCallbacks(replayed_late, replay_failed)
        request.registerProducer(client, True)
        request.notifyFinish().addBoth(client._finished)
        self._outbox.joined(client)
        self.sessions[client.id] = client
        self.counters.sessions_opened += 1
        client.address = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        for channel in channels:
            channel.register(client)
        self.broker.session_opened(self.path, client.id)
        self._start_keepalive()
        self._log.info(
            "Session {session} opened on {path} from {peer}",
            session=client.id[:8],
            path=self.path,
            peer=request.getClientAddress(),
        )
        if self.on_connection is not None:
            self._callback(self.on_connection, client, request)
        self._slim(request)
        return client

    def _slim(self, request: Request) -> None:
        """
        Let go of what an open stream's request no longer needs: its response
        headers (on the wire already), its empty body, and the request
        headers other than C{keep_request_headers} (L{Headers} matches
        names in any case).  Held by ten thousand idle streams, these were a
        fifth of what each one cost.
        """
        if not request.startedWriting:
            return
        request.responseHeaders = Headers()
        content = request.content
        if content is not None:
            content.close()
            request.content = None
        keep = self.keep_request_headers
        if keep is not None:
            received = request.requestHeaders
            kept = Headers()
            for name in keep:
                values = received.getRawHeaders(name)
                if values is not None:
                    kept.setRawHeaders(name, values)
            request.requestHeaders = kept

    def _encode_replay(self, replay: Replay, last_event_id: str | None) -> bytes:
        parts = []
        if replay.reset:
            parts.append(
                encode_event(
                    messages.dumps(
                        {"route": "reset", "args": {"lastEventId": last_event_id}}
                    ),
                    "reset",
                )
            )
        for stored in replay.events:
            channel = self.channels.get(stored.channel)
            name = stored.event or (channel.event if channel is not None else None)
            parts.append(encode_event(stored.data, name, stored.id))
        return b"".join(parts)

    def _callback(
        self, callback: ConnectionCallback, client: SSEClient, request: Request
    ) -> None:
        try:
            callback(client, self, client.id, request)
        except Exception:
            self._log.failure(
                "Connection callback {callback} failed", callback=callback
            )

    def _session_closed(self, session: SSESession, reason: Failure | None) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.counters.sessions_closed += 1
        for name in list(session.channels):
            channel = self.channels.get(name)
            if channel is not None:
                channel.deregister(session)
        self.broker.session_closed(self.path, session.id)
        address = session.address
        left = self._per_address.get(address, 0) - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)
        self._buckets.pop(session.id, None)
        for route, sub in self._server_subscriptions.pop(session.id, ()):
            self.graph.unsubscribe(route, sub)
        self._forget_client_subscriptions(session.id)
        self.calls.fail_session(session.id, session.close_reason or "closed")
        if not self.sessions:
            self._stop_keepalive()
        self._log.info(
            "Session {session} closed: {why}",
            session=session.id[:8],
            why=session.close_reason,
        )
        if self.on_connection_close is not None:
            assert isinstance(session, SSEClient)
            self._callback(self.on_connection_close, session, session.http_request)

    # Keep-alive: one timer per endpoint, running only while it has sessions.

    def _start_keepalive(self) -> None:
        if self._keepalive_loop is None and self.keepalive > 0:
            loop = self._keepalive_loop = LoopingCall(self._ping)
            loop.clock = self.clock
            loop.start(self.keepalive, now=False)

    def _stop_keepalive(self) -> None:
        loop, self._keepalive_loop = self._keepalive_loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _ping(self) -> None:
        self._outbox.to_members(self.default_channel.members, KEEPALIVE)

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
        if session_id is not None:
            return self._request_one(session_id, message, method, timeout)
        return {
            sid: self._request_one(sid, message, method, timeout)
            for sid in list(self.sessions)
        }

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
        if session_id is not None:
            return self._subscribe_one(session_id, route, callback, args)
        return {
            sid: self._subscribe_one(sid, route, callback, args)
            for sid in list(self.sessions)
        }

    def unsubscribe(
        self, route: str, sub: int, session_id: str | None = None
    ) -> Deferred[bool] | dict[str, Deferred[bool]]:
        """
        End a subscription made with L{subscribe}.
        """
        if session_id is not None:
            return self._unsubscribe_one(session_id, route, sub)
        return {
            sid: self._unsubscribe_one(sid, route, sub) for sid in list(self.sessions)
        }

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
        self._stop_keepalive()
        self.broker.detach(self.path)
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                self._log.failure("on_close of {path} failed", path=self.path)
        return True

    def shutdown(self, final: Any = None, drain: float = 3.0) -> Deferred[None]:
        """
        Close every stream after a last C{shutdown} event, for a process that
        is stopping, and drop its connection once its bytes are written.

        @param drain: seconds to wait for slow clients to take their last
            bytes before the connections are cut.
        @return: a L{Deferred} that fires when every connection is gone or
            C{drain} has passed.
        """
        payload = encode_event(
            messages.dumps({"route": "shutdown", "args": final}), "shutdown"
        )
        self.stopping = True
        self._outbox.flush()
        transports = []
        for session in list(self.sessions.values()):
            session.close_reason = "server shutting down"
            channel = session.http_request.channel
            session.close(payload)
            transport = getattr(channel, "transport", None)
            if isinstance(channel, HTTPChannel) and transport is not None:
                # loseConnection writes what is buffered, then closes.  The
                # channel's own unregisters it as the transport's producer
                # first: TLS will not send its close alert while one is
                # registered, so the transport's alone waits out the drain.
                channel.loseConnection()
                transports.append(transport)
        self.terminate()
        return _drained(self.clock, transports, drain)

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
        event_name = None if event == "message" else event

        def open_() -> bool:
            if session_id is None:
                return not self.closed
            return session_id in self.sessions

        if isinstance(iterable, AsyncIterable):

            async def pump() -> int:
                count = 0
                async for item in iterable:
                    if not open_():
                        break
                    self.send(item, event_name, session_id)
                    count += 1
                return count

            return Deferred.fromCoroutine(pump())

        iterator = iter(iterable)
        done: Deferred[int] = Deferred()
        count = 0

        def step() -> None:
            nonlocal count
            if not open_():
                done.callback(count)
                return
            try:
                item = next(iterator)
            except StopIteration:
                done.callback(count)
                return
            except Exception:
                done.errback()
                return
            self.send(item, event_name, session_id)
            count += 1
            self.clock.callLater(0, step)

        step()
        return done

    # Calls, one session at a time

    def _request_one(
        self,
        session_id: str,
        message: Any,
        method: str | None,
        timeout: float | None,
    ) -> Deferred[Any]:
        if session_id not in self.sessions and not self.broker.clustered:
            return fail(SessionClosed(f"no open session {session_id[:6]}…"))
        local = self.sessions.get(session_id)
        if local is not None and not local.is_connected:
            # Aborted or lost, not yet reported: the envelope would be dropped.
            return fail(SessionClosed(f"session {session_id[:6]}… is closing"))
        limit = self.limits.max_pending_calls
        if limit is not None and self.calls.pending_for(session_id) >= limit:
            return fail(TooManyCalls(f"{limit} calls are waiting on that session"))
        if method is not None and isinstance(message, dict):
            message = {**message, "method": method}
        callback_id, deferred = self.calls.open(session_id, timeout)
        sent = self.send(
            messages.run_request(message, self.path, callback_id, session_id),
            session_id=session_id,
        )
        if not sent:
            self.calls.fail_session(session_id, "is not open anywhere")
        return deferred

    def _subscribe_one(
        self,
        session_id: str,
        route: str,
        callback: Callable[[Any], object],
        args: Any,
    ) -> Deferred[int]:
        message = messages.route_call(
            "subscribeSSE", [route, self.path, args, None, None, session_id]
        )
        deferred = self._request_one(session_id, message, None, None)

        def subscribed(sub: Any) -> Any:
            # On a cluster the session may be another node's: its updates
            # come through settle_forwarded, and remote_session_closed ends
            # the subscription.
            if session_id in self.sessions or self.broker.clustered:
                self._client_subscriptions[(session_id, route)] = callback
                self._client_routes.setdefault(session_id, set()).add(route)
            return sub

        return deferred.addCallback(subscribed)

    def _unsubscribe_one(self, session_id: str, route: str, sub: int) -> Deferred[bool]:
        self._client_subscriptions.pop((session_id, route), None)
        routes = self._client_routes.get(session_id)
        if routes is not None:
            routes.discard(route)
            if not routes:
                del self._client_routes[session_id]
        deferred = self._request_one(
            session_id, messages.route_call("unsubscribe", [route, sub]), None, None
        )
        return deferred.addCallback(bool)

    # Calls from clients (the dispatcher calls these)

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
        return self._per_address.get(address, 0)

    def take_call_token(self, key: str) -> bool:
        """
        Count one client call against C{key}'s rate (a session id, or C{@}
        and an address).

        @return: whether it is within C{Limits.calls_per_second}.
        """
        rate = self.limits.calls_per_second
        if rate is None:
            return True
        bucket = self._buckets.get(key)
        now = self.clock.seconds()
        if bucket is None:
            if len(self._buckets) >= 100_000:
                self._prune_buckets(now)
            bucket = self._buckets[key] = TokenBucket(rate, self.limits.call_burst)
        return bucket.take(now)

    def _prune_buckets(self, now: float) -> None:
        """
        Forget the buckets of addresses that have been quiet long enough to
        be full again: forgetting them changes nothing.  Sessions' buckets go
        with their sessions.
        """
        rate = self.limits.calls_per_second or 1.0
        refill = self.limits.call_burst / rate
        for key in [
            k
            for k, b in self._buckets.items()
            if k.startswith("@") and now - b.stamp >= refill
        ]:
            del self._buckets[key]

    def deliver_update(self, session_id: str, route: str, args: Any) -> bool:
        """
        A client's update of a route the server subscribed to on it.
        """
        callback = self._client_subscriptions.get((session_id, route))
        if callback is None:
            return False
        try:
            callback(args)
        except Exception:
            self._log.failure("Subscriber of client route {route} failed", route=route)
        return True

    def subscribe_session(self, session: SSEClient, route: str) -> int:
        """
        Push every output of server route C{route} to C{session}.
        """
        session_id = session.id
        limit = self.limits.max_subscriptions
        owned = self._server_subscriptions.get(session_id, [])
        if limit is not None and len(owned) >= limit:
            raise ProtocolError(429, "rate_limited", f"at most {limit} subscriptions")

        def forward(output: Any) -> None:
            self.send(messages.reply(output, route), session_id=session_id)

        sub = self.graph.subscribe(route, forward)
        self._server_subscriptions.setdefault(session_id, []).append((route, sub))
        return sub

    def unsubscribe_session(self, session: SSEClient, route: str, sub: int) -> bool:
        """
        End C{session}'s subscription C{sub}; only its own.
        """
        owned = self._server_subscriptions.get(session.id, [])
        if (route, sub) not in owned:
            return False
        owned.remove((route, sub))
        return self.graph.unsubscribe(route, sub)

    def stats(self) -> Mapping[str, Any]:
        """
        What this endpoint holds and has done, for monitoring: plain values,
        cheap to compute.
        """
        counters = self.counters
        latency = self.calls.latency
        return {
            "path": self.path,
            "sessions": len(self.sessions),
            "cluster_sessions": self.broker.session_count(self.path),
            "channels": {name: c.session_count for name, c in self.channels.items()},
            "pending_calls": len(self.calls),
            "events_published": counters.events_published,
            "deliveries": counters.deliveries,
            "writes": counters.writes,
            "bytes_sent": counters.bytes_sent,
            "events_dropped": counters.events_dropped,
            "sessions_opened": counters.sessions_opened,
            "sessions_closed": counters.sessions_closed,
            "slow_disconnects": counters.slow_disconnects,
            "refusals": counters.refusals,
            "route_failures": counters.route_failures,
            "flushes": self._outbox.flushes,
            "call_latency": {
                "count": latency.count,
                "sum": latency.total,
                "buckets": latency.cumulative(),
            },
        }


def _drained(
    clock: IReactorTime, transports: list[Any], limit: float
) -> Deferred[None]:
    """
    Fire when none of C{transports} is connected, or after C{limit} seconds.
    """
    done: Deferred[None] = Deferred()
    deadline = clock.seconds() + limit

    def check() -> None:
        transports[:] = [t for t in transports if getattr(t, "connected", False)]
        if not transports or clock.seconds() >= deadline:
            for transport in transports:
                abort = getattr(transport, "abortConnection", None)
                if abort is not None:
                    abort()
            done.callback(None)
            return
        clock.callLater(0.02, check)

    check()
    return done
