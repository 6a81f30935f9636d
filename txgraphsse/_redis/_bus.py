# -*- test-case-name: tests.test_redis -*-
"""
The bus: each endpoint key's pub/sub channel, which brings every event
published on it, by every node, in sequence order; this node delivers what
it brings to its sessions.  After each (re)subscription a marker this node
publishes on the bus tells it where it stands, and what it missed while
away is delivered from the streams (as far as history reaches; it logs
when it does not), before and in order with what the bus brought
meanwhile.

It knows bus channels, markers and the sequence of what it delivered; it
never publishes events (it tells the L{Publisher} what came back), answers
replays (it runs those that waited for it) or touches sessions and calls.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError

from .._broker import StoredEvent
from ._context import Context, Part
from ._publish import Publisher
from ._replay import Replays
from ._scripts import SYNC
from ._state import LOG_NAMESPACE, EndpointState, entry_fields, seq_of

__all__ = ["Bus"]

_log = Logger(namespace=LOG_NAMESPACE)


def _from_message(
    message: dict[str, Any], seq: int, event_id: str | None
) -> StoredEvent:
    return StoredEvent(
        seq,
        event_id,
        str(message["c"]),
        message.get("e") or None,
        str(message["d"]),
        float(message.get("t", 0.0)),
    )


class Bus(Part):
    """
    The bus subscriptions of this node's endpoint keys, and delivery from
    them.
    """

    def __init__(
        self, context: Context, publisher: Publisher, replays: Replays
    ) -> None:
        super().__init__(context)
        self._publisher = publisher
        self._replays = replays
        #: The endpoint key of each bus channel subscribed on this link.
        self._bus_keys: dict[str, str] = {}

    def key_of(self, channel: str) -> str | None:
        """
        The endpoint key whose bus C{channel} is, if this node subscribed.
        """
        return self._bus_keys.get(channel)

    # Subscriptions

    def subscribe(self, key: str) -> Deferred[None]:
        """
        Subscribe to C{key}'s bus; once Redis confirms, send what waited for
        it and sync.
        """
        state = self._endpoints.get(key)
        channel = self._names.key(key, "bus")
        sub = self._link.subscriber
        if state is None or channel in self._bus_keys or sub is None:
            return succeed(None)
        self._bus_keys[channel] = key

        def subscribed(_: object) -> None:
            if (
                self._endpoints.get(key) is not state
                or self._link.subscriber is not sub
            ):
                return
            state.ready = True
            self._publisher.send_waiting(state)
            self._sync(key, state)

        return self._link.subscribe(channel).addCallback(subscribed)

    def unsubscribe(self, key: str) -> None:
        """
        Stop listening to C{key}'s bus.
        """
        channel = self._names.key(key, "bus")
        if self._bus_keys.pop(channel, None) is not None:
            self._link.unsubscribe(channel)

    def unlink(self) -> None:
        """
        The link is down, and its subscriptions with it.
        """
        self._bus_keys.clear()

    def unlink_state(self, state: EndpointState) -> None:
        """
        The link is down: C{state} is neither ready nor live, and catches up
        from what it delivered last once it is back.
        """
        if state.live:
            state.sync_from = state.delivered
        state.ready = state.live = False
        state.held = []
        state.marker_at = None
        state.sync_reply = None

    # Delivery

    def received(self, key: str, message: dict[str, Any]) -> None:
        """
        C{message} came on C{key}'s bus.
        """
        state = self._endpoints.get(key)
        if state is None:
            return
        if "m" in message:
            if (
                message["m"] == self._names.node_id
                and message.get("y") == state.token
                and state.marker_at is None
            ):
                state.marker_at = len(state.held)
                state.marker_seq = int(message["s"])
                self._synced(state)
            return
        if state.live:
            self._deliver(state, message)
        else:
            state.held.append(message)
        if message.get("o") == self._names.node_id and "n" in message:
            self._publisher.back_from_bus(message["n"])

    def _deliver(self, state: EndpointState, message: dict[str, Any]) -> None:
        seq = int(message.get("s", 0))
        event_id = message.get("i") or None
        if event_id:
            epoch = event_id.rpartition(".")[0]
            if epoch != state.epoch:
                renewed = state.epoch is not None
                state.epoch = epoch
                state.delivered = 0
                if renewed:
                    # Redis lost what it had while this node was linked
                    # (flushed, failed over): say so before going on.
                    state.missed(True, f"{epoch}.{seq - 1}")
        if seq > state.delivered:
            state.delivered = seq
        if message.get("b") and message.get("o") == self._names.node_id:
            # Kept through an outage: this node's sessions had it then.
            return
        state.deliver(_from_message(message, seq, event_id))

    # Catching up

    def _sync(self, key: str, state: EndpointState) -> None:
        """
        Find where this node stands on the bus, and catch up on what it
        missed while the link was down.
        """
        state.token += 1
        state.held = []
        state.marker_at = None
        state.sync_reply = None
        start = -1 if state.sync_from is None else state.sync_from
        names = self._names
        synced = self._link.script(
            SYNC,
            names.keys(key, "epoch", "seq", "channels", "bus", "evicted"),
            [
                secrets.token_hex(4),
                state.epoch or "",
                start,
                names.node_id,
                state.token,
                names.key(key, "h:"),
            ],
        )
        token = state.token

        def answered(reply: list[Any]) -> None:
            if state.token == token and not state.live:
                state.sync_reply = reply
                self._synced(state)

        def failed(failure: Failure) -> None:
            if failure.check(RedisConnectionError, CancelledError):
                return
            _log.failure("Syncing {key} failed", failure=failure, key=key)
            if state.token == token and not state.live:
                state.sync_reply = [state.epoch or "", state.delivered]
                state.marker_at = len(state.held)
                state.marker_seq = state.delivered
                self._synced(state)

        synced.addCallbacks(answered, failed)

    def _synced(self, state: EndpointState) -> None:
        reply = state.sync_reply
        at = state.marker_at
        if reply is None or at is None:
            return
        epoch = str(reply[0])
        before, after = state.held[:at], state.held[at:]
        state.held = []
        events: dict[int, StoredEvent] = {}
        plain: list[StoredEvent] = []
        start = state.sync_from
        node_id = self._names.node_id
        # A new epoch: Redis lost what it had (restarted empty, flushed,
        # failed over), some of it maybe before this node delivered it.
        everything = state.epoch is not None and state.epoch != epoch
        if start is not None:
            if everything:
                start = 0
            if int(reply[2]) > start:
                _log.warn(
                    "This node was away from Redis longer than history reaches:"
                    " its sessions of {key} missed events published meanwhile",
                    key=state.key,
                )
                start, everything = int(reply[2]), True
            for i in range(3, len(reply) - 1, 2):
                channel = str(reply[i])
                for entry_id, flat in reply[i + 1]:
                    seq = seq_of(entry_id)
                    fields = entry_fields(flat)
                    if (
                        seq <= start
                        or seq in state.outside
                        or (fields.get("o") == node_id and fields.get("b"))
                    ):
                        continue
                    events[seq] = StoredEvent(
                        seq,
                        f"{epoch}.{seq}",
                        channel,
                        fields.get("e") or None,
                        fields.get("d", ""),
                        float(fields.get("t", "0") or 0),
                    )
        for message in before:
            if message.get("b") and message.get("o") == node_id:
                continue
            seq = int(message.get("s", 0))
            stored = _from_message(message, seq, message.get("i") or None)
            if seq:
                events[seq] = stored
            else:
                plain.append(stored)
        if state.epoch != epoch:
            state.epoch = epoch
        state.delivered = state.marker_seq
        state.outside.clear()
        state.live = True
        if start is not None or everything:
            # Never a silent gap: what cannot be delivered is said.
            state.missed(everything, f"{epoch}.{start or 0}")
        for seq in sorted(events):
            state.deliver(events[seq])
        for stored in plain:
            state.deliver(stored)
        for message in after:
            self._deliver(state, message)
        if not state.flushing:
            self._replays.run_waiting(state)
