# -*- test-case-name: tests.test_lag -*-
"""
A lagging session's way back: a cursor into its channels' shared history.

A session whose reader falls behind holds back what it cannot write.  Most
of that is channel events that history keeps already, shared by every
session: holding a private copy of each for each lagging session is what
made a healthy reader in a burst cost a megabyte and then its stream.
L{Lag} is what such a session holds instead: the last event it wrote (its
cursor) and, in order, the few things history cannot give back (pushes,
events of channels without history).  When its transport drains it reads
the events after its cursor from the broker, a round at a time, and writes
them with the kept things at their places; once it has caught up with the
live events it writes them directly again.

This module owns the cursor, the kept things and one round's reading; the
session owns when a round runs and the writing.  It knows the broker and
the channels only by the replay they answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from ._broker import HistoryPolicy, IBroker, Replay, StoredEvent
from ._encoder import encode_event
from ._opening import encode_replay

__all__ = [
    "ROUND_BYTES",
    "Held",
    "Lag",
    "Write",
    "drop_oldest",
    "grouped",
    "just_before",
    "reset_event",
    "resume_cursor",
    "split_events",
]

#: About how many bytes one write of a round carries.
ROUND_BYTES = 64 << 10


def just_before(event: StoredEvent) -> StoredEvent:
    """
    A cursor just before C{event}: both brokers' ids are C{<epoch>.<seq>}
    (L{txgraphsse.InMemoryBroker}, the Redis broker), so the id of the
    sequence number before is the same epoch's.
    """
    epoch, _, _ = (event.id or "").rpartition(".")
    return StoredEvent(event.seq - 1, f"{epoch}.{event.seq - 1}", "", None, "", 0.0)


def resume_cursor(last_event_id: str) -> StoredEvent:
    """
    The cursor of a client that resumes from C{last_event_id}: the broker
    places it (the sequence number is not known here: every event it
    answers is after it).
    """
    return StoredEvent(-1, last_event_id, "", None, "", 0.0)


def grouped(held: list[Held]) -> Iterator[tuple[int, bytes]]:
    """
    C{held}'s payloads joined into writes of about L{ROUND_BYTES}, each
    with the index of the first entry after it.
    """
    index = 0
    while index < len(held):
        group = [held[index][0]]
        size = len(group[0])
        index += 1
        while index < len(held) and size + len(held[index][0]) <= ROUND_BYTES:
            group.append(held[index][0])
            size += len(held[index][0])
            index += 1
        yield index, group[0] if len(group) == 1 else b"".join(group)


def split_events(payload: bytes) -> list[bytes]:
    """
    The whole events (and comments) C{payload} is made of, each with its
    blank line.
    """
    parts = payload.split(b"\n\n")
    return [part + b"\n\n" for part in parts[:-1] if part] + (
        [parts[-1]] if parts[-1] else []
    )


#: What waits for a session: each payload, whether history keeps all of
#: it, and the newest event handed out before it.
Held = tuple[bytes, bool, int]


def drop_oldest(entries: list[Held], bound: int) -> tuple[list[Held], int, int]:
    """
    C{entries} cut, event by event and oldest first, to at most C{bound}
    bytes: never the newest events.

    @return: the events kept (each an entry of its own), their size, and
        how many were dropped.
    """
    events = [
        (event, kept, position)
        for payload, kept, position in entries
        for event in split_events(payload)
    ]
    size = sum(len(event) for event, _, _ in events)
    first = 0
    while first < len(events) and size > bound:
        size -= len(events[first][0])
        first += 1
    return events[first:], size, first


class _Channel(Protocol):
    name: str
    event: str | None
    history: HistoryPolicy


class Lag:
    """
    What a lagging session holds: its cursor, and the kept things.

    @ivar cursor: the last event with an id that the session has written.
    @ivar kept: what history cannot give back, in order, each with the
        sequence number of the newest event handed out before it.
    @ivar kept_bytes: their size.
    @ivar skipped: whether an event history keeps was passed over since the
        last round began (then another round must run).
    @ivar reading: whether a round is waiting for the broker.
    """

    __slots__ = ("cursor", "first", "kept", "kept_bytes", "reading", "skipped")

    def __init__(self, cursor: StoredEvent, first: bool = False) -> None:
        """
        @param first: whether it is a stream's first replay (the client's
            C{Last-Event-ID}): then a cursor out of history is told
            C{reset} and goes on with what history holds.
        """
        self.cursor = cursor
        self.first = first
        self.kept: list[tuple[int, bytes]] = []
        self.kept_bytes = 0
        self.skipped = True
        self.reading = False

    def keep(self, position: int, payload: bytes) -> None:
        self.kept.append((position, payload))
        self.kept_bytes += len(payload)

    def take_preamble(self) -> list[bytes]:
        """
        Take out what goes before every event (a new stream's preamble).
        """
        taken = []
        while self.kept and self.kept[0][0] < 0:
            payload = self.kept.pop(0)[1]
            self.kept_bytes -= len(payload)
            taken.append(payload)
        return taken

    def reset_first(self) -> None:
        """
        A stream's first replay found its client's id unknown or too old:
        a C{reset} goes after the preamble, then what history holds.
        """
        kept = self.kept
        index = 0
        while index < len(kept) and kept[index][0] < 0:
            index += 1
        event = reset_event(self.cursor.id)
        kept.insert(index, (-1, event))
        self.kept_bytes += len(event)

    def write_round(
        self,
        replay: Replay,
        channels: Mapping[str, _Channel],
        upto: float,
        send: Callable[[bytes], object],
        stopped: Callable[[], bool],
    ) -> bool:
        """
        Write one L{round} through C{send}, moving the cursor, until
        C{stopped()} (the transport is full again): the rest is read again
        from the cursor, and its kept things wait again.

        @return: whether it leaves nothing to catch up.
        """
        writes, done = self.round(replay, channels, upto)
        for index, (payload, newest, _) in enumerate(writes):
            send(payload)
            if newest is not None:
                self.cursor = newest
            if stopped():
                self.untake(writes[index + 1 :])
                return False
        return done

    def untake(self, writes: list[Write]) -> None:
        """
        Put back, first, the kept things of C{writes}, which were not
        written (their events are read from history again).
        """
        items = [item for _, _, taken in writes for item in taken]
        self.kept[:0] = items
        self.kept_bytes += sum(len(payload) for _, payload in items)

    def read(
        self,
        broker: IBroker,
        key: str,
        channels: list[_Channel],
    ) -> Deferred[Replay]:
        """
        Ask for the events after the cursor in C{channels}.
        """
        self.reading = True
        self.skipped = False
        return broker.replay(
            key, [(c.name, c.history) for c in channels], self.cursor.id
        ).addBoth(self._read)

    def _read(self, result: Any) -> Any:
        self.reading = False
        return result

    def round(
        self,
        replay: Replay,
        channels: Mapping[str, _Channel],
        upto: float,
        budget: int = 4 * ROUND_BYTES,
    ) -> tuple[list[Write], bool]:
        """
        The writes of one round: the events of C{replay} after the cursor
        and up to sequence number C{upto} (the newest handed out: later ones
        are on their way to the session, live), with the kept things at
        their places, in writes of about L{ROUND_BYTES} and about C{budget}
        in all; each with the newest event it holds, for the cursor once it
        is written, and the kept things it holds (taken out of L{kept}: put
        them back with L{untake} if it is not written).

        @return: the writes, and whether they leave nothing to catch up.
        """

        def event_of(name: str) -> str | None:
            channel = channels.get(name)
            return channel.event if channel is not None else None

        writes: list[Write] = []
        parts: list[bytes] = []
        taken: list[tuple[int, bytes]] = []
        size = total = 0
        newest: StoredEvent | None = None

        def cut() -> None:
            nonlocal size, newest, taken
            if parts:
                writes.append((b"".join(parts), newest, taken))
                parts.clear()
                taken = []
            size = 0
            newest = None

        def add(payload: bytes, event: StoredEvent | None) -> None:
            nonlocal size, total, newest
            parts.append(payload)
            size += len(payload)
            total += len(payload)
            if event is not None:
                newest = event
            if size >= ROUND_BYTES:
                cut()

        def take() -> None:
            item = kept.pop(0)
            self.kept_bytes -= len(item[1])
            taken.append(item)
            add(item[1], None)

        kept = self.kept
        after = self.cursor.seq
        complete = True
        for stored in replay.events:
            if stored.seq <= after:
                continue
            if stored.seq > upto:
                break
            if total >= budget:
                complete = False
                break
            while kept and kept[0][0] < stored.seq:
                take()
            name = stored.event or event_of(stored.channel)
            add(encode_event(stored.data, name, stored.id), stored)
        if complete:
            while kept and kept[0][0] <= upto:
                take()
        cut()
        return writes, complete and not kept and not self.skipped


#: One write of a round: its bytes, the newest event in it, and the kept
#: things it holds.
Write = tuple[bytes, StoredEvent | None, list[tuple[int, bytes]]]


def reset_event(last_event_id: str | None) -> bytes:
    """
    The C{reset} a lagging session gets when its cursor has left history.
    """
    return encode_replay(Replay((), True), last_event_id, _no_event)


def _no_event(name: str) -> str | None:
    return None
