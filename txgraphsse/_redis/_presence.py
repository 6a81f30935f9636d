# -*- test-case-name: tests.test_presence,tests.test_redis -*-
"""
Presence across nodes: who is in each channel that keeps presence, on
every node, with a time to live.

Each node keeps its members of such a channel in a hash of its own (session
id -> entry, as JSON), and its place in the channel's index: a sorted set
of nodes, each scored with the moment (Redis's clock, in ms) its entries
run out.  It refreshes both every C{ttl / 3} seconds; a read lists the
entries of the nodes whose moment has not come, so a node that dies (or
loses Redis) leaves presence at most C{ttl} seconds after its last
refresh.  The first live node with members of the channel to refresh after
that takes the dead node's entries out and hands them to its endpoint
(L{PresenceRosters.watch}): they left.  A node writes its entries again
whenever the link comes back, and when Redis has lost them.

It owns those keys (C{P:K:pn:CHANNEL}, C{P:K:ph:NODE:CHANNEL}) and this
node's copy of its entries; it knows entries only as JSON objects with an
C{id}, and never publishes events, touches sessions or reads the bus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._context import Context, Part
from ._scripts import PRESENCE_READ, PRESENCE_REFRESH, PRESENCE_WRITE
from ._state import LOG_NAMESPACE, encode

__all__ = ["Lost", "PresenceRosters", "decode"]

_log = Logger(namespace=LOG_NAMESPACE)

#: An endpoint key and one of its channels.
_Where = tuple[str, str]

#: The most entries one script writes: a burst of joins goes in several.
_CHUNK = 500

#: Told the entries of members that left without their node saying so.
Lost = Callable[[list[dict[str, Any]]], object]


def decode(raw: Iterable[Any]) -> list[dict[str, Any]]:
    """
    The entries among C{raw} (JSON texts), once each by id; what is not an
    entry is left out.
    """
    found: dict[str, dict[str, Any]] = {}
    for text in raw:
        try:
            entry = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            found.setdefault(entry["id"], entry)
    return list(found.values())


class PresenceRosters(Part):
    """
    This node's members of the channels that keep presence, kept in Redis
    for the other nodes to read, and read back for all of them.

    @ivar interval: seconds between refreshes (a third of the ttl).
    """

    def __init__(self, context: Context, ttl: float) -> None:
        """
        @param ttl: seconds a node's entries outlive its last refresh.
        """
        super().__init__(context)
        self._ttl_ms = max(1, int(ttl * 1000))
        self.interval = ttl / 3
        #: This node's entries, as JSON, by channel and session id.
        self._mine: dict[_Where, dict[str, str]] = {}
        #: Every channel this node has written entries of (to empty them
        #: again after an outage).
        self._written: set[_Where] = set()
        #: What changed this turn, written at its end.
        self._added: dict[_Where, dict[str, str]] = {}
        self._removed: dict[_Where, set[str]] = {}
        self._flushing: IDelayedCall | None = None
        self._watchers: dict[_Where, Lost] = {}
        self._loop: LoopingCall | None = None

    # Keys

    def _keys(self, where: _Where) -> list[str]:
        """
        The channel's index, and this node's hash of it.
        """
        key, channel = where
        names = self._names
        return [
            names.key(key, f"pn:{channel}"),
            names.key(key, f"ph:{names.node_id}:{channel}"),
        ]

    def _around(self, where: _Where) -> list[str]:
        """
        The head and tail of any node's hash of the channel, around its id.
        """
        key, channel = where
        return [self._names.key(key, "ph:"), f":{channel}"]

    # What the broker is told

    def joined(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        L{IBroker.presence_joined}: kept here, written at the end of the
        turn (or once the link is up).
        """
        where = (key, channel)
        session_id = entry["id"]
        encoded = encode(entry)
        self._mine.setdefault(where, {})[session_id] = encoded
        if not self._link.up:
            return
        removed = self._removed.get(where)
        if removed is not None:
            removed.discard(session_id)
        self._added.setdefault(where, {})[session_id] = encoded
        self._schedule()

    def left(self, key: str, channel: str, entry: dict[str, Any]) -> None:
        """
        L{IBroker.presence_left}.
        """
        where = (key, channel)
        session_id = entry["id"]
        mine = self._mine.get(where)
        if mine is None or mine.pop(session_id, None) is None:
            return
        if not mine:
            del self._mine[where]
        if not self._link.up:
            return
        added = self._added.get(where)
        if added is not None:
            added.pop(session_id, None)
        self._removed.setdefault(where, set()).add(session_id)
        self._schedule()

    def watch(self, key: str, channel: str, lost: Lost | None) -> None:
        """
        L{IBroker.watch_presence}.
        """
        if lost is None:
            self._watchers.pop((key, channel), None)
        else:
            self._watchers[(key, channel)] = lost

    def read(self, key: str, channel: str) -> Deferred[list[dict[str, Any]]]:
        """
        L{IBroker.presence}: every live node's entries; while Redis is
        away, this node's alone.
        """
        where = (key, channel)
        if not self._link.up:
            return succeed(decode(self._mine.get(where, {}).values()))
        self._flush()
        index = self._keys(where)[:1]
        reading = self._link.script(PRESENCE_READ, index, self._around(where))
        return reading.addCallback(decode)

    # Writing

    def _schedule(self) -> None:
        if self._flushing is None:
            self._flushing = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        """
        Write what changed since the last flush.
        """
        timer, self._flushing = self._flushing, None
        if timer is not None and timer.active():
            timer.cancel()
        added, self._added = self._added, {}
        removed, self._removed = self._removed, {}
        for where in added.keys() | removed.keys():
            self._write(where, removed.get(where, ()), added.get(where, {}), False)

    def _rewrite(self, where: _Where) -> None:
        """
        Write this node's entries of C{where} anew, dropping what Redis
        held of it before.
        """
        self._write(where, (), self._mine.get(where, {}), True)

    def _write(
        self,
        where: _Where,
        removed: Iterable[str],
        added: dict[str, str],
        reset: bool,
    ) -> None:
        gone = list(removed)
        pairs = [item for pair in added.items() for item in pair]
        keys = self._keys(where)
        names = self._names
        self._written.add(where)
        while True:
            now, gone = gone[:_CHUNK], gone[_CHUNK:]
            some, pairs = pairs[: 2 * _CHUNK], pairs[2 * _CHUNK :]
            args = [names.node_id, self._ttl_ms, "1" if reset else "0", len(now)]
            self._link.fire(
                self._link.script(PRESENCE_WRITE, keys, [*args, *now, *some])
            )
            reset = False
            if not gone and not pairs:
                return

    # The link, and the refresh

    def linked(self) -> None:
        """
        The link is up: write this node's entries anew (what changed while
        it was down included), and refresh them from now on.
        """
        self._stop_loop()
        self._cancel_flush()
        for where in self._written | self._mine.keys():
            self._rewrite(where)
            if where not in self._mine:
                self._written.discard(where)
        loop = self._loop = LoopingCall(self.refresh)
        loop.clock = self._clock
        loop.start(self.interval, now=False)

    def unlink(self) -> None:
        """
        The link is down: no refresh, and nothing to write until it is up.
        """
        self._stop_loop()
        self._cancel_flush()

    def stop(self, leave: bool) -> None:
        """
        The broker stops: no more refreshes; with C{leave}, this node's
        entries leave Redis now.
        """
        self._stop_loop()
        self._cancel_flush()
        if leave:
            for where in list(self._written):
                self._write(where, (), {}, True)
            self._written.clear()

    def _cancel_flush(self) -> None:
        timer, self._flushing = self._flushing, None
        if timer is not None and timer.active():
            timer.cancel()
        self._added.clear()
        self._removed.clear()

    def _stop_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def refresh(self) -> None:
        """
        Refresh now: this node's entries live C{ttl} more, and dead nodes'
        are taken out (and their endpoints told).
        """
        self._flush()
        names = self._names
        for where in list(self._mine):
            refreshed = self._link.script(
                PRESENCE_REFRESH,
                self._keys(where),
                [names.node_id, self._ttl_ms, *self._around(where)],
            )
            self._link.fire(refreshed.addCallback(self._refreshed, where))

    def _refreshed(self, result: list[Any], where: _Where) -> None:
        here, lost = result
        if not int(here) and self._mine.get(where):
            _log.info(
                "Redis had lost this node's presence in {channel}; writing it again",
                channel=where[1],
            )
            self._rewrite(where)
        entries = decode(lost)
        watcher = self._watchers.get(where)
        if entries and watcher is not None:
            try:
                watcher(entries)
            except Exception:
                _log.failure(
                    "Telling of members that left {channel} failed", channel=where[1]
                )
