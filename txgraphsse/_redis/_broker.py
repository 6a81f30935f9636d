# -*- test-case-name: tests.test_redis -*-
"""
L{RedisBroker}: the L{IBroker} over Redis, made of the parts of this
package (see its docstring for the keys, the channels and how they hold
together).

It owns the broker's face (its constructor, its settings and the
L{IBroker} methods, each handed to the part that answers it, which
documents it: as one request where the part takes one, L{Outgoing},
L{Post} or L{Reply}) and the order in which the parts hear that the link
came up or went down, and it routes each message that arrives to the bus
or to the calls.  It holds no state of its own beyond its parts (and the
clock that stamps what it publishes, and the timer that warns when a
broker nobody started is used), never runs a script and never reads a
reply.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .._broker import (
    BrokerUnavailable,
    HistoryPolicy,
    IBroker,
    IDeliverySink,
    Replay,
)
from ._bus import Bus
from ._context import Context
from ._link import Link
from ._nodes import Nodes
from ._peers import Peers, Post, Reply
from ._presence import Lost, PresenceRosters
from ._publish import Publisher
from ._replay import Replays
from ._state import LOG_NAMESPACE, Endpoints, Names, Outgoing

__all__ = ["RedisBroker"]

_log = Logger(namespace=LOG_NAMESPACE)


@implementer(IBroker)
class RedisBroker:
    """
    An L{IBroker} over Redis, for a cluster of nodes behind a load balancer.

    Give each node's L{txgraphsse.SSEBackend} its own C{RedisBroker} with the
    same C{url} and C{prefix}, and call L{start} (L{txgraphsse.SSEService}
    does, and L{txgraphsse.SSEBackend.shutdown} calls L{stop}).  A broker
    does not start by itself: one that is used (a stream opens on one of
    its endpoints, or an event is published) and is still not started
    L{start_warning} seconds later logs a warning, once, since until it
    starts its node reaches neither Redis nor its peers.

    @ivar node_id: this node's name among its peers (random by default).
    @ivar clustered: always C{True}.
    @ivar reconnect_initial: seconds before the first attempt to reconnect;
        each failed attempt doubles it, up to C{reconnect_max}.
    @ivar start_warning: seconds after its first use by which L{start}
        must have been called, or a warning is logged.
    """

    clustered = True
    reconnect_initial = 0.25
    reconnect_max = 10.0
    connect_timeout = 5.0
    settle_timeout = 2.0
    start_warning = 5.0

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
        presence_ttl: float = 15.0,
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
        @param presence_ttl: seconds a node's members of the channels that
            keep presence stay listed after its last refresh (every third
            of it): a node that dies leaves presence within this time.
        """
        if node_id is None:
            node_id = secrets.token_hex(4)
        if not node_id or any(c in node_id for c in ".: \t\r\n"):
            raise ValueError(f"bad node id: {node_id!r}")
        if node_ttl <= heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")
        if presence_ttl <= 0:
            raise ValueError("presence_ttl must be positive")
        names = Names(prefix, node_id)
        self._link = Link(reactor, url, names, self)
        self.url = url
        self.prefix = prefix
        self.node_id = node_id
        self._clock = reactor
        self._names = names
        self._endpoints = Endpoints()
        shared = Context(reactor, self._link, names, self._endpoints)
        self._nodes = Nodes(shared, heartbeat, node_ttl)
        self._replays = Replays(shared)
        self._publisher = Publisher(shared, self._replays, outage_buffer)
        self._bus = Bus(shared, self._publisher, self._replays)
        self._peers = Peers(shared, self._nodes, self, forward_timeout)
        self._presence = PresenceRosters(shared, presence_ttl)
        self._start_watch: IDelayedCall | None = None
        self._start_watched = False

    def __repr__(self) -> str:
        state = "up" if self._link.up else "down"
        return f"<RedisBroker {self.node_id} {self.url} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether this node is linked to Redis, and so to its peers.
        """
        return self._link.up

    # Life: start and stop

    def start(self) -> Deferred[None]:
        """
        Connect to Redis, and keep reconnecting whenever the link is lost.
        Until it is up, and whenever it is down, events reach this node's
        sessions only.

        @return: a L{Deferred} that fires once the link is first up (or
            when L{stop} is called first); it never fails.
        """
        self._stop_watching_start()
        return self._link.start()

    def stop(self) -> Deferred[None]:
        """
        Leave the cluster: unregister this node's sessions, close the
        connections and stop every timer.
        """
        self._stop_watching_start()
        return self._link.shutdown(leave=True)

    def _vanish(self) -> Deferred[None]:
        """
        Stop as a crash would look to the other nodes: drop the connections
        at once and unregister nothing.  For tests.
        """
        return self._link.shutdown(leave=False)

    def refresh(self) -> Deferred[None]:
        """
        Run a heartbeat now: refresh L{session_count} and find dead nodes.
        """
        if not self._link.up:
            return succeed(None)
        return self._nodes.beat_once()

    # IBroker: endpoints

    def attach(self, key: str, sink: IDeliverySink) -> None:
        """
        L{IBroker.attach}: and, once joined, subscribe to C{key}'s bus.
        """
        self._endpoints.state(key).sink = sink
        if self._nodes.joined:
            self._link.fire(self._bus.subscribe(key))

    def _used(self) -> None:
        # The broker is used for the first time: watch that it starts.  (Not
        # at attach, which an app does before anything runs, and which a
        # test of its command line does without ever running a reactor.)
        self._start_watched = True
        if not self._link.running:
            self._start_watch = self._clock.callLater(
                self.start_warning, self._not_started
            )

    def _not_started(self) -> None:
        self._start_watch = None
        if not self._link.running:
            _log.warn(
                "RedisBroker {node} is in use but still not started {seconds} s"
                " later: until it is, its sessions get this node's events only,"
                " and no other node reaches them. Call broker.start()"
                " (and broker.stop() at the end), or run the backend under"
                " SSEService, which does both.",
                node=self.node_id,
                seconds=self.start_warning,
            )

    def _stop_watching_start(self) -> None:
        self._start_watched = True
        watch, self._start_watch = self._start_watch, None
        if watch is not None and watch.active():
            watch.cancel()

    def detach(self, key: str) -> None:
        """
        L{IBroker.detach}: the key's waiting replays get nothing, and its
        bus is left.
        """
        state = self._endpoints.pop(key, None)
        if state is None:
            return
        self._replays.fail_waiting(state)
        self._bus.unsubscribe(key)

    # IBroker: publishing

    def publish(
        self,
        key: str,
        channel: str,
        event: str | None,
        data: str,
        history: HistoryPolicy,
    ) -> None:
        """
        L{IBroker.publish}, by L{Publisher.publish}.
        """
        if not self._start_watched:
            self._used()
        size = history.size if history.enabled else 0
        now = self._clock.seconds()
        self._publisher.publish(Outgoing(key, channel, event, data, now, size))

    def publish_acked(
        self,
        key: str,
        channel: str,
        event: str | None,
        data: str,
        history: HistoryPolicy,
    ) -> Deferred[str | None]:
        """
        L{IBroker.publish_acked}: refused while Redis is away; else fired
        when the publish script has answered (through an outage that comes
        meanwhile, once the event kept is written).
        """
        if not self._link.up:
            return fail(BrokerUnavailable("Redis cannot be reached"))
        size = history.size if history.enabled else 0
        out = Outgoing(key, channel, event, data, self._clock.seconds(), size)
        acked: Deferred[str | None] = Deferred()
        out.acked = acked
        self._publisher.publish(out)
        return acked

    def disconnect(
        self, key: str, session_id: str | None = None, subject: str | None = None
    ) -> Deferred[int]:
        """
        L{IBroker.disconnect}, by L{Peers.disconnect}.
        """
        return self._peers.disconnect(key, session_id, subject)

    def flushed(self, key: str) -> Deferred[None]:
        """
        L{IBroker.flushed}, by L{Publisher.flushed}.
        """
        return self._publisher.flushed(key)

    # IBroker: sessions

    def session_opened(self, key: str, session_id: str) -> None:
        """
        L{IBroker.session_opened}, by L{Nodes.session_opened}.
        """
        if not self._start_watched:
            self._used()
        self._nodes.session_opened(key, session_id)

    def session_closed(self, key: str, session_id: str) -> None:
        """
        L{IBroker.session_closed}, by L{Nodes.session_closed}.
        """
        self._nodes.session_closed(key, session_id)

    def session_count(self, key: str) -> int:
        """
        L{IBroker.session_count}, by L{Nodes.session_count}.
        """
        return self._nodes.session_count(key)

    # IBroker: presence

    def presence(self, key: str, channel: str) -> Deferred[list[dict[str, Any]]]:
        """
        L{IBroker.presence}, by L{PresenceRosters.read}.
        """
        return self._presence.read(key, channel)

    def presence_joined(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        L{IBroker.presence_joined}, by L{PresenceRosters.joined}.
        """
        self._presence.joined(key, channel, entry)

    def presence_left(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        L{IBroker.presence_left}, by L{PresenceRosters.left}.
        """
        self._presence.left(key, channel, entry)

    def watch_presence(self, key: str, channel: str, lost: Lost | None) -> None:
        """
        L{IBroker.watch_presence}, by L{PresenceRosters.watch}.
        """
        self._presence.watch(key, channel, lost)

    # IBroker: one session, wherever it is

    def push(self, key: str, session_id: str, payload: bytes) -> bool:
        """
        L{IBroker.push}, by L{Peers.push}.
        """
        return self._peers.push(key, session_id, payload)

    def forward(
        self,
        key: str,
        session_id: str,
        body: Any,
        header_session: str | None,
        principal: Any,
    ) -> Deferred[tuple[int, Any]] | None:
        """
        L{IBroker.forward}, by L{Peers.forward}.
        """
        return self._peers.forward(
            Post(key, session_id, body, header_session, principal)
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
        """
        L{IBroker.settle}, by L{Peers.settle}.
        """
        return self._peers.settle(
            Reply(key, node_id, callback_id, session_id, args, error)
        )

    # IBroker: replay

    def replay(
        self,
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Deferred[Replay]:
        """
        L{IBroker.replay}, by L{Replays.replay}.
        """
        return self._replays.replay(key, channels, last_event_id)

    # What the link tells its owner

    def _received(self, channel: str, raw: Any) -> None:
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            _log.warn("Ignored a malformed message on {channel}", channel=channel)
            return
        key = self._bus.key_of(channel)
        names = self._names
        try:
            if key is not None:
                self._bus.received(key, message)
            elif channel == names.own_channel or channel == names.all_channel:
                self._peers.received(message)
        except Exception:
            _log.failure("Handling a message on {channel} failed", channel=channel)

    async def _joining(self) -> None:
        await self._nodes.beat_once()
        self._nodes.joined = True
        self._nodes.register()
        await gatherResults(
            [self._bus.subscribe(key) for key in self._endpoints], consumeErrors=True
        )

    def _linked(self) -> tuple[int, int]:
        counts = self._publisher.write_kept()
        self._nodes.start_heartbeat()
        self._presence.linked()
        return counts

    def _stopping(self, leave: bool) -> Deferred[None]:
        self._nodes.stop_heartbeat()
        self._presence.stop(leave=leave and self._link.up)
        if self._link.up and leave:
            return self._nodes.leave(self.connect_timeout)
        return succeed(None)

    def _unlinked(self) -> None:
        """
        The link is down: deliver here what the bus will not bring, and
        answer everything that waited for Redis.
        """
        self._nodes.unlink()
        self._bus.unlink()
        self._publisher.unlink()
        for state in self._endpoints.values():
            self._bus.unlink_state(state)
            self._publisher.unlink_state(state)
            self._replays.fail_waiting(state)
        self._peers.unlink()
        self._presence.unlink()
