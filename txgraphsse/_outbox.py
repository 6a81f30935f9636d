# -*- test-case-name: tests.test_channel,tests.test_session -*-
"""
What each session gets in this reactor turn, written once per session.

Every write towards clients passes through an L{Outbox}: a channel's events go
in with the channel's member table, a push with its one session.  At the end
of the turn (one C{callLater(0)} per outbox, never one per session or per
event) the outbox writes each session's share as one transport write.  In the
common case, where every event of the turn went to the same members, the
events are joined and chunk-framed once and the same bytes object is written
to every stream.

It knows sessions only as things with a C{_write(payload, framed)} method.
It also tells a session that is holding bytes back what those bytes are
(L{Outbox.parts}): which of them are events that history keeps (a lagging
session need not hold a copy); L{Outbox.position} is the newest such event
handed out so far.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._broker import StoredEvent
from ._catchup import just_before
from ._encoder import chunk
from ._stats import Counters

__all__ = ["Outbox"]


class _Writable(Protocol):
    def _write(self, payload: bytes, framed: bytes | None = None) -> None: ...


#: One queued write: the receivers (a member table, a list, or one session),
#: the encoded events, and the one event that history keeps, if it is that.
_Op = tuple[Collection[Any], bytes, "StoredEvent | None"]


class Outbox:
    """
    The per-turn batch of one endpoint.
    """

    __slots__ = (
        "_call",
        "_clock",
        "_current",
        "_late",
        "_ops",
        "before",
        "counters",
        "flushes",
        "origin",
        "position",
    )

    def __init__(self, clock: IReactorTime, counters: Counters | None = None) -> None:
        self.counters = counters if counters is not None else Counters()
        self._clock = clock
        self._ops: list[_Op] = []
        self._call: IDelayedCall | None = None
        # Sessions that joined during this turn, with the number of ops that
        # were already queued: they must not get those.
        self._late: dict[Any, int] = {}
        self.flushes = 0
        #: The newest event with an id (one history keeps) handed out, and
        #: a cursor just before the first one.
        self.position: StoredEvent | None = None
        self.origin: StoredEvent | None = None
        #: The position when the flush in progress began.
        self.before: StoredEvent | None = None
        # The ops of the write in progress (and the session's among them).
        self._current: tuple[list[_Op], list[int] | None] | None = None

    def to_members(
        self,
        members: Collection[_Writable],
        payload: bytes,
        event: StoredEvent | None = None,
    ) -> None:
        """
        Queue C{payload} for every session in C{members} (as it stands when
        the turn ends, less sessions that join later in this turn).  A filter
        on receivers is the caller's to apply, so that its errors reach the
        caller and not the flush.

        @param event: the event C{payload} is, if history keeps it (it has
            an id): a lagging session can read it there again.
        """
        self._ops.append((members, payload, event if event and event.id else None))
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def to_session(self, session: _Writable, payload: bytes) -> None:
        """
        Queue C{payload} for one session.
        """
        self.to_members((session,), payload)

    def upto(self, session: _Writable) -> float:
        """
        The newest sequence number C{session}, lagging, may read from
        history now: those after it are queued in this turn, on their way
        to it (a session that joined in this turn is not sent what was
        queued before: it reads that in history).
        """
        for _, _, event in self._ops[self._late.get(session, 0) :]:
            if event is not None:
                return event.seq - 1
        return float("inf")

    def joined(self, session: _Writable) -> None:
        """
        C{session} starts receiving now: it must not get what was queued
        before in this turn.
        """
        if self._ops:
            self._late[session] = len(self._ops)

    def flush(self) -> None:
        """
        Write everything queued, one write per session.
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        ops = self._ops
        if not ops:
            return
        self._ops = []
        late = self._late
        self._late = {}
        self.flushes += 1

        self.before = self.position
        for _, _, event in ops:
            if event is not None and (
                self.position is None or event.seq > self.position.seq
            ):
                if self.position is None:
                    self.origin = just_before(event)
                self.position = event
        first = ops[0][0]
        if not late and all(m is first for m, _, _ in ops):
            payload = ops[0][1] if len(ops) == 1 else b"".join([p for _, p, _ in ops])
            framed = chunk(payload)
            receivers = list(first)
            self._current = (ops, None)
            for session in receivers:
                session._write(payload, framed)
            self._current = None
            counters = self.counters
            counters.deliveries += len(receivers) * len(ops)
            counters.writes += len(receivers)
            counters.bytes_sent += len(receivers) * len(payload)
            return

        shares: dict[Any, list[int]] = {}
        deliveries = 0
        for index, (members, _, _) in enumerate(ops):
            for session in members:
                if late and late.get(session, 0) > index:
                    continue
                deliveries += 1
                share = shares.get(session)
                if share is None:
                    shares[session] = [index]
                else:
                    share.append(index)
        sent = 0
        for session, indices in shares.items():
            if len(indices) == 1:
                payload = ops[indices[0]][1]
            else:
                payload = b"".join([ops[i][1] for i in indices])
            sent += len(payload)
            self._current = (ops, indices)
            session._write(payload)
        self._current = None
        counters = self.counters
        counters.deliveries += deliveries
        counters.writes += len(shares)
        counters.bytes_sent += sent

    def parts(self) -> list[tuple[bytes, StoredEvent | None]] | None:
        """
        While a session is being written to: what its write is made of,
        each part with the event it is if history keeps it; else L{None}.
        """
        current = self._current
        if current is None:
            return None
        ops, indices = current
        if indices is None:
            return [(payload, event) for _, payload, event in ops]
        return [(ops[i][1], ops[i][2]) for i in indices]
