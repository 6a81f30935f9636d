# -*- test-case-name: tests.test_presence -*-
"""
Presence: who is in a channel that keeps it, and the C{presence} events
that tell its members who joined and who left.

A L{Presence} belongs to one channel of one endpoint.  It owns a member's
entry (C{{"id", "subject", "info"}}), the moment the broker hears of it
(at the end of the reactor turn the session joined in, so that
C{on_connection} has set its C{info} by then), and the coalescing of joins
and leaves into at most one batch per L{Presence.interval}: the first
change arms a timer on the endpoint's clock, and what changes until it
fires goes in that batch (a session that joined and left within one batch
is in neither list).  Each node publishes its own batches as channel events
without history, through the broker, so every node's members of the
channel hear of every node's joins and leaves; the broker tells it of
members that left without their node saying so (a dead node's), and those
go in its next batch.

The broker keeps the entries (L{IBroker.presence_joined}); this module
keeps only the members it has not announced yet and the batch it gathers.
It never writes to a session, and knows one only as an id, a principal and
an C{info}.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from . import _messages as messages
from ._broker import HistoryPolicy, IBroker

__all__ = ["PRESENCE_EVENT", "Member", "Presence", "entry_of"]

#: The event name of a presence batch.
PRESENCE_EVENT = "presence"

#: A batch is a channel event that no history keeps.
_NO_HISTORY = HistoryPolicy()


class Member(Protocol):
    """
    What presence reads of a session.
    """

    @property
    def id(self) -> str: ...

    @property
    def principal(self) -> Any: ...

    @property
    def info(self) -> dict[str, Any] | None: ...


def entry_of(member: Member) -> dict[str, Any]:
    """
    C{member}'s presence entry: its session id, its principal's C{subject}
    (L{None} for a principal without one) and its C{info}.
    """
    return {
        "id": member.id,
        "subject": getattr(member.principal, "subject", None),
        "info": member.info,
    }


class Presence:
    """
    The presence of one channel: this node's joins and leaves, told to the
    broker and gathered into batches for the channel's members.

    @ivar channel: the channel's name.
    @ivar interval: seconds a batch gathers changes before it is sent.
    """

    interval = 1.0

    _log = Logger()

    def __init__(
        self, broker: IBroker, clock: IReactorTime, key: str, channel: str
    ) -> None:
        """
        @param key: the endpoint's key with C{broker}.
        """
        self._broker = broker
        self._clock = clock
        self._key = key
        self.channel = channel
        # Members that joined this turn, not yet told to the broker.
        self._unannounced: dict[Member, None] = {}
        self._announcing: IDelayedCall | None = None
        # The batch being gathered, by session id.
        self._joined: dict[str, dict[str, Any]] = {}
        self._left: dict[str, dict[str, Any]] = {}
        self._batch: IDelayedCall | None = None
        self._closed = False
        broker.watch_presence(key, channel, self.lost)

    def __repr__(self) -> str:
        return f"<Presence {self.channel!r}>"

    # What the channel tells it

    def joined(self, member: Member) -> None:
        """
        C{member} joined the channel: announce it at the end of this turn.
        """
        if self._closed:
            return
        self._unannounced[member] = None
        if self._announcing is None:
            self._announcing = self._clock.callLater(0, self.announce)

    def left(self, member: Member) -> None:
        """
        C{member} left the channel (or its stream ended).
        """
        if member in self._unannounced:
            del self._unannounced[member]  # never announced: nobody heard of it
            return
        entry = self._entry(member)
        self._broker.presence_left(self._key, self.channel, entry)
        if self._closed:
            return
        if self._joined.pop(member.id, None) is None:
            self._left[member.id] = entry
        self._arm()

    def lost(self, entries: list[dict[str, Any]]) -> None:
        """
        Members held elsewhere left without their node saying so (it died):
        they go in the next batch.
        """
        if self._closed:
            return
        for entry in entries:
            session_id = entry.get("id")
            if isinstance(session_id, str):
                self._left[session_id] = entry
        if entries:
            self._arm()

    def announce(self) -> None:
        """
        Tell the broker now of the members that joined since the last
        announcement.
        """
        timer, self._announcing = self._announcing, None
        if timer is not None and timer.active():
            timer.cancel()
        members, self._unannounced = self._unannounced, {}
        if not members:
            return
        for member in members:
            entry = self._entry(member)
            self._broker.presence_joined(self._key, self.channel, entry)
            if self._left.pop(member.id, None) is None:
                self._joined[member.id] = entry
        self._arm()

    def members(self) -> Deferred[list[dict[str, Any]]]:
        """
        The channel's members on every node the broker knows, each as its
        entry (this node's, announced now if they were not yet).
        """
        self.announce()
        return self._broker.presence(self._key, self.channel)

    def close(self) -> None:
        """
        The endpoint terminates: send the batch gathered so far at once,
        and gather no more.
        """
        if self._closed:
            return
        self._closed = True
        for timer in (self._announcing, self._batch):
            if timer is not None and timer.active():
                timer.cancel()
        self._announcing = None
        self._unannounced.clear()
        self._send()
        self._broker.watch_presence(self._key, self.channel, None)

    # The batch

    def _entry(self, member: Member) -> dict[str, Any]:
        entry = entry_of(member)
        try:
            messages.dumps(entry)
        except (TypeError, ValueError):
            self._log.warn(
                "Session {session}'s info is not JSON: presence shows none",
                session=member.id[:8],
            )
            entry["info"] = None
        return entry

    def _arm(self) -> None:
        if self._batch is None and not self._closed:
            self._batch = self._clock.callLater(self.interval, self._send)

    def _send(self) -> None:
        """
        Publish the batch gathered, if anything is in it.
        """
        self._batch = None
        joined, self._joined = self._joined, {}
        left, self._left = self._left, {}
        if not joined and not left:
            return
        data = messages.dumps(
            {
                "route": PRESENCE_EVENT,
                "args": {
                    "channel": self.channel,
                    "joined": list(joined.values()),
                    "left": list(left.values()),
                },
            }
        )
        self._broker.publish(self._key, self.channel, PRESENCE_EVENT, data, _NO_HISTORY)
