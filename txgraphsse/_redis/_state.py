# -*- test-case-name: tests.test_redis -*-
"""
What the parts of the Redis broker share: the names of keys and channels,
what this node knows of each endpoint key, an event on its way out, and how
stream entries and bus messages read.

The fields of L{EndpointState} belong to the parts that change them (each
field says which); this module only holds them, delivers to an endpoint's
L{IDeliverySink} and forgets the link's share of them when it goes down.
It never talks to Redis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .._broker import HistoryPolicy, IDeliverySink, Replay, StoredEvent

__all__ = [
    "LOG_NAMESPACE",
    "Channels",
    "EndpointState",
    "Endpoints",
    "Names",
    "Outgoing",
    "WaitingReplay",
    "encode",
    "entry_fields",
    "error_body",
    "seq_of",
]

#: The namespace of everything the broker logs, whichever part logs it: the
#: public class's, as it was before the broker was split (a log line names
#: it).  Each module logs through a module-level L{Logger} of this
#: namespace: one declared on a class would take that class's name.
LOG_NAMESPACE = "txgraphsse.redis.RedisBroker"

_log = Logger(namespace=LOG_NAMESPACE)

#: JSON as the broker writes it to Redis: compact, and UTF-8 as it is.
encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def error_body(code: str, message: str) -> dict[str, Any]:
    """
    The JSON body of an error answer.
    """
    return {"error": {"code": code, "message": message}}


def seq_of(entry_id: Any) -> int:
    """
    The sequence number of a stream entry id C{"SEQ-0"} (0 for none).
    """
    if not isinstance(entry_id, str) or not entry_id:
        return 0
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


def entry_fields(flat: Sequence[Any]) -> dict[str, str]:
    """
    The fields of a stream entry, from Redis's flat C{[name, value, ...]}.
    """
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@frozen
class Names:
    """
    The names of this node's keys and channels in Redis.

    @ivar prefix: what every key and channel name starts with.
    @ivar node_id: this node's name.
    """

    prefix: str
    node_id: str

    def key(self, key: str, name: str) -> str:
        """
        The Redis key C{name} of endpoint key C{key}: C{P:K:name}.
        """
        return f"{self.prefix}:{key}:{name}"

    def keys(self, key: str, *names: str) -> list[str]:
        """
        The Redis keys C{names} of endpoint key C{key}, in order (the KEYS
        of a script).
        """
        return [self.key(key, name) for name in names]

    def node_channel(self, node_id: str) -> str:
        """
        The channel of messages for node C{node_id}.
        """
        return f"{self.prefix}:node:{node_id}"

    @property
    def own_channel(self) -> str:
        """
        The channel of messages for this node.
        """
        return self.node_channel(self.node_id)

    @property
    def all_channel(self) -> str:
        """
        The channel of messages for every node.
        """
        return f"{self.prefix}:all"


@define(eq=False)
class Outgoing:
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
    #: Fired with its id (L{None} without history) once Redis has placed it,
    #: for a publisher that waits (the server API's C{publish}).
    acked: Deferred[str | None] | None = None

    def stored(self, seq: int, epoch: str) -> StoredEvent:
        """
        This event as delivered with sequence number C{seq} of C{epoch}
        (0: none, and no id).
        """
        return StoredEvent(
            seq,
            f"{epoch}.{seq}" if seq and epoch else None,
            self.channel,
            self.event,
            self.data,
            self.time,
        )


#: The channels a replay asks about, each with its history policy.
Channels = Sequence[tuple[str, HistoryPolicy]]

#: A replay asked for before this node could answer it: its L{Deferred},
#: the channels asked about and the client's last event id.
WaitingReplay = tuple[Deferred[Replay], Channels, str | None]


@define(eq=False)
class EndpointState:
    """
    What this node knows of one endpoint key.
    """

    key: str
    sink: IDeliverySink | None = None
    #: This node's sessions of the key (the session directory's).
    sessions: set[str] = field(factory=set)
    # The bus's, from here to marker_seq.
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
    #: Events published before the bus subscription was confirmed (the
    #: publisher's).
    waiting: list[Outgoing] = field(factory=list)
    #: Events kept through an outage, written but not back from the bus:
    #: until they are, a replay would miss them (this node's sessions do
    #: not get them from the bus again), so replays wait (the publisher's).
    flushing: int = 0
    #: Replays waiting for the bus to be live and C{flushing} to be done
    #: (the replayer's).
    replays: list[WaitingReplay] = field(factory=list)
    #: Sessions of this key on the other live nodes, at the last heartbeat
    #: (the session directory's).
    others: int = 0

    def deliver(self, stored: StoredEvent) -> None:
        """
        Hand C{stored} to this key's sink, if it has one; log what fails.
        """
        sink = self.sink
        if sink is None:
            return
        try:
            sink.deliver(stored)
        except Exception:
            _log.failure("Delivering an event failed")

    def missed(self, everything: bool, position: str | None) -> None:
        """
        Tell this key's sink that this node may have missed events.
        """
        if self.sink is not None:
            self.sink.missed(everything, position)

    def remote_session_closed(self, session_id: str) -> None:
        """
        Tell this key's sink that another node's session C{session_id}
        closed.
        """
        if self.sink is not None:
            self.sink.remote_session_closed(session_id)


class Endpoints(dict[str, EndpointState]):
    """
    What this node knows of each endpoint key, by key.
    """

    def state(self, key: str) -> EndpointState:
        """
        The state of C{key}, made if there is none yet.
        """
        state = self.get(key)
        if state is None:
            state = self[key] = EndpointState(key)
        return state

    def sink(self, key: str) -> IDeliverySink | None:
        """
        The sink of C{key}, if this node has one.
        """
        state = self.get(key)
        return None if state is None else state.sink

    def remote_session_closed(self, key: str, session_id: str) -> None:
        """
        Tell C{key}'s sink, if any, that another node's session closed.
        """
        state = self.get(key)
        if state is not None:
            state.remote_session_closed(session_id)
