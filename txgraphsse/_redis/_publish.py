# -*- test-case-name: tests.test_redis -*-
"""
Publishing: each event this node publishes goes to Redis in one script
that gives it its place in the order, stores it and puts it on the bus,
and is tracked until the bus brings it back.  While Redis is away, events
reach this node's sessions at once, and those with history are kept (up to
C{outage_buffer}) to be written once it is back; an event in flight when
the link broke, whose outcome is unknown, is kept too.

It knows L{Outgoing} events and their way to Redis; it never reads the bus
(the bus tells it, with L{Publisher.back_from_bus}, what came back), and
never touches sessions, calls or replay beyond running the replays that
waited for its kept events.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import deque
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError

from ._context import Context, Part
from ._replay import Replays
from ._scripts import PUBLISH
from ._state import LOG_NAMESPACE, EndpointState, Outgoing, encode

__all__ = ["Publisher"]

_log = Logger(namespace=LOG_NAMESPACE)


class Publisher(Part):
    """
    This node's events on their way to Redis, and those kept while it is
    away.
    """

    def __init__(self, context: Context, replays: Replays, outage_buffer: int) -> None:
        """
        @param outage_buffer: events with history kept while Redis is away;
            the oldest go first.
        """
        super().__init__(context)
        self._replays = replays
        self._buffer: deque[Outgoing] = deque(maxlen=max(outage_buffer, 0))
        self._dropped = 0
        self._published = 0
        self._inflight: deque[Outgoing] = deque()

    def publish(self, out: Outgoing) -> None:
        """
        Publish C{out}: to Redis now if its key's bus is ready (or this
        node has no sink for the key), once the bus is ready otherwise;
        while Redis is away, to this node's sessions at once, and kept.
        """
        state = self._endpoints.state(out.key)
        if not self._link.up:
            self._deliver_here(state, out)
            self._keep(out)
        elif state.ready or state.sink is None:
            self._send(out)
        else:
            state.waiting.append(out)

    def flushed(self, key: str) -> Deferred[None]:
        """
        Fire once Redis has given a place in the order (a sequence number)
        to every event this node published on C{key}: what waits for the
        bus to be ready, what is in flight, and what was kept through an
        outage (that waits for Redis to come back).
        """
        done: Deferred[None] = Deferred()

        def pending() -> bool:
            state = self._endpoints.get(key)
            if state is not None and state.waiting:
                return True
            if any(
                o.key == key and o.seq is None and not o.done for o in self._inflight
            ):
                return True
            return any(o.key == key for o in self._buffer)

        def check() -> None:
            if not self._link.running or not pending():
                done.callback(None)
                return
            self._clock.callLater(0.005, check)

        check()
        return done

    # The link

    def write_kept(self) -> tuple[int, int]:
        """
        The link is up: write what was kept while it was down.

        @return: how many events that is, and how many were lost (the
            buffer was full).
        """
        written = len(self._buffer)
        dropped, self._dropped = self._dropped, 0
        while self._buffer:
            self._send(self._buffer.popleft())
        return written, dropped

    def send_waiting(self, state: EndpointState) -> None:
        """
        C{state}'s bus subscription is confirmed: send what waited for it.
        """
        waiting, state.waiting = state.waiting, []
        for out in waiting:
            self._send(out)

    def unlink(self) -> None:
        """
        The link is down: deliver here what the bus will not bring, and
        keep what Redis may not have stored.
        """
        inflight, self._inflight = self._inflight, deque()
        for out in inflight:
            if out.done:
                continue
            out.done = True
            state = self._endpoints.get(out.key)
            if out.buffered:
                if out.seq is None:
                    self._keep(out)
            elif out.seq is None:
                self._deliver_here(state, out)
                self._keep(out)
            elif state is not None:
                if out.seq > 0:
                    state.outside.add(out.seq)
                state.deliver(out.stored(out.seq, out.epoch))

    def unlink_state(self, state: EndpointState) -> None:
        """
        The link is down: C{state}'s events waiting for the bus reach this
        node's sessions now, and are kept.
        """
        state.flushing = 0
        waiting, state.waiting = state.waiting, []
        for out in waiting:
            self._deliver_here(state, out)
            self._keep(out)

    def back_from_bus(self, n: Any) -> None:
        """
        The bus brought this node's publish number C{n}: it and every
        earlier one have landed.
        """
        inflight = self._inflight
        while inflight and inflight[0].n <= n:
            self._landed(inflight.popleft())

    # Sending

    def _keep(self, out: Outgoing) -> None:
        """
        Keep an event with history that Redis could not take, for later.
        """
        if not out.size or self._buffer.maxlen == 0:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
        out.buffered = True
        out.seq = None
        out.done = False
        self._buffer.append(out)

    def _send(self, out: Outgoing) -> None:
        self._published += 1
        out.n = self._published
        self._inflight.append(out)
        if out.buffered:
            self._endpoints.state(out.key).flushing += 1
        node_id = self._names.node_id
        message: dict[str, Any] = {
            "c": out.channel,
            "e": out.event or "",
            "d": out.data,
            "t": out.time,
            "o": node_id,
            "n": out.n,
        }
        if out.buffered:
            message["b"] = 1
        key = out.key
        sent = self._link.script(
            PUBLISH,
            self._names.keys(
                key, "seq", "epoch", f"h:{out.channel}", "bus", "evicted", "channels"
            ),
            [
                secrets.token_hex(4),
                out.size,
                out.channel,
                repr(out.time),
                out.event or "",
                out.data,
                node_id,
                "1" if out.buffered else "",
                encode(message)[1:],
            ],
        )
        sent.addCallback(self._sent, out)
        sent.addErrback(self._send_failed, out)

    def _landed(self, out: Outgoing) -> None:
        """
        C{out} is back from the bus (or never will be).
        """
        out.done = True
        if out.buffered:
            state = self._endpoints.get(out.key)
            if state is not None:
                state.flushing = max(0, state.flushing - 1)
                if not state.flushing and state.live:
                    self._replays.run_waiting(state)

    def _sent(self, result: list[Any], out: Outgoing) -> None:
        out.seq = int(result[0])
        out.epoch = str(result[1])
        acked, out.acked = out.acked, None
        if acked is not None:
            acked.callback(out.stored(out.seq, out.epoch).id)

    def _send_failed(self, failure: Failure, out: Outgoing) -> None:
        if failure.check(RedisConnectionError, CancelledError) or out.done:
            # The link is down: unlink took care of it.
            return
        with contextlib.suppress(ValueError):
            self._inflight.remove(out)
        self._landed(out)
        _log.failure(
            "Publishing on {channel} failed; delivered on this node only",
            failure=failure,
            channel=out.channel,
        )
        acked, out.acked = out.acked, None
        if acked is not None:
            acked.errback(failure)
        if not out.buffered:
            self._deliver_here(self._endpoints.get(out.key), out)

    def _deliver_here(self, state: EndpointState | None, out: Outgoing) -> None:
        if state is not None:
            state.deliver(out.stored(0, ""))
