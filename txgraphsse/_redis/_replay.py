# -*- test-case-name: tests.test_redis -*-
"""
Replay: what a reconnecting client missed, read from the streams in Redis
up to the last event this node delivered (later ones reach its session
live), and the replays that wait until this node can answer them (its bus
is not live yet, or events it kept through an outage are not back).

It reads history and answers with L{Replay}; it never writes to Redis,
delivers events or touches the link's state.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError

from .._broker import Replay, StoredEvent, parse_event_id
from ._context import Part
from ._scripts import REPLAY
from ._state import LOG_NAMESPACE, Channels, EndpointState, entry_fields, seq_of

__all__ = ["Replays"]

_log = Logger(namespace=LOG_NAMESPACE)


class Replays(Part):
    """
    Replay from Redis, for every endpoint key of this node.
    """

    def replay(
        self, key: str, channels: Channels, last_event_id: str | None
    ) -> Deferred[Replay]:
        """
        What a client that last saw C{last_event_id} missed: the kept events
        after it up to the last one this node delivered (later ones reach
        the session live).  While Redis is away: nothing, and C{reset}.
        """
        wanted = [(name, policy) for name, policy in channels if policy.enabled]
        state = self._endpoints.state(key)
        deferred: Deferred[Replay] = Deferred()
        if not self._link.up:
            deferred.callback(Replay((), True))
        elif not state.live or state.flushing:
            state.replays.append((deferred, wanted, last_event_id))
        else:
            self._replay(state, deferred, wanted, last_event_id)
        return deferred

    def run_waiting(self, state: EndpointState) -> None:
        """
        This node can answer C{state}'s waiting replays now: answer them.
        """
        replays, state.replays = state.replays, []
        for deferred, channels, last_event_id in replays:
            self._replay(state, deferred, channels, last_event_id)

    def fail_waiting(self, state: EndpointState) -> None:
        """
        This node cannot answer C{state}'s waiting replays: nothing, and
        C{reset}.
        """
        replays, state.replays = state.replays, []
        for deferred, _, _ in replays:
            deferred.callback(Replay((), True))

    def _replay(
        self,
        state: EndpointState,
        deferred: Deferred[Replay],
        channels: Channels,
        last_event_id: str | None,
    ) -> None:
        key = state.key
        if self._endpoints.get(key) is not state:
            deferred.callback(Replay((), True))
            return
        epoch = (last_event_id or "").rpartition(".")[0]
        after = parse_event_id(last_event_id, epoch)
        upto = state.delivered
        asked = self._link.script(
            REPLAY,
            self._names.keys(
                key, "epoch", "seq", "evicted", *(f"h:{name}" for name, _ in channels)
            ),
            [
                epoch,
                -1 if after is None else after,
                upto,
                *(name for name, _ in channels),
            ],
        )

        def answered(reply: list[Any]) -> Replay:
            reset = bool(int(reply[0]))
            current = str(reply[1])
            start = 0 if reset or after is None else after
            now = self._clock.seconds()
            found: list[StoredEvent] = []
            for i, (name, policy) in enumerate(channels):
                if seq_of(reply[2 + 2 * i]) > start:
                    reset = True
                for entry_id, flat in reply[3 + 2 * i]:
                    seq = seq_of(entry_id)
                    fields = entry_fields(flat)
                    time = float(fields.get("t", "0") or 0)
                    if policy.age is not None and time < now - policy.age:
                        reset = True
                        continue
                    found.append(
                        StoredEvent(
                            seq,
                            f"{current}.{seq}",
                            name,
                            fields.get("e") or None,
                            fields.get("d", ""),
                            time,
                        )
                    )
            found.sort(key=lambda e: e.seq)
            return Replay(found, reset)

        def failed(failure: Failure) -> Replay:
            if not failure.check(RedisConnectionError, CancelledError):
                _log.failure("Replay from Redis failed", failure=failure)
            return Replay((), True)

        asked.addCallbacks(answered, failed).chainDeferred(deferred)
