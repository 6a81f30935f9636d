# -*- test-case-name: tests.test_channel -*-
"""
Named channels: who belongs, what the channel's events are called, and how
much of its past is kept.

A L{Channel} owns membership (the sessions of this node that get its events)
and its configuration.  Publishing goes through the endpoint and the broker,
so that other nodes' members get the event too and history gets its id;
delivery comes back to L{Channel.members} through the endpoint's outbox.  It
knows sessions only as members, never HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen

from ._broker import HistoryPolicy
from ._encoder import encode_event

if TYPE_CHECKING:
    from ._session import SSESession

__all__ = ["Channel", "ChannelSpec", "check_channel_name"]


def check_channel_name(name: str) -> None:
    """
    @raise ValueError: C{name} cannot name a channel: empty, with a comma
        (C{?channels=} separates names with them), or not something an
        event name can carry.
    """
    if not name or "," in name:
        raise ValueError(f"bad channel name: {name!r}")
    encode_event("", name)


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
    """

    name: str
    event: str | None = None
    history: int | HistoryPolicy | None = None

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

    __slots__ = ("_publisher", "event", "history", "members", "name")

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
        self.members[session] = None
        if self.name not in session.channels:
            session.channels += (self.name,)

    def deregister(self, session: SSESession) -> None:
        """
        Make C{session} no longer a member.
        """
        self.members.pop(session, None)
        if self.name in session.channels:
            session.channels = tuple(n for n in session.channels if n != self.name)

    @property
    def session_count(self) -> int:
        """
        How many of this node's sessions are members.
        """
        return len(self.members)

    def sessions(self) -> Iterator[SSESession]:
        return iter(list(self.members))
