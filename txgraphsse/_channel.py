# -*- test-case-name: tests.test_channel -*-
"""
Named channels: who belongs, what the channel's events are called, how
much of its past is kept, and how long a channel lives.

A L{Channel} owns membership (the sessions of this node that get its events)
and its configuration.  Publishing goes through the endpoint and the broker,
so that other nodes' members get the event too and history gets its id;
delivery comes back to L{Channel.members} through the endpoint's outbox.
A channel that keeps presence tells its L{Presence} of each member that
joins or leaves (L{txgraphsse._presence}: entries, the broker, batches).

A L{ChannelTable} owns an endpoint's channels by name: the configured ones,
kept for the endpoint's life, and the dynamic ones its clients name, each
dropped once it has no members here and its history has aged out, under a
cap on how many exist at once.  It asks a broker that keeps history in this
process (L{ILocalHistory}) whether a channel's history has aged out, and
has it forgotten with the channel, and gives each channel that keeps
presence its L{Presence} (closed with the table); it never publishes,
delivers or touches a session beyond counting a channel's members.  This
module knows sessions only as members, never HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._broker import HistoryPolicy, IBroker, ILocalHistory
from ._encoder import encode_event
from ._messages import ProtocolError, dumps
from ._presence import Presence

if TYPE_CHECKING:
    from ._session import SSESession

__all__ = [
    "MAX_DYNAMIC_NAME",
    "Channel",
    "ChannelSpec",
    "ChannelTable",
    "check_channel_name",
    "check_dynamic_name",
    "missed_by",
    "specs_of",
]

#: The longest name a client may give a dynamic channel, in characters.
MAX_DYNAMIC_NAME = 128


def check_channel_name(name: str) -> None:
    """
    @raise ValueError: C{name} cannot name a channel: empty, with a comma
        (C{?channels=} separates names with them), or not something an
        event name can carry.
    """
    if not name or "," in name:
        raise ValueError(f"bad channel name: {name!r}")
    encode_event("", name)


def check_dynamic_name(name: str, longest: int = MAX_DYNAMIC_NAME) -> None:
    """
    Refuse a name a client may not give a channel it makes: one
    L{check_channel_name} refuses, one over C{longest} characters, or one
    with a character that is not printable (by C{str.isprintable}: control
    characters such as NUL, CR and LF, the line and paragraph separators
    U+2028 and U+2029, format characters such as bidi overrides, spaces
    other than U+0020, unassigned code points).

    @raise ValueError: saying why.
    """
    if len(name) > longest:
        raise ValueError(f"over {longest} characters")
    if not name.isprintable():
        raise ValueError("a character that is not printable")
    try:
        check_channel_name(name)
    except ValueError:
        raise ValueError("not something an event name can carry") from None


@frozen
class ChannelSpec:
    """
    How to set up a channel, for C{setup_sse(channels=[...])} where a plain
    name is not enough.

    @ivar name: the channel's name, as clients ask for it in C{?channels=}.
    @ivar event: the event name its events carry; by default the channel's
        name.
    @ivar history: how many of its events to keep for replay, or a
        L{HistoryPolicy}; L{None} takes the endpoint's default.
    @ivar presence: whether it keeps presence: who is in it, on every node
        (L{Channel.presence}), and C{presence} events to its members as
        sessions join and leave.
    """

    name: str
    event: str | None = None
    history: int | HistoryPolicy | None = None
    presence: bool = False

    def history_policy(self, default: HistoryPolicy) -> HistoryPolicy:
        """
        What the channel keeps: C{default} (the endpoint's) unless it says,
        a count keeping C{default}'s age.
        """
        history = self.history
        if history is None:
            return default
        if isinstance(history, HistoryPolicy):
            return history
        return HistoryPolicy(history, default.age)

    def event_name(self, default: bool) -> str | None:
        """
        The event name its events carry: C{event}, or the channel's name, or
        none for the C{default} channel (whose events are C{message}s).
        """
        if self.event is not None:
            return self.event
        return None if default else self.name


def specs_of(
    channels: str, presence: str = "", dynamic: bool = False
) -> list[ChannelSpec]:
    """
    The channels named in C{channels} (comma-separated, as on a command
    line), those named in C{presence} keeping presence.

    @param dynamic: whether clients may make channels: then a name of
        C{presence} not among C{channels} is a channel of its own.
    @raise ValueError: a name of C{presence} is not among C{channels}, and
        channels are not C{dynamic}.
    """

    def names(value: str) -> list[str]:
        return list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))

    keeping = names(presence)
    named = names(channels)
    unknown = sorted(set(keeping) - set(named))
    if unknown and not dynamic:
        raise ValueError(f"{', '.join(unknown)} not among the channels")
    return [
        ChannelSpec(name, presence=name in keeping)
        for name in dict.fromkeys([*named, *keeping])
    ]


class _Publisher(Protocol):
    def _broadcast(
        self,
        channel: Channel,
        data: Any,
        event: str | None,
        filter: Callable[[SSESession], bool] | None,
    ) -> int: ...


class Channel:
    """
    One channel of an endpoint.

    @ivar name: its name.
    @ivar event: the event name of its events (L{None}: C{message}).
    @ivar history: what it keeps for replay.
    @ivar members: this node's sessions in it; read it, do not change it:
        use L{register} and L{deregister}.
    """

    __slots__ = (
        "_emptied",
        "_presence",
        "_publisher",
        "event",
        "history",
        "members",
        "name",
    )

    def __init__(
        self,
        publisher: _Publisher,
        name: str,
        event: str | None,
        history: HistoryPolicy,
    ) -> None:
        self._publisher = publisher
        self.name = name
        self.event = event
        self.history = history
        self.members: dict[SSESession, None] = {}
        #: Told when the last member leaves: set for a dynamic channel only.
        self._emptied: Callable[[Channel], None] | None = None
        #: Told of each member that joins or leaves: set for a channel that
        #: keeps presence only.
        self._presence: Presence | None = None

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} members={len(self.members)}>"

    def broadcast(
        self,
        data: Any,
        event: str | None = None,
        filter: Callable[[SSESession], bool] | None = None,
    ) -> int:
        """
        Send C{data} to every member, on every node: text as it is, bytes as
        UTF-8, anything else as JSON.

        @param event: the event name, instead of the channel's.
        @param filter: only members for which it returns true get the event.
            A filtered event goes to this node's members only and is not kept
            in history, since a function cannot travel to other nodes or be
            applied to a client that reconnects later.
        @return: the number of this node's members the event was queued for.
        """
        return self._publisher._broadcast(self, data, event, filter)

    def register(self, session: SSESession) -> None:
        """
        Make C{session} a member: it gets this channel's events from now on.
        """
        members = self.members
        if self._presence is not None and session not in members:
            self._presence.joined(session)
        members[session] = None
        if self.name not in session.channels:
            session.channels += (self.name,)

    def deregister(self, session: SSESession) -> None:
        """
        Make C{session} no longer a member.
        """
        members = self.members
        if session in members:
            del members[session]
            if self._presence is not None:
                self._presence.left(session)
            if not members and self._emptied is not None:
                self._emptied(self)
        if self.name in session.channels:
            session.channels = tuple(n for n in session.channels if n != self.name)

    @property
    def dynamic(self) -> bool:
        """
        Whether a client made it: it goes once it is empty and its history
        has aged out (see L{ChannelTable}).
        """
        return self._emptied is not None

    @property
    def session_count(self) -> int:
        """
        How many of this node's sessions are members.
        """
        return len(self.members)

    @property
    def keeps_presence(self) -> bool:
        """
        Whether it keeps presence (C{ChannelSpec(name, presence=True)}).
        """
        return self._presence is not None

    def presence(self) -> Deferred[list[dict[str, Any]]]:
        """
        Who is in this channel, on every node: for each member session,
        C{{"id": session id, "subject": its principal's subject or None,
        "info": its info or None}}, in no particular order.  A session is
        listed once its stream has opened (C{on_connection} has run).

        @raise ValueError: the channel does not keep presence.
        """
        presence = self._presence
        if presence is None:
            raise ValueError(f"channel {self.name!r} does not keep presence")
        return presence.members()

    def sessions(self) -> Iterator[SSESession]:
        return iter(list(self.members))


class ChannelTable:
    """
    An endpoint's channels by name, and how long each one lives.

    A configured channel (set up with the endpoint, or added later with
    L{add}) lives as long as the endpoint.  A dynamic one, made by L{join}
    for a client that named it, lives while it has members on this node,
    then until its history has aged out: at once (the next reactor turn)
    if it keeps none or if the broker keeps history elsewhere (Redis:
    replay asks it there, and a channel made again replays as before).
    One timer serves them all, due when the soonest may go, checked to
    L{granularity}; publishing and delivery never touch it.

    At most L{max_dynamic} dynamic channels exist at once, per endpoint.
    When a stream asks for more, the empty ones nearest their end go first
    (their history with them); it is refused (C{503 too_many_channels})
    only when that is not enough.

    @ivar channels: every channel, by name: the endpoint's C{channels}.
    @ivar max_dynamic: the most dynamic channels at once.
    @ivar max_name: the longest name of a dynamic channel, in characters.
    @ivar unaged_history: seconds a dynamic channel's history is kept
        where the endpoint's history has no age: an empty channel whose
        history never aged would never go.
    @ivar granularity: how far, in seconds, an empty channel's end may be
        rounded up, so that channels ending together go in one turn.
    """

    max_dynamic = 10_000
    max_name = MAX_DYNAMIC_NAME
    unaged_history = 300.0
    granularity = 1.0

    def __init__(
        self,
        publisher: _Publisher,
        clock: IReactorTime,
        broker: IBroker,
        key: str,
        history: HistoryPolicy,
        default_name: str,
    ) -> None:
        """
        @param publisher: the endpoint its channels publish through.
        @param broker: the endpoint's broker, which keeps the presence of
            the channels that keep it; if it provides L{ILocalHistory}, a
            dynamic channel's history is forgotten with it.
        @param key: the endpoint's key with the broker.
        @param history: the endpoint's history, for channels that do not
            say theirs.
        @param default_name: the name of the default channel, whose events
            are C{message}s.
        """
        self.channels: dict[str, Channel] = {}
        self._publisher = publisher
        self._clock = clock
        self._broker = broker
        self._local: ILocalHistory | None = ILocalHistory(broker, None)
        self._key = key
        self._history = history
        self._default_name = default_name
        self._dynamic: set[str] = set()
        # Empty dynamic channels to look at, by name, each at most once,
        # and the same as a heap of (when, name).
        self._due: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []
        self._timer: IDelayedCall | None = None
        self._closed = False
        # The most channels since the tables were last compacted.
        self._peak = 0

    @property
    def dynamic_count(self) -> int:
        """
        How many dynamic channels exist now.
        """
        return len(self._dynamic)

    def add(self, spec: str | ChannelSpec) -> Channel:
        """
        Add a configured channel, or return the one of that name (a dynamic
        one becomes configured: the application has asked for it; one that
        C{spec} says keeps presence keeps it from now on).

        @raise ValueError: for a name or event name the wire cannot carry.
        """
        if isinstance(spec, str):
            spec = ChannelSpec(spec)
        existing = self.channels.get(spec.name)
        if existing is not None:
            existing._emptied = None
            self._dynamic.discard(spec.name)
            if spec.presence and existing._presence is None:
                presence = self._keep_presence(existing)
                for session in existing.members:
                    presence.joined(session)
            return existing
        check_channel_name(spec.name)
        event = spec.event_name(default=spec.name == self._default_name)
        if event is not None:
            encode_event("", event)  # refuse a name the wire cannot carry
        channel = Channel(
            self._publisher, spec.name, event, spec.history_policy(self._history)
        )
        self.channels[spec.name] = channel
        if spec.presence:
            self._keep_presence(channel)
        return channel

    def _keep_presence(self, channel: Channel) -> Presence:
        presence = Presence(self._broker, self._clock, self._key, channel.name)
        channel._presence = presence
        return presence

    def join(self, names: Iterable[str]) -> None:
        """
        Make the dynamic channels among C{names} that do not exist yet, for
        a stream about to join them (the admission has checked the names:
        L{check_dynamic_name}).  One that no stream joins goes at the next
        turn.

        @raise ProtocolError: C{503 too_many_channels}, making none, when
            they would take the endpoint past L{max_dynamic}.
        @raise ValueError: for a name L{check_dynamic_name} refuses.
        """
        new = [name for name in dict.fromkeys(names) if name not in self.channels]
        if not new:
            return
        for name in new:
            check_dynamic_name(name, self.max_name)
        over = len(self._dynamic) + len(new) - self.max_dynamic
        if over > 0 and self._evict(over) < over:
            raise ProtocolError(
                503,
                "too_many_channels",
                f"this endpoint holds as many channels as it may"
                f" ({self.max_dynamic}); retry later",
            )
        policy = self._dynamic_policy()
        for name in new:
            channel = Channel(self._publisher, name, name, policy)
            channel._emptied = self._emptied
            self.channels[name] = channel
            self._dynamic.add(name)
            self._emptied(channel)
        self._peak = max(self._peak, len(self.channels))

    def close(self) -> None:
        """
        The endpoint has terminated: stop the timer, and drop nothing more.
        """
        self._closed = True
        for channel in self.channels.values():
            if channel._presence is not None:
                channel._presence.close()
        self._due.clear()
        self._queue.clear()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _dynamic_policy(self) -> HistoryPolicy:
        history = self._history
        if history.enabled and history.age is None:
            return HistoryPolicy(history.size, self.unaged_history)
        return history

    # Ending: empty dynamic channels wait in a heap for their end.

    def _emptied(self, channel: Channel) -> None:
        """
        C{channel}, a dynamic one, has no members now (or has just been
        made): look at it at the next turn.
        """
        name = channel.name
        if self._closed or name in self._due:
            return
        now = self._clock.seconds()
        self._due[name] = now
        heappush(self._queue, (now, name))
        self._schedule()

    def _schedule(self) -> None:
        queue = self._queue
        timer = self._timer
        if not queue:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        when = queue[0][0]
        delay = max(0.0, when - self._clock.seconds())
        if timer is None or not timer.active():
            self._timer = self._clock.callLater(delay, self._sweep)
        elif timer.getTime() > when:
            timer.reset(delay)

    def _sweep(self) -> None:
        """
        Drop the empty dynamic channels whose history has aged out; look
        again later at those whose has not.
        """
        self._timer = None
        now = self._clock.seconds()
        queue = self._queue
        later: list[tuple[float, str]] = []
        while queue and queue[0][0] <= now:
            _, name = heappop(queue)
            del self._due[name]
            channel = self._waiting(name)
            if channel is None:
                continue
            end = self._drop(channel, force=False)
            if end is not None and not math.isinf(end):
                step = self.granularity
                when = (math.floor(end / step) + 1) * step
                later.append((when if when > now else now + step, name))
        for when, name in later:
            self._due[name] = when
            heappush(queue, (when, name))
        self._compact()
        self._schedule()

    def _compact(self) -> None:
        """
        Once most channels of a burst have gone, let go of the room their
        tables grew to: a C{dict} never shrinks as keys leave it.
        """
        channels = self.channels
        if self._peak < 1024 or len(channels) * 4 > self._peak:
            return
        kept = dict(channels)
        channels.clear()  # the endpoint holds this very dict
        channels.update(kept)
        self._dynamic = set(self._dynamic)
        self._due = dict(self._due)
        self._peak = len(channels)

    def _waiting(self, name: str) -> Channel | None:
        """
        The channel C{name} if it is still dynamic and empty.
        """
        channel = self.channels.get(name)
        if channel is None or channel._emptied is None or channel.members:
            return None
        return channel

    def _evict(self, count: int) -> int:
        """
        Drop up to C{count} empty dynamic channels, those nearest their end
        first, history and all.

        @return: how many were dropped.
        """
        dropped = 0
        queue = self._queue
        while dropped < count and queue:
            _, name = heappop(queue)
            del self._due[name]
            channel = self._waiting(name)
            if channel is not None:
                self._drop(channel, force=True)
                dropped += 1
        self._schedule()
        return dropped

    def _drop(self, channel: Channel, force: bool) -> float | None:
        """
        Drop C{channel} unless (without C{force}) its broker still keeps
        history of it here.

        @return: L{None} if dropped; else when its history ages out.
        """
        name = channel.name
        local = self._local
        if local is not None and channel.history.enabled:
            end = local.forget_history(self._key, name, channel.history, force)
            if end is not None:
                return end
        del self.channels[name]
        self._dynamic.discard(name)
        channel._emptied = None
        return None


def missed_by(
    channels: Iterable[Channel], everything: bool, position: str | None
) -> tuple[list[SSESession], bytes]:
    """
    Who must be told that this node may have missed events, and what they
    are told: a C{reset} whose id is where the node carries on (so that a
    client reconnecting from there is not told twice).

    @param everything: whether the events of every channel may be gone (a
        new epoch: the store lost them), or only those of the channels that
        keep no history (after an outage that history covered).
    """
    members: dict[SSESession, None] = {}
    for channel in channels:
        if everything or not channel.history.enabled:
            members.update(channel.members)
    reset = dumps({"route": "reset", "args": {"lastEventId": position}})
    return list(members), encode_event(reset, "reset", position)
