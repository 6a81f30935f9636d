# -*- test-case-name: tests.test_channel -*-
"""
Publishing and delivery, on this node or across a cluster.

The broker is the only place that knows whether other nodes exist.  An
endpoint hands it every channel event (L{IBroker.publish}) and every push to
a session id it does not hold itself (L{IBroker.push}); the broker gives event
ids to events whose channel keeps history, stores them, and calls each node's
L{IDeliverySink} back with what that node must fan out.  It also answers
replay questions for reconnecting clients, and keeps who is in each channel
that keeps presence, as the entries each node gives it.

It knows endpoint keys, channel names and session ids; never HTTP, sessions
or encoding.  L{InMemoryBroker} is the default; a Redis broker implements the
same interface.  A broker that keeps history in this process's memory also
provides L{ILocalHistory}, so that a channel that goes (a dynamic one, empty)
takes its history with it.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "BrokerUnavailable",
    "HistoryPolicy",
    "IBroker",
    "IDeliverySink",
    "ILocalHistory",
    "InMemoryBroker",
    "Replay",
    "StoredEvent",
    "parse_event_id",
]


@frozen
class HistoryPolicy:
    """
    How much of a channel's past to keep for replay.

    @ivar size: the most events kept (0: no history, and no ids).
    @ivar age: the oldest event kept, in seconds, or L{None} for no age limit.
    """

    size: int = 0
    age: float | None = None

    @property
    def enabled(self) -> bool:
        return self.size > 0


@frozen
class StoredEvent:
    """
    A channel event as the broker delivers and keeps it.
    """

    seq: int
    id: str | None
    channel: str
    event: str | None
    data: str
    time: float


@frozen
class Replay:
    """
    What a reconnecting client must get before live events.

    @ivar events: the kept events after its last id, oldest first, over all
        the channels asked about.
    @ivar reset: whether it missed events that are no longer kept (or its id
        was unknown or malformed).
    """

    events: Sequence[StoredEvent]
    reset: bool


def parse_event_id(value: str | None, epoch: str) -> int | None:
    """
    The sequence number in an event id of C{epoch}, or L{None} for an id that
    is absent, malformed, or of another epoch: ids are untrusted and such an id
    only means "too old".
    """
    if not value:
        return None
    prefix, _, seq = value.rpartition(".")
    if prefix != epoch or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        return None
    return int(seq)


class BrokerUnavailable(Exception):
    """
    The cluster cannot be reached: nothing was published.
    """


class IDeliverySink(Interface):
    """
    A node's receiving end for one endpoint: the endpoint itself.
    """

    def deliver(event: StoredEvent) -> None:
        """
        Fan C{event} out to this node's sessions of its channel.
        """

    def missed(everything: bool, at: str | None) -> None:
        """
        This node may have missed channel events that cannot be delivered
        now: tell the sessions of the channels concerned (C{reset}), so
        that a gap is never silent.

        @param everything: whether every channel's events may be gone (the
            store lost them: a new epoch), or only those of the channels
            without history (the link was away; history covered the rest).
        @param at: the id the node carries on from, for the C{reset}.
        """

    def deliver_to_session(session_id: str, payload: bytes) -> bool:
        """
        Write encoded events to one session if this node holds it.

        @return: whether it does.
        """

    def handle_forwarded(
        body: Any, header_session: str | None, principal: Any
    ) -> Deferred[tuple[int, Any]]:
        """
        Answer a client's C{POST} that another node received for a session
        this node holds: fire with C{(status, JSON body or None)}.

        @param principal: the caller's identity as the receiving node's
            authorizer saw it (its C{subject}, or the principal itself).
        """

    def settle_forwarded(
        callback_id: str,
        session_id: str,
        args: Any,
        error: tuple[str, str] | None = None,
    ) -> bool:
        """
        A reply to a call this node made, received by another node.

        @param error: the client's C{(code, message)} when its route failed:
            the call fails with L{RemoteCallError} instead.
        @return: whether it settled a pending call or delivered an update.
        """

    def remote_session_closed(session_id: str) -> None:
        """
        A session held by another node closed (or its node died): fail this
        node's calls to it.
        """

    def disconnect_here(session_id: str | None, subject: str | None) -> int:
        """
        End this node's stream of session C{session_id}, or those of every
        session whose principal's subject is C{subject}.

        @return: how many ended.
        """


class IBroker(Interface):
    """
    Publish and deliver channel events and session pushes, and keep history.
    """

    node_id = Attribute("A string that names this node among its peers.")
    clustered = Attribute(
        "Whether other nodes may exist: then callback ids carry the node id,"
        " and POSTs for sessions held elsewhere are forwarded."
    )

    def attach(key: str, sink: IDeliverySink) -> None:
        """
        Deliver events of endpoint C{key} to C{sink} from now on.
        """

    def detach(key: str) -> None:
        """
        Stop delivering events of endpoint C{key} here.
        """

    def publish(
        key: str, channel: str, event: str | None, data: str, history: HistoryPolicy
    ) -> None:
        """
        Publish a channel event to every node's sessions of that channel, the
        local node included; keep it for replay if C{history} says so.
        """

    def push(key: str, session_id: str, payload: bytes) -> bool:
        """
        Deliver encoded events to one session, wherever it is held.

        @return: whether the session is known (locally, or to the cluster).
        """

    def flushed(key: str) -> Deferred[None]:
        """
        Fire once every event this node has published on endpoint C{key} has
        its place in the order all nodes deliver (for a route that must not
        answer before the event it broadcast is ordered before later ones).
        """

    def forward(
        key: str,
        session_id: str,
        body: Any,
        header_session: str | None,
        principal: Any,
    ) -> Deferred[tuple[int, Any]] | None:
        """
        Hand a client's C{POST} to the node that holds C{session_id}.

        @return: the owner's C{(status, body)}, or L{None} where no other
            node can hold it (the caller answers C{404 no_session}).
        """

    def settle(
        key: str,
        node_id: str,
        callback_id: str,
        session_id: str,
        args: Any,
        error: tuple[str, str] | None = None,
    ) -> Deferred[bool] | None:
        """
        Hand a reply to the node C{node_id} whose call it answers.

        @param error: the client's C{(code, message)} when its route failed.
        """

    def replay(
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Deferred[Replay]:
        """
        What a client that last saw C{last_event_id} missed on C{channels}.
        """

    def session_opened(key: str, session_id: str) -> None:
        """
        This node now holds C{session_id}.
        """

    def session_closed(key: str, session_id: str) -> None:
        """
        This node no longer holds C{session_id}.
        """

    def session_count(key: str) -> int:
        """
        How many sessions endpoint C{key} has, over every node the broker knows.
        """

    def publish_acked(
        key: str, channel: str, event: str | None, data: str, history: HistoryPolicy
    ) -> Deferred[str | None]:
        """
        L{publish}, and fire with the event's id (L{None} without history)
        once it has its place in the order: for a cluster, once the shared
        store has it.

        @return: a L{Deferred} that fails with L{BrokerUnavailable}, having
            published nothing, when the cluster cannot be reached.
        """

    def disconnect(
        key: str, session_id: str | None = None, subject: str | None = None
    ) -> Deferred[int]:
        """
        End session C{session_id}'s stream, or the streams of every session
        of subject C{subject}, on whichever nodes hold them.

        @return: a L{Deferred} firing with how many this node ended, plus one
            for a session by id that another node holds.
        """

    def presence(key: str, channel: str) -> Deferred[list[dict[str, Any]]]:
        """
        The members of C{channel} (one that keeps presence) on every node
        the broker knows, each as the entry its node gave
        L{presence_joined}, in no particular order.
        """

    def presence_joined(key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        This node's session C{entry["id"]} is now a member of C{channel}:
        C{entry} is what L{presence} lists for it (JSON-able).
        """

    def presence_left(key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        This node's session C{entry["id"]} is no longer a member of
        C{channel}.
        """

    def watch_presence(
        key: str,
        channel: str,
        lost: Callable[[list[dict[str, Any]]], object] | None,
    ) -> None:
        """
        Call C{lost} with the entries of members of C{channel} that left
        without their node saying so (it died); L{None} stops.
        """


class ILocalHistory(Interface):
    """
    A broker that keeps channel history in this process: told when a
    channel goes, it lets go of the channel's history.
    """

    def forget_history(
        key: str, channel: str, policy: HistoryPolicy, force: bool = False
    ) -> float | None:
        """
        Let go of the history of C{channel} of endpoint C{key} if none of it
        is left once trimmed by C{policy} (or, with C{force}, at once).  A
        client that reconnects from before what was lost is still told
        C{reset}.

        @return: L{None} if it was let go of (or there was none); else when
            the newest event kept ages out (C{math.inf} without an age).
        """


#: How many slots remember the highest sequence number lost with a forgotten
#: channel's history, by a hash of the channel's name: a bounded memory of
#: any number of channels.
_FORGOTTEN_SLOTS = 1024


@define
class _ChannelHistory:
    events: deque[StoredEvent] = field(factory=deque)
    #: The highest sequence number no longer kept.
    evicted: int = 0

    def trim(self, policy: HistoryPolicy, now: float) -> None:
        events = self.events
        while len(events) > policy.size:
            self.evicted = events.popleft().seq
        if policy.age is not None:
            oldest = now - policy.age
            while events and events[0].time < oldest:
                self.evicted = events.popleft().seq


@define
class _EndpointState:
    sink: IDeliverySink | None = None
    seq: int = 0
    sessions: set[str] = field(factory=set)
    history: dict[str, _ChannelHistory] = field(factory=dict)
    #: By slot (L{_FORGOTTEN_SLOTS}, made at the first): the highest sequence
    #: number lost with a forgotten channel's history.
    forgotten: list[int] = field(factory=list)
    #: Members of channels that keep presence: channel -> session id -> entry.
    presence: dict[str, dict[str, dict[str, Any]]] = field(factory=dict)


@implementer(IBroker, ILocalHistory)
class InMemoryBroker:
    """
    One node, no network: delivery is a direct call, history is kept in
    memory and is lost with the process (a new epoch in the ids tells
    reconnecting clients so).
    """

    def __init__(self, clock: IReactorTime, epoch: str | None = None) -> None:
        self._clock = clock
        self.epoch = epoch if epoch is not None else secrets.token_hex(4)
        self.node_id = "local"
        self.clustered = False
        self._endpoints: dict[str, _EndpointState] = {}

    def _state(self, key: str) -> _EndpointState:
        state = self._endpoints.get(key)
        if state is None:
            state = self._endpoints[key] = _EndpointState()
        return state

    def attach(self, key: str, sink: IDeliverySink) -> None:
        self._state(key).sink = sink

    def detach(self, key: str) -> None:
        self._endpoints.pop(key, None)

    def publish(
        self,
        key: str,
        channel: str,
        event: str | None,
        data: str,
        history: HistoryPolicy,
    ) -> None:
        state = self._state(key)
        now = self._clock.seconds()
        if history.enabled:
            state.seq += 1
            stored = StoredEvent(
                state.seq, f"{self.epoch}.{state.seq}", channel, event, data, now
            )
            kept = state.history.get(channel)
            if kept is None:
                kept = state.history[channel] = _ChannelHistory()
            kept.events.append(stored)
            kept.trim(history, now)
        else:
            stored = StoredEvent(0, None, channel, event, data, now)
        if state.sink is not None:
            state.sink.deliver(stored)

    def publish_acked(
        self,
        key: str,
        channel: str,
        event: str | None,
        data: str,
        history: HistoryPolicy,
    ) -> Deferred[str | None]:
        self.publish(key, channel, event, data, history)
        state = self._endpoints[key]
        return succeed(f"{self.epoch}.{state.seq}" if history.enabled else None)

    def disconnect(
        self, key: str, session_id: str | None = None, subject: str | None = None
    ) -> Deferred[int]:
        state = self._endpoints.get(key)
        if state is None or state.sink is None:
            return succeed(0)
        return succeed(state.sink.disconnect_here(session_id, subject))

    def push(self, key: str, session_id: str, payload: bytes) -> bool:
        state = self._endpoints.get(key)
        if state is None or state.sink is None:
            return False
        return bool(state.sink.deliver_to_session(session_id, payload))

    def forward(
        self,
        key: str,
        session_id: str,
        body: Any,
        header_session: str | None,
        principal: Any,
    ) -> None:
        return None

    def flushed(self, key: str) -> Deferred[None]:
        # Delivery here is a direct call: everything is in order already.
        return succeed(None)

    def settle(
        self,
        key: str,
        node_id: str,
        callback_id: str,
        session_id: str,
        args: Any,
        error: tuple[str, str] | None = None,
    ) -> None:
        return None

    def replay(
        self,
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Deferred[Replay]:
        return succeed(self.replay_now(key, channels, last_event_id))

    def replay_now(
        self,
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Replay:
        """
        L{replay}, answered synchronously: memory needs no waiting.
        """
        state = self._state(key)
        after = parse_event_id(last_event_id, self.epoch)
        reset = after is None or after > state.seq
        if reset:
            after = 0
        assert after is not None
        now = self._clock.seconds()
        found: list[StoredEvent] = []
        forgotten = state.forgotten
        for name, policy in channels:
            if not policy.enabled:
                continue
            kept = state.history.get(name)
            if kept is None:
                # A channel forgotten (or one sharing its slot, which then
                # hears reset too) lost events this client may have missed.
                if forgotten and forgotten[hash(name) % len(forgotten)] > after:
                    reset = True
                continue
            kept.trim(policy, now)
            if kept.evicted > after:
                reset = True
            found.extend(_after(kept.events, after))
        found.sort(key=lambda e: e.seq)
        return Replay(found, reset)

    def forget_history(
        self, key: str, channel: str, policy: HistoryPolicy, force: bool = False
    ) -> float | None:
        state = self._endpoints.get(key)
        kept = None if state is None else state.history.get(channel)
        if state is None or kept is None:
            return None
        events = kept.events
        if not force:
            kept.trim(policy, self._clock.seconds())
            if events:
                if policy.age is None:
                    return math.inf
                return events[-1].time + policy.age
        lost = events[-1].seq if events else kept.evicted
        if lost:
            slots = state.forgotten
            if not slots:
                slots.extend([0] * _FORGOTTEN_SLOTS)
            slot = hash(channel) % len(slots)
            slots[slot] = max(slots[slot], lost)
        del state.history[channel]
        return None

    def session_opened(self, key: str, session_id: str) -> None:
        self._state(key).sessions.add(session_id)

    def session_closed(self, key: str, session_id: str) -> None:
        state = self._endpoints.get(key)
        if state is not None:
            state.sessions.discard(session_id)

    def session_count(self, key: str) -> int:
        state = self._endpoints.get(key)
        return 0 if state is None else len(state.sessions)

    def presence(self, key: str, channel: str) -> Deferred[list[dict[str, Any]]]:
        state = self._endpoints.get(key)
        members = None if state is None else state.presence.get(channel)
        return succeed([] if members is None else [dict(e) for e in members.values()])

    def presence_joined(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        members = self._state(key).presence.setdefault(channel, {})
        members[entry["id"]] = entry

    def presence_left(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        state = self._endpoints.get(key)
        if state is None:
            return
        members = state.presence.get(channel)
        if members is not None:
            members.pop(entry["id"], None)
            if not members:
                del state.presence[channel]

    def watch_presence(
        self,
        key: str,
        channel: str,
        lost: Callable[[list[dict[str, Any]]], object] | None,
    ) -> None:
        # One node: no member can leave without this node saying so.
        return None

    def history_of(self, key: str, channel: str) -> list[StoredEvent]:
        """
        The events kept for C{channel} of endpoint C{key}, oldest first.
        """
        state = self._endpoints.get(key)
        kept = None if state is None else state.history.get(channel)
        return [] if kept is None else list(kept.events)


def _after(events: deque[StoredEvent], seq: int) -> Iterable[StoredEvent]:
    # Newest events are at the right; walk back only as far as needed.
    tail: list[StoredEvent] = []
    for stored in reversed(events):
        if stored.seq <= seq:
            break
        tail.append(stored)
    tail.reverse()
    return tail
