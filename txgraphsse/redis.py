# -*- test-case-name: tests.test_redis -*-
"""
A Redis backplane: several processes ("nodes") serve the same endpoints, and
L{RedisBroker} makes them one.

Every node publishes channel events through Redis and delivers what comes
back on the bus, so every node's sessions get every event once and in one
order; event ids, history and replay live in Redis, so a client may
reconnect to any node; pushes, forwarded C{POST}s and replies find the node
that holds the session they name.  While Redis is away, each node keeps
serving its own sessions, and writes what they got into history once Redis
is back.

This module owns the Redis keys and channels, the link to Redis and what
happens while it is down.  It knows endpoint keys, channel names and session
ids, and speaks to endpoints only through L{IDeliverySink}: never HTTP,
sessions or encoding.  Redis must be private to the cluster: whoever can
publish on its channels can act as any node.

Keys and channels, for prefix C{P}, endpoint key C{K} (its path) and node
C{N}::

    P:K:seq            the sequence of events with history (INCR)
    P:K:epoch          the epoch of event ids, made once, shared by all nodes
    P:K:h:CHANNEL      a stream per channel with history, entry ids "SEQ-0"
    P:K:evicted        hash: channel -> id of the newest entry trimmed off
    P:K:channels       set: the channels that have a stream
    P:K:bus            pub/sub: every published event, in sequence order
    P:K:where          hash: session id -> the node that holds it
    P:K:n:N            set: N's sessions of K
    P:nk:N             set: the keys N has sessions of
    P:nodes            set: the nodes; P:alive:N expires unless N refreshes it
    P:node:N           pub/sub: messages for N (push, forward, answers)
    P:all              pub/sub: messages for every node (closed, settle)

How it holds together:

  - Order: one connection sends every command, and one Lua script per event
    takes its sequence number, stores it and publishes it, so the bus
    carries events in sequence order and every node (the publisher too)
    delivers them from the bus, in that order.
  - Replay: a node answers from the streams up to the last event it has
    delivered; later ones reach the reconnecting session live.  (A client
    that moves to a node whose bus lags behind the one it left may get the
    few events in between twice.)  After each
    (re)subscription a marker published on the bus tells a node where it
    stands, and what it missed while away is delivered from the streams
    (as far as history reaches; it logs when it does not).
  - Outages: while Redis is away, events reach this node's sessions at
    once, without ids; those with history are kept (up to
    C{outage_buffer}) and written when Redis is back, so that replay covers
    the gap and the other nodes' sessions get them.  An event in flight
    when the link broke, whose outcome is unknown, is kept too: should
    Redis have stored it after all, it is stored twice.
  - Nodes: each refreshes a key that expires after C{node_ttl}; a node
    whose key expired is dead to the others, which fail their calls to its
    sessions and forget them.  A node that comes back registers again.

Limits: Redis must keep its data for ids to stay meaningful (with
C{appendonly yes}; C{appendfsync always} where losing the last second on a
crash matters); after a loss, a new epoch makes clients reset.  Requires
Redis 6.2 or later (exclusive C{XRANGE}), and one Redis, not Redis Cluster
(scripts touch keys they compute).
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import define, field
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError
from txredisapi import ResponseError
from zope.interface import implementer

from ._broker import (
    HistoryPolicy,
    IBroker,
    IDeliverySink,
    Replay,
    StoredEvent,
    parse_event_id,
)
from ._redis._protocol import command_protocol, subscriber_protocol
from ._redis._scripts import CLOSED as _CLOSED
from ._redis._scripts import DIRECT as _DIRECT
from ._redis._scripts import HEARTBEAT as _HEARTBEAT
from ._redis._scripts import LEAVE as _LEAVE
from ._redis._scripts import OPENED as _OPENED
from ._redis._scripts import PUBLISH as _PUBLISH
from ._redis._scripts import REGISTER as _REGISTER
from ._redis._scripts import REPLAY as _REPLAY
from ._redis._scripts import SCRIPTS as _SCRIPTS
from ._redis._scripts import SYNC as _SYNC
from ._redis._scripts import Script as _Script

__all__ = ["RedisBroker"]


_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _seq_of(entry_id: Any) -> int:
    """
    The sequence number of a stream entry id C{"SEQ-0"} (0 for none).
    """
    if not isinstance(entry_id, str) or not entry_id:
        return 0
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@define(eq=False)
class _Outgoing:
    """
    An event this node publishes, until the bus brings it back.
    """

    key: str
    channel: str
    event: str | None
    data: str
    time: float
    #: The channel's history size (0: no history).
    size: int
    #: Whether local sessions got it already (kept through an outage).
    buffered: bool = False
    #: This node's publish number, to match it with the bus.
    n: int = 0
    #: Its sequence number and epoch, once Redis answered.
    seq: int | None = None
    epoch: str = ""
    done: bool = False


@define(eq=False)
class _Key:
    """
    What this node knows of one endpoint key.
    """

    key: str
    sink: IDeliverySink | None = None
    sessions: set[str] = field(factory=set)
    epoch: str | None = None
    #: The sequence number of the last event this node's bus brought.
    delivered: int = 0
    #: Whether the bus subscription of the current link is confirmed.
    ready: bool = False
    #: Whether bus events are delivered as they come (synced on this link).
    live: bool = False
    #: C{delivered} when the previous link went down: catch up from there.
    sync_from: int | None = None
    token: int = 0
    held: list[dict[str, Any]] = field(factory=list)
    marker_at: int | None = None
    marker_seq: int = 0
    sync_reply: list[Any] | None = None
    #: Sequence numbers delivered here while the bus could not bring them.
    outside: set[int] = field(factory=set)
    #: Events published before the bus subscription was confirmed.
    waiting: list[_Outgoing] = field(factory=list)
    #: Events kept through an outage, written but not back from the bus:
    #: until they are, a replay would miss them (this node's sessions do
    #: not get them from the bus again), so replays wait.
    flushing: int = 0
    replays: list[
        tuple[Deferred[Replay], list[tuple[str, HistoryPolicy]], str | None]
    ] = field(factory=list)
    #: Sessions of this key on the other live nodes, at the last heartbeat.
    others: int = 0


@define(eq=False)
class _Request:
    """
    A question to another node (a forwarded C{POST} or a reply to settle),
    waiting for its answer.
    """

    deferred: Deferred[Any]
    timer: IDelayedCall
    #: The answer when no answer can come.
    fallback: Any
    #: How many answers to wait for (settle): L{None} until Redis says.
    expected: int | None = None
    answers: int = 0


@implementer(IBroker)
class RedisBroker:
    """
    An L{IBroker} over Redis, for a cluster of nodes behind a load balancer.

    Give each node's L{txgraphsse.SSEBackend} its own C{RedisBroker} with the
    same C{url} and C{prefix}, and call L{start} (L{txgraphsse.SSEService}
    does, and L{txgraphsse.SSEBackend.shutdown} calls L{stop}).

    @ivar node_id: this node's name among its peers (random by default).
    @ivar clustered: always C{True}.
    @ivar reconnect_initial: seconds before the first attempt to reconnect;
        each failed attempt doubles it, up to C{reconnect_max}.
    """

    clustered = True
    reconnect_initial = 0.25
    reconnect_max = 10.0
    connect_timeout = 5.0
    settle_timeout = 2.0

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "graphsse",
        node_id: str | None = None,
        heartbeat: float = 2.0,
        node_ttl: float = 6.0,
        outage_buffer: int = 10_000,
        forward_timeout: float = 10.0,
    ) -> None:
        """
        @param reactor: a reactor with TCP and time.
        @param url: C{redis://[user:password@]host[:port][/db]}.
        @param prefix: what every key and channel name starts with.
        @param node_id: this node's name; it must be unique in the cluster
            and contain no C{.}, C{:} or whitespace.
        @param heartbeat: seconds between heartbeats.
        @param node_ttl: seconds without a heartbeat after which the other
            nodes count this node dead and fail their calls to its sessions.
        @param outage_buffer: events with history kept while Redis is away,
            to write into history once it is back; the oldest go first.
        @param forward_timeout: seconds a forwarded C{POST} waits for the
            node holding its session (then C{503 unavailable}).
        """
        if node_id is None:
            node_id = secrets.token_hex(4)
        if not node_id or any(c in node_id for c in ".: \t\r\n"):
            raise ValueError(f"bad node id: {node_id!r}")
        if node_ttl <= heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL: {url!r}")
        self._clock = reactor
        self.url = url
        self.prefix = prefix
        self.node_id = node_id
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        db = parts.path.strip("/")
        self._db = int(db) if db else 0
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._heartbeat = heartbeat
        self._ttl_ms = int(node_ttl * 1000)
        self._forward_timeout = forward_timeout
        self._node_channel = f"{prefix}:node:{node_id}"
        self._all_channel = f"{prefix}:all"

        self._endpoints: dict[str, _Key] = {}
        self._bus_keys: dict[str, str] = {}
        self._running = False
        self._up = False
        self._cmd: Any = None
        self._sub: Any = None
        #: Whether this node registered its sessions on the current link.
        self._joined = False
        self._attempt: Deferred[None] | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._down_since: float | None = None
        self._ever_up = False
        self._started: list[Deferred[None]] = []
        self._heart: LoopingCall | None = None
        self._beat_pending: Deferred[None] | None = None
        self._beat_sent = 0.0
        self._buffer: deque[_Outgoing] = deque(maxlen=max(outage_buffer, 0))
        self._dropped = 0
        self._published = 0
        self._inflight: deque[_Outgoing] = deque()
        self._requests: dict[str, _Request] = {}
        self._live: set[str] = set()
        #: The node holding each remote session this node pushed to.
        self._owners: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"<RedisBroker {self.node_id} {self.url} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether this node is linked to Redis, and so to its peers.
        """
        return self._up

    # Keys and names

    def _k(self, key: str, name: str) -> str:
        return f"{self.prefix}:{key}:{name}"

    def _state(self, key: str) -> _Key:
        state = self._endpoints.get(key)
        if state is None:
            state = self._endpoints[key] = _Key(key)
        return state

    # Life: start, stop, and the link to Redis

    def start(self) -> Deferred[None]:
        """
        Connect to Redis, and keep reconnecting whenever the link is lost.
        Until it is up, and whenever it is down, events reach this node's
        sessions only.

        @return: a L{Deferred} that fires once the link is first up (or
            when L{stop} is called first); it never fails.
        """
        waiting: Deferred[None] = Deferred()
        if self._up:
            waiting.callback(None)
        else:
            self._started.append(waiting)
        if not self._running:
            self._running = True
            self._connect()
        return waiting

    def stop(self) -> Deferred[None]:
        """
        Leave the cluster: unregister this node's sessions, close the
        connections and stop every timer.
        """
        return self._shutdown(leave=True)

    def _vanish(self) -> Deferred[None]:
        """
        Stop as a crash would look to the other nodes: drop the connections
        at once and unregister nothing.  For tests.
        """
        return self._shutdown(leave=False)

    def refresh(self) -> Deferred[None]:
        """
        Run a heartbeat now: refresh L{session_count} and find dead nodes.
        """
        if not self._up:
            return succeed(None)
        return self._beat_once()

    def _shutdown(self, leave: bool) -> Deferred[None]:
        if not self._running:
            return succeed(None)
        self._running = False
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        started, self._started = self._started, []
        for waiting in started:
            waiting.callback(None)
        heart, self._heart = self._heart, None
        if heart is not None and heart.running:
            heart.stop()
        if self._up and leave:
            done = self._script(_LEAVE, [], [self.prefix, self.node_id])
            done.addTimeout(self.connect_timeout, self._clock)
            done.addErrback(lambda _: None)
        else:
            done = succeed(None)

        def close(_: object) -> Deferred[None]:
            cmd, sub = self._cmd, self._sub
            self._cmd = self._sub = None
            self._teardown()
            closing = []
            for proto in (cmd, sub):
                if proto is not None and proto.transport is not None:
                    closing.append(proto.whenDisconnected())
                    if leave:
                        proto.transport.loseConnection()
                    else:
                        proto.transport.abortConnection()
            return gatherResults(closing).addBoth(lambda _: None)

        return done.addBoth(close)

    def _endpoint(self) -> HostnameEndpoint:
        return HostnameEndpoint(
            self._clock, self._host, self._port, timeout=self.connect_timeout
        )

    def _connect(self) -> None:
        self._retry = None
        attempt = self._attempt = Deferred.fromCoroutine(self._open_link())
        attempt.addTimeout(2 * self.connect_timeout, self._clock)
        attempt.addCallbacks(self._linked, self._link_failed)

    async def _login(self, proto: Any, select: bool) -> None:
        if self._password is not None:
            if self._username is not None:
                await proto.execute_command("AUTH", self._username, self._password)
            else:
                await proto.execute_command("AUTH", self._password)
        if select and self._db:
            await proto.execute_command("SELECT", self._db)

    async def _open_link(self) -> None:
        cmd = await connectProtocol(self._endpoint(), command_protocol(self))
        self._cmd = cmd
        await self._login(cmd, select=True)
        sub = await connectProtocol(self._endpoint(), subscriber_protocol(self))
        self._sub = sub
        await self._login(sub, select=False)
        await gatherResults(
            [cmd.execute_command("SCRIPT", "LOAD", s.text) for s in _SCRIPTS],
            consumeErrors=True,
        )
        await sub.subscribe(self._node_channel)
        await sub.subscribe(self._all_channel)
        await self._beat_once()
        self._joined = True
        self._register()
        await gatherResults(
            [self._subscribe_key(key) for key in self._endpoints], consumeErrors=True
        )

    def _register(self) -> None:
        """
        Tell Redis which sessions this node holds, all of them.
        """
        for key, state in list(self._endpoints.items()):
            self._fire(
                self._script(
                    _REGISTER, [], [self.prefix, self.node_id, key, *state.sessions]
                )
            )

    def _linked(self, _: object) -> None:
        self._attempt = None
        self._failures = 0
        written = len(self._buffer)
        dropped, self._dropped = self._dropped, 0
        while self._buffer:
            self._send(self._buffer.popleft())
        self._up = True
        heart = self._heart = LoopingCall(self._beat)
        heart.clock = self._clock
        heart.start(self._heartbeat, now=False)
        if self._down_since is not None:
            self._log.info(
                "Redis at {url} is back after {seconds:.1f} s: wrote {written}"
                " events kept meanwhile, lost {dropped}",
                url=self.url,
                seconds=self._clock.seconds() - self._down_since,
                written=written,
                dropped=dropped,
            )
        elif not self._ever_up:
            self._log.info(
                "Linked to Redis at {url} as node {node}",
                url=self.url,
                node=self.node_id,
            )
        self._down_since = None
        self._ever_up = True
        started, self._started = self._started, []
        for waiting in started:
            waiting.callback(None)

    def _link_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, FirstError):
            failure = failure.value.subFailure
        self._attempt = None
        cmd, sub = self._cmd, self._sub
        self._cmd = self._sub = None
        for proto in (cmd, sub):
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()
        self._teardown()
        if not self._running:
            return
        if self._down_since is None:
            self._down_since = self._clock.seconds()
            self._log.warn(
                "Redis at {url} is unreachable ({why}); serving this node's"
                " sessions only, and retrying",
                url=self.url,
                why=failure.getErrorMessage() or type(failure.value).__name__,
            )
        delay = min(self.reconnect_max, self.reconnect_initial * 2**self._failures)
        self._failures = min(self._failures + 1, 30)
        self._retry = self._clock.callLater(
            delay * random.uniform(0.8, 1.2), self._connect
        )

    def lost(self, proto: object) -> None:
        """
        A connection closed (C{proto}'s C{connectionLost}).
        """
        if proto is self._cmd:
            self._cmd = None
        elif proto is self._sub:
            self._sub = None
        else:
            return
        if self._attempt is not None:
            self._attempt.cancel()
            return
        if not self._up:
            return
        self._log.warn(
            "Lost Redis at {url}; serving this node's sessions only, and reconnecting",
            url=self.url,
        )
        self._down_since = self._clock.seconds()
        self._link_failed(Failure(RedisConnectionError("connection lost")))

    def _teardown(self) -> None:
        """
        The link is down: deliver here what the bus will not bring, and
        answer everything that waited for Redis.
        """
        self._up = False
        self._joined = False
        heart, self._heart = self._heart, None
        if heart is not None and heart.running:
            heart.stop()
        self._beat_pending = None
        self._bus_keys.clear()
        inflight, self._inflight = self._inflight, deque()
        for out in inflight:
            if out.done:
                continue
            out.done = True
            state = self._endpoints.get(out.key)
            if out.buffered:
                if out.seq is None:
                    self._keep(out)
            elif out.seq is None:
                self._deliver_here(state, out)
                self._keep(out)
            elif state is not None:
                if out.seq > 0:
                    state.outside.add(out.seq)
                self._deliver(state, self._stored(out, out.seq, out.epoch))
        for state in self._endpoints.values():
            if state.live:
                state.sync_from = state.delivered
            state.ready = state.live = False
            state.flushing = 0
            state.held = []
            state.marker_at = None
            state.sync_reply = None
            waiting, state.waiting = state.waiting, []
            for out in waiting:
                self._deliver_here(state, out)
                self._keep(out)
            replays, state.replays = state.replays, []
            for deferred, _, _ in replays:
                deferred.callback(Replay((), True))
        requests, self._requests = self._requests, {}
        for request in requests.values():
            request.timer.cancel()
            request.deferred.callback(request.fallback)

    # Sending commands

    def _call(self, *args: Any) -> Deferred[Any]:
        cmd = self._cmd
        if cmd is None:
            return fail(RedisConnectionError("Not connected"))
        try:
            result: Deferred[Any] = cmd.execute_command(*args)
        except Exception:
            return fail()
        return result

    def _script(
        self, script: _Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Deferred[Any]:
        def missing(failure: Failure) -> Any:
            if failure.check(ResponseError) and str(failure.value).startswith(
                "NOSCRIPT"
            ):
                return self._call("EVAL", script.text, len(keys), *keys, *args)
            return failure

        return self._call("EVALSHA", script.sha, len(keys), *keys, *args).addErrback(
            missing
        )

    def _fire(self, result: Deferred[Any]) -> None:
        """
        Send and forget: log what fails, except a lost link.
        """

        def failed(failure: Failure) -> None:
            if not failure.check(RedisConnectionError, CancelledError):
                self._log.failure("A Redis command failed", failure=failure)

        result.addErrback(failed)

    def _tell(self, channel: str, message: dict[str, Any]) -> Deferred[Any]:
        return self._call("PUBLISH", channel, _json.encode(message))

    # Heartbeat

    def _beat(self) -> None:
        if self._beat_pending is not None:
            # A late answer may be waiting to be read (the reactor was busy);
            # only a silence longer than node_ttl means Redis hangs.
            waited = self._clock.seconds() - self._beat_sent
            if waited < self._ttl_ms / 1000:
                return
            self._log.warn(
                "Redis at {url} did not answer for {seconds:.1f} s; reconnecting",
                url=self.url,
                seconds=waited,
            )
            for proto in (self._cmd, self._sub):
                if proto is not None and proto.transport is not None:
                    proto.transport.abortConnection()
            return
        self._fire(self._beat_once())

    def _beat_once(self) -> Deferred[None]:
        keys = list(self._endpoints)
        beat = self._script(
            _HEARTBEAT, [], [self.prefix, self.node_id, self._ttl_ms, *keys]
        )
        checks: list[Deferred[Any]] = [beat.addCallback(self._beaten, keys)]
        sub = self._sub
        if sub is not None and sub.connected:
            checks.append(sub.execute_command("PING"))
        pending: Deferred[None] = gatherResults(checks, consumeErrors=True).addCallback(
            lambda _: None
        )
        self._beat_pending = pending
        self._beat_sent = self._clock.seconds()

        def done(result: Any) -> Any:
            if self._beat_pending is pending:
                self._beat_pending = None
            return result

        def unwrap(failure: Failure) -> Failure:
            # gatherResults wraps the first failure; hand on the original.
            if isinstance(failure.value, FirstError):
                first: Failure = failure.value.subFailure
                return first
            return failure

        return pending.addBoth(done).addErrback(unwrap)

    def _beaten(self, result: list[Any], keys: list[str]) -> None:
        live, counts, joined = result
        self._live = {str(node) for node in live}
        if int(joined) and self._joined:
            # The others counted this node dead (no heartbeat for node_ttl)
            # and forgot its sessions.
            self._log.warn(
                "Node {node} was counted dead by its peers; registering its"
                " sessions again",
                node=self.node_id,
            )
            self._register()
        for key, count in zip(keys, counts, strict=False):
            state = self._endpoints.get(key)
            if state is not None:
                state.others = int(count)
        gone = [k for k, owner in self._owners.items() if owner not in self._live]
        for key, session_id in gone:
            del self._owners[(key, session_id)]
            self._remote_closed(key, session_id)

    # IBroker: endpoints

    def attach(self, key: str, sink: IDeliverySink) -> None:
        self._state(key).sink = sink
        if self._joined:
            self._fire(self._subscribe_key(key))

    def detach(self, key: str) -> None:
        state = self._endpoints.pop(key, None)
        if state is None:
            return
        for deferred, _, _ in state.replays:
            deferred.callback(Replay((), True))
        channel = self._k(key, "bus")
        if self._bus_keys.pop(channel, None) is not None and self._sub is not None:
            with contextlib.suppress(RedisConnectionError):
                self._fire(self._sub.unsubscribe(channel))

    def _subscribe_key(self, key: str) -> Deferred[None]:
        state = self._endpoints.get(key)
        channel = self._k(key, "bus")
        if state is None or channel in self._bus_keys or self._sub is None:
            return succeed(None)
        self._bus_keys[channel] = key
        sub = self._sub

        def subscribed(_: object) -> None:
            if self._endpoints.get(key) is not state or self._sub is not sub:
                return
            state.ready = True
            waiting, state.waiting = state.waiting, []
            for out in waiting:
                self._send(out)
            self._sync(key, state)

        try:
            confirmed: Deferred[Any] = sub.subscribe(channel)
        except RedisConnectionError:
            return fail()
        return confirmed.addCallback(subscribed)

    # IBroker: publishing

    def publish(
        self,
        key: str,
        channel: str,
        event: str | None,
        data: str,
        history: HistoryPolicy,
    ) -> None:
        state = self._state(key)
        out = _Outgoing(
            key,
            channel,
            event,
            data,
            self._clock.seconds(),
            history.size if history.enabled else 0,
        )
        if not self._up:
            self._deliver_here(state, out)
            self._keep(out)
        elif state.ready or state.sink is None:
            self._send(out)
        else:
            state.waiting.append(out)

    def flushed(self, key: str) -> Deferred[None]:
        """
        Fire once Redis has given a place in the order (a sequence number)
        to every event this node published on C{key}: what waits for the
        bus to be ready, what is in flight, and what was kept through an
        outage (that waits for Redis to come back).
        """
        done: Deferred[None] = Deferred()

        def pending() -> bool:
            state = self._endpoints.get(key)
            if state is not None and state.waiting:
                return True
            if any(
                o.key == key and o.seq is None and not o.done for o in self._inflight
            ):
                return True
            return any(o.key == key for o in self._buffer)

        def check() -> None:
            if not self._running or not pending():
                done.callback(None)
                return
            self._clock.callLater(0.005, check)

        check()
        return done

    def _keep(self, out: _Outgoing) -> None:
        """
        Keep an event with history that Redis could not take, for later.
        """
        if not out.size or self._buffer.maxlen == 0:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
        out.buffered = True
        out.seq = None
        out.done = False
        self._buffer.append(out)

    def _send(self, out: _Outgoing) -> None:
        self._published += 1
        out.n = self._published
        self._inflight.append(out)
        if out.buffered:
            self._state(out.key).flushing += 1
        message: dict[str, Any] = {
            "c": out.channel,
            "e": out.event or "",
            "d": out.data,
            "t": out.time,
            "o": self.node_id,
            "n": out.n,
        }
        if out.buffered:
            message["b"] = 1
        k = out.key
        sent = self._script(
            _PUBLISH,
            [
                self._k(k, "seq"),
                self._k(k, "epoch"),
                self._k(k, f"h:{out.channel}"),
                self._k(k, "bus"),
                self._k(k, "evicted"),
                self._k(k, "channels"),
            ],
            [
                secrets.token_hex(4),
                out.size,
                out.channel,
                repr(out.time),
                out.event or "",
                out.data,
                self.node_id,
                "1" if out.buffered else "",
                _json.encode(message)[1:],
            ],
        )
        sent.addCallback(self._sent, out)
        sent.addErrback(self._send_failed, out)

    def _landed(self, out: _Outgoing) -> None:
        """
        C{out} is back from the bus (or never will be).
        """
        out.done = True
        if out.buffered:
            state = self._endpoints.get(out.key)
            if state is not None:
                state.flushing = max(0, state.flushing - 1)
                if not state.flushing and state.live:
                    self._run_replays(state)

    def _sent(self, result: list[Any], out: _Outgoing) -> None:
        out.seq = int(result[0])
        out.epoch = str(result[1])

    def _send_failed(self, failure: Failure, out: _Outgoing) -> None:
        if failure.check(RedisConnectionError, CancelledError) or out.done:
            # The link is down: _teardown took care of it.
            return
        with contextlib.suppress(ValueError):
            self._inflight.remove(out)
        self._landed(out)
        self._log.failure(
            "Publishing on {channel} failed; delivered on this node only",
            failure=failure,
            channel=out.channel,
        )
        if not out.buffered:
            self._deliver_here(self._endpoints.get(out.key), out)

    def _stored(self, out: _Outgoing, seq: int, epoch: str) -> StoredEvent:
        return StoredEvent(
            seq,
            f"{epoch}.{seq}" if seq and epoch else None,
            out.channel,
            out.event,
            out.data,
            out.time,
        )

    def _deliver_here(self, state: _Key | None, out: _Outgoing) -> None:
        if state is not None:
            self._deliver(state, self._stored(out, 0, ""))

    def _deliver(self, state: _Key, stored: StoredEvent) -> None:
        sink = state.sink
        if sink is None:
            return
        try:
            sink.deliver(stored)
        except Exception:
            self._log.failure("Delivering an event failed")

    # The bus and this node's messages

    def received(self, channel: str, raw: Any) -> None:
        """
        A message arrived on C{channel} (the subscriber connection's
        C{messageReceived}).
        """
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            self._log.warn("Ignored a malformed message on {channel}", channel=channel)
            return
        key = self._bus_keys.get(channel)
        try:
            if key is not None:
                self._from_bus(key, message)
            elif channel == self._node_channel or channel == self._all_channel:
                self._from_peer(message)
        except Exception:
            self._log.failure("Handling a message on {channel} failed", channel=channel)

    def _from_bus(self, key: str, message: dict[str, Any]) -> None:
        state = self._endpoints.get(key)
        if state is None:
            return
        if "m" in message:
            if (
                message["m"] == self.node_id
                and message.get("y") == state.token
                and state.marker_at is None
            ):
                state.marker_at = len(state.held)
                state.marker_seq = int(message["s"])
                self._synced(state)
            return
        if state.live:
            self._deliver_bus(state, message)
        else:
            state.held.append(message)
        if message.get("o") == self.node_id and "n" in message:
            n = message["n"]
            inflight = self._inflight
            while inflight and inflight[0].n <= n:
                self._landed(inflight.popleft())

    def _deliver_bus(self, state: _Key, message: dict[str, Any]) -> None:
        seq = int(message.get("s", 0))
        event_id = message.get("i") or None
        if event_id:
            epoch = event_id.rpartition(".")[0]
            if epoch != state.epoch:
                state.epoch = epoch
                state.delivered = 0
        if seq > state.delivered:
            state.delivered = seq
        if message.get("b") and message.get("o") == self.node_id:
            # Kept through an outage: this node's sessions had it then.
            return
        self._deliver(state, self._from_message(message, seq, event_id))

    @staticmethod
    def _from_message(
        message: dict[str, Any], seq: int, event_id: str | None
    ) -> StoredEvent:
        return StoredEvent(
            seq,
            event_id,
            str(message["c"]),
            message.get("e") or None,
            str(message["d"]),
            float(message.get("t", 0.0)),
        )

    def _sync(self, key: str, state: _Key) -> None:
        """
        Find where this node stands on the bus, and catch up on what it
        missed while the link was down.
        """
        state.token += 1
        state.held = []
        state.marker_at = None
        state.sync_reply = None
        start = -1 if state.sync_from is None else state.sync_from
        synced = self._script(
            _SYNC,
            [
                self._k(key, "epoch"),
                self._k(key, "seq"),
                self._k(key, "channels"),
                self._k(key, "bus"),
                self._k(key, "evicted"),
            ],
            [
                secrets.token_hex(4),
                state.epoch or "",
                start,
                self.node_id,
                state.token,
                self._k(key, "h:"),
            ],
        )
        token = state.token

        def answered(reply: list[Any]) -> None:
            if state.token == token and not state.live:
                state.sync_reply = reply
                self._synced(state)

        def failed(failure: Failure) -> None:
            if failure.check(RedisConnectionError, CancelledError):
                return
            self._log.failure("Syncing {key} failed", failure=failure, key=key)
            if state.token == token and not state.live:
                state.sync_reply = [state.epoch or "", state.delivered]
                state.marker_at = len(state.held)
                state.marker_seq = state.delivered
                self._synced(state)

        synced.addCallbacks(answered, failed)

    def _synced(self, state: _Key) -> None:
        reply = state.sync_reply
        at = state.marker_at
        if reply is None or at is None:
            return
        epoch = str(reply[0])
        before, after = state.held[:at], state.held[at:]
        state.held = []
        events: dict[int, StoredEvent] = {}
        plain: list[StoredEvent] = []
        start = state.sync_from
        if start is not None and state.epoch == epoch and len(reply) > 2:
            if int(reply[2]) > start:
                self._log.warn(
                    "This node was away from Redis longer than history reaches:"
                    " its sessions of {key} missed events published meanwhile",
                    key=state.key,
                )
            for i in range(3, len(reply) - 1, 2):
                channel = str(reply[i])
                for entry_id, flat in reply[i + 1]:
                    seq = _seq_of(entry_id)
                    fields = _fields(flat)
                    if (
                        seq <= start
                        or seq in state.outside
                        or (fields.get("o") == self.node_id and fields.get("b"))
                    ):
                        continue
                    events[seq] = StoredEvent(
                        seq,
                        f"{epoch}.{seq}",
                        channel,
                        fields.get("e") or None,
                        fields.get("d", ""),
                        float(fields.get("t", "0") or 0),
                    )
        for message in before:
            if message.get("b") and message.get("o") == self.node_id:
                continue
            seq = int(message.get("s", 0))
            stored = self._from_message(message, seq, message.get("i") or None)
            if seq:
                events[seq] = stored
            else:
                plain.append(stored)
        if state.epoch != epoch:
            state.epoch = epoch
        state.delivered = state.marker_seq
        state.outside.clear()
        state.live = True
        for seq in sorted(events):
            self._deliver(state, events[seq])
        for stored in plain:
            self._deliver(state, stored)
        for message in after:
            self._deliver_bus(state, message)
        if not state.flushing:
            self._run_replays(state)

    def _run_replays(self, state: _Key) -> None:
        replays, state.replays = state.replays, []
        for deferred, channels, last_event_id in replays:
            self._replay(state, deferred, channels, last_event_id)

    def _from_peer(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "push":
            self._pushed(message)
        elif kind == "forward":
            self._forwarded(message)
        elif kind == "answer":
            self._answer(str(message.get("r")), (int(message["st"]), message.get("b")))
        elif kind == "settle":
            if message.get("o") != self.node_id:
                self._settle_here(message)
        elif kind == "settled":
            self._settled(message)
        elif kind == "closed" and message.get("o") != self.node_id:
            key, session_id = str(message["k"]), str(message["sid"])
            self._owners.pop((key, session_id), None)
            self._remote_closed(key, session_id)

    def _remote_closed(self, key: str, session_id: str) -> None:
        state = self._endpoints.get(key)
        if state is not None and state.sink is not None:
            state.sink.remote_session_closed(session_id)

    # IBroker: sessions

    def session_opened(self, key: str, session_id: str) -> None:
        self._state(key).sessions.add(session_id)
        if self._joined:
            self._fire(
                self._script(_OPENED, [], [self.prefix, self.node_id, key, session_id])
            )

    def session_closed(self, key: str, session_id: str) -> None:
        state = self._endpoints.get(key)
        if state is not None:
            state.sessions.discard(session_id)
        if self._joined:
            message = {"type": "closed", "k": key, "sid": session_id, "o": self.node_id}
            self._fire(
                self._script(
                    _CLOSED,
                    [],
                    [self.prefix, self.node_id, key, session_id, _json.encode(message)],
                )
            )

    def session_count(self, key: str) -> int:
        """
        This node's sessions of C{key}, and the other live nodes' as the
        last heartbeat counted them.
        """
        state = self._endpoints.get(key)
        return 0 if state is None else len(state.sessions) + state.others

    # IBroker: one session, wherever it is

    def _direct(
        self, key: str, session_id: str, message: dict[str, Any]
    ) -> Deferred[Any]:
        """
        Publish C{message} to the node holding C{session_id}: fires with
        C{[node, receivers]}, or L{None} when no live node holds it.
        """
        return self._script(
            _DIRECT,
            [self._k(key, "where")],
            [session_id, self.prefix, _json.encode(message)],
        )

    def push(self, key: str, session_id: str, payload: bytes) -> bool:
        state = self._endpoints.get(key)
        if (
            state is not None
            and state.sink is not None
            and state.sink.deliver_to_session(session_id, payload)
        ):
            return True
        if not self._up:
            return False
        message = {
            "type": "push",
            "k": key,
            "sid": session_id,
            "p": payload.decode("utf-8"),
            "o": self.node_id,
        }

        def found(result: Any) -> None:
            if result is None or not int(result[1]):
                self._owners.pop((key, session_id), None)
                self._remote_closed(key, session_id)
                return
            owners = self._owners
            owners[(key, session_id)] = str(result[0])
            if len(owners) > 100_000:
                del owners[next(iter(owners))]

        pushed = self._direct(key, session_id, message)
        self._fire(pushed.addCallback(found))
        return True

    def _pushed(self, message: dict[str, Any]) -> None:
        key, session_id = str(message["k"]), str(message["sid"])
        state = self._endpoints.get(key)
        sink = None if state is None else state.sink
        payload = str(message["p"]).encode("utf-8")
        if sink is not None and sink.deliver_to_session(session_id, payload):
            return
        origin = str(message.get("o", ""))
        if origin:
            reply = {"type": "closed", "k": key, "sid": session_id}
            self._fire(self._tell(f"{self.prefix}:node:{origin}", reply))

    def _ask(self, timeout: float, fallback: Any) -> tuple[str, _Request]:
        """
        Open a request to other nodes that answers C{fallback} unless they
        answer within C{timeout} seconds.
        """
        rid = secrets.token_hex(8)
        deferred: Deferred[Any] = Deferred()

        def expire() -> None:
            self._answer(rid, fallback)

        timer = self._clock.callLater(timeout, expire)
        request = self._requests[rid] = _Request(deferred, timer, fallback)
        return rid, request

    def _answer(self, rid: str, result: Any) -> None:
        request = self._requests.pop(rid, None)
        if request is not None:
            if request.timer.active():
                request.timer.cancel()
            request.deferred.callback(result)

    def forward(
        self,
        key: str,
        session_id: str,
        body: Any,
        header_session: str | None,
        principal: Any,
    ) -> Deferred[tuple[int, Any]] | None:
        if not self._up:
            return succeed(
                (503, _error("unavailable", "the cluster cannot be reached"))
            )
        try:
            _json.encode(principal)
        except (TypeError, ValueError):
            return succeed(
                (
                    403,
                    _error(
                        "forbidden",
                        "the caller cannot be named to the node holding the session",
                    ),
                )
            )
        rid, request = self._ask(
            self._forward_timeout,
            (503, _error("unavailable", "the session's node did not answer")),
        )
        message = {
            "type": "forward",
            "k": key,
            "r": rid,
            "o": self.node_id,
            "sid": session_id,
            "b": body,
            "h": header_session,
            "pr": principal,
        }

        def found(result: Any) -> None:
            if result is None:
                self._answer(
                    rid, (404, _error("no_session", "no open session with that id"))
                )
            elif not int(result[1]):
                self._answer(
                    rid,
                    (503, _error("unavailable", "the session's node is unreachable")),
                )

        def failed(failure: Failure) -> None:
            self._answer(
                rid, (503, _error("unavailable", "the cluster cannot be reached"))
            )

        self._direct(key, session_id, message).addCallbacks(found, failed)
        result: Deferred[tuple[int, Any]] = request.deferred
        return result

    def _forwarded(self, message: dict[str, Any]) -> None:
        key = str(message["k"])
        origin = f"{self.prefix}:node:{message['o']}"
        rid = message["r"]
        state = self._endpoints.get(key)
        sink = None if state is None else state.sink
        if sink is None:
            answer = {
                "type": "answer",
                "r": rid,
                "st": 404,
                "b": _error("no_session", "no open session with that id"),
            }
            self._fire(self._tell(origin, answer))
            return

        def answered(result: tuple[int, Any]) -> None:
            status, body = result
            reply = {"type": "answer", "r": rid, "st": status, "b": body}
            try:
                self._fire(self._tell(origin, reply))
            except (TypeError, ValueError):
                reply["st"] = 500
                reply["b"] = _error("route_failed", "the result is not JSON")
                self._fire(self._tell(origin, reply))

        maybeDeferred(
            sink.handle_forwarded, message.get("b"), message.get("h"), message.get("pr")
        ).addCallback(answered).addErrback(
            lambda failure: self._log.failure(
                "Answering a forwarded call failed", failure=failure
            )
        )

    def settle(
        self,
        key: str,
        node_id: str,
        callback_id: str,
        session_id: str,
        args: Any,
        error: tuple[str, str] | None = None,
    ) -> Deferred[bool] | None:
        if not self._up:
            return succeed(False)
        rid, request = self._ask(self.settle_timeout, False)
        message = {
            "type": "settle",
            "k": key,
            "r": rid,
            "o": self.node_id,
            "cid": callback_id,
            "sid": session_id,
            "a": args,
        }
        if error is not None:
            message["e"] = list(error)
        everyone = node_id == "*"
        channel = self._all_channel if everyone else f"{self.prefix}:node:{node_id}"

        def published(receivers: Any) -> None:
            # Every node hears a message to all, this one included.
            request.expected = int(receivers) - (1 if everyone else 0)
            if request.answers >= request.expected:
                self._answer(rid, False)

        def failed(failure: Failure) -> None:
            self._answer(rid, False)

        try:
            self._tell(channel, message).addCallbacks(published, failed)
        except (TypeError, ValueError):
            self._answer(rid, False)
        result: Deferred[bool] = request.deferred
        return result

    def _settle_here(self, message: dict[str, Any]) -> None:
        state = self._endpoints.get(str(message["k"]))
        sink = None if state is None else state.sink
        ok = False
        error = message.get("e")
        if sink is not None:
            try:
                ok = bool(
                    sink.settle_forwarded(
                        str(message["cid"]),
                        str(message["sid"]),
                        message.get("a"),
                        (str(error[0]), str(error[1])) if error else None,
                    )
                )
            except Exception:
                self._log.failure("Settling a forwarded reply failed")
        reply = {"type": "settled", "r": message["r"], "ok": ok}
        self._fire(self._tell(f"{self.prefix}:node:{message['o']}", reply))

    def _settled(self, message: dict[str, Any]) -> None:
        rid = str(message.get("r"))
        request = self._requests.get(rid)
        if request is None:
            return
        if message.get("ok"):
            self._answer(rid, True)
            return
        request.answers += 1
        if request.expected is not None and request.answers >= request.expected:
            self._answer(rid, False)

    # IBroker: replay

    def replay(
        self,
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Deferred[Replay]:
        """
        What a client that last saw C{last_event_id} missed: the kept events
        after it up to the last one this node delivered (later ones reach
        the session live).  While Redis is away: nothing, and C{reset}.
        """
        wanted = [(name, policy) for name, policy in channels if policy.enabled]
        state = self._state(key)
        deferred: Deferred[Replay] = Deferred()
        if not self._up:
            deferred.callback(Replay((), True))
        elif not state.live or state.flushing:
            state.replays.append((deferred, wanted, last_event_id))
        else:
            self._replay(state, deferred, wanted, last_event_id)
        return deferred

    def _replay(
        self,
        state: _Key,
        deferred: Deferred[Replay],
        channels: list[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> None:
        key = state.key
        if self._endpoints.get(key) is not state:
            deferred.callback(Replay((), True))
            return
        epoch = (last_event_id or "").rpartition(".")[0]
        after = parse_event_id(last_event_id, epoch)
        upto = state.delivered
        asked = self._script(
            _REPLAY,
            [
                self._k(key, "epoch"),
                self._k(key, "seq"),
                self._k(key, "evicted"),
                *(self._k(key, f"h:{name}") for name, _ in channels),
            ],
            [
                epoch,
                -1 if after is None else after,
                upto,
                *(name for name, _ in channels),
            ],
        )

        def answered(reply: list[Any]) -> Replay:
            reset = bool(int(reply[0]))
            current = str(reply[1])
            start = 0 if reset or after is None else after
            now = self._clock.seconds()
            found: list[StoredEvent] = []
            for i, (name, policy) in enumerate(channels):
                if _seq_of(reply[2 + 2 * i]) > start:
                    reset = True
                for entry_id, flat in reply[3 + 2 * i]:
                    seq = _seq_of(entry_id)
                    fields = _fields(flat)
                    time = float(fields.get("t", "0") or 0)
                    if policy.age is not None and time < now - policy.age:
                        reset = True
                        continue
                    found.append(
                        StoredEvent(
                            seq,
                            f"{current}.{seq}",
                            name,
                            fields.get("e") or None,
                            fields.get("d", ""),
                            time,
                        )
                    )
            found.sort(key=lambda e: e.seq)
            return Replay(found, reset)

        def failed(failure: Failure) -> Replay:
            if not failure.check(RedisConnectionError, CancelledError):
                self._log.failure("Replay from Redis failed", failure=failure)
            return Replay((), True)

        asked.addCallbacks(answered, failed).chainDeferred(deferred)
