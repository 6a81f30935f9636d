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
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._encoder import chunk
from ._stats import Counters

__all__ = ["Outbox"]


class _Writable(Protocol):
    def _write(self, payload: bytes, framed: bytes | None = None) -> None: ...


#: One queued write: the receivers (a member table, a list, or one session)
#: and the encoded events.
_Op = tuple[Collection[Any], bytes]


class Outbox:
    """
    The per-turn batch of one endpoint.
    """

    __slots__ = ("_call", "_clock", "_late", "_ops", "counters", "flushes")

    def __init__(self, clock: IReactorTime, counters: Counters | None = None) -> None:
        self.counters = counters if counters is not None else Counters()
        self._clock = clock
        self._ops: list[_Op] = []
        self._call: IDelayedCall | None = None
        # Sessions that joined during this turn, with the number of ops that
        # were already queued: they must not get those.
        self._late: dict[Any, int] = {}
        self.flushes = 0

    def to_members(self, members: Collection[_Writable], payload: bytes) -> None:
        """
        Queue C{payload} for every session in C{members} (as it stands when
        the turn ends, less sessions that join later in this turn).  A filter
        on receivers is the caller's to apply, so that its errors reach the
        caller and not the flush.
        """
        self._ops.append((members, payload))
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def to_session(self, session: _Writable, payload: bytes) -> None:
        """
        Queue C{payload} for one session.
        """
        self.to_members((session,), payload)

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

        first = ops[0][0]
        if not late and all(m is first for m, _ in ops):
            payload = ops[0][1] if len(ops) == 1 else b"".join([p for _, p in ops])
            framed = chunk(payload)
            receivers = list(first)
            for session in receivers:
                session._write(payload, framed)
            counters = self.counters
            counters.deliveries += len(receivers) * len(ops)
            counters.writes += len(receivers)
            counters.bytes_sent += len(receivers) * len(payload)
            return

        shares: dict[Any, list[bytes]] = {}
        deliveries = 0
        for index, (members, payload) in enumerate(ops):
            for session in members:
                if late and late.get(session, 0) > index:
                    continue
                deliveries += 1
                share = shares.get(session)
                if share is None:
                    shares[session] = [payload]
                else:
                    share.append(payload)
        sent = 0
        for session, parts in shares.items():
            payload = parts[0] if len(parts) == 1 else b"".join(parts)
            sent += len(payload)
            session._write(payload)
        counters = self.counters
        counters.deliveries += deliveries
        counters.writes += len(shares)
        counters.bytes_sent += sent
