"""
Leaks: many sessions and calls come and go; nothing stays behind in the
endpoint's tables, the clock, or memory.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import SessionClosed, SSEEndpoint, SSEResource, SSESession
from txgraphsse._dispatch import dispatch
from txgraphsse._streams import Streams

from .test_session import SSEServer

#: Bytes of Python memory that 20,000 connect/disconnect cycles may leave
#: behind after warming up (about 5 bytes a cycle: interning, free lists).
CYCLE_GROWTH_BOUND = 100 * 1024
#: And 10,000 calls.
CALL_GROWTH_BOUND = 100 * 1024


def _empty_tables(case: SynchronousTestCase, server: SSEServer) -> None:
    endpoint = server.endpoint
    case.assertEqual(endpoint.sessions, {})
    for channel in endpoint.channels.values():
        case.assertEqual(channel.members, {})
    case.assertEqual(len(endpoint.calls), 0)
    case.assertEqual(endpoint.calls._by_session, {})
    case.assertEqual(endpoint.client_calls._subscriptions, {})
    case.assertEqual(endpoint.client_calls._routes, {})
    case.assertEqual(endpoint.observers._owned, {})
    case.assertEqual(endpoint.streams._per_address, {})
    case.assertEqual(endpoint.rates._buckets, {})
    for route in endpoint.graph.routes.values():
        case.assertEqual(route.observers, {})
    case.assertEqual(server.backend.broker.session_count(endpoint.path), 0)
    case.assertEqual(server.clock.getDelayedCalls(), [])


class LeakTests(SynchronousTestCase):
    """
    Tables, timers and memory after many cycles.
    """

    def setUp(self) -> None:
        # Until an application begins logging, twisted.logger keeps every
        # event (up to 64k) for it: that buffer is the application's, not
        # ours, so our log events go nowhere here.
        quiet = Logger(observer=lambda event: None)
        for cls in (SSEEndpoint, SSEResource, SSESession, Streams):
            self.patch(cls, "_log", quiet)

    def _cycle(self, server: SSEServer, count: int) -> None:
        for i in range(count):
            connection = server.connect(b"?channels=news")
            session = server.session(connection)
            if i % 3 == 0:
                # A subscription to a server route, dropped with the session.
                body = {
                    "route": "subscribeSSE",
                    "args": ["ping", "/sse"],
                    "sessionId": session.id,
                }
                self.successResultOf(dispatch(server.endpoint, body, None))
            if i % 2:
                connection.disconnect()
            else:
                session.close()
            server.turn()

    def test_connect_disconnect_cycles(self) -> None:
        """
        20,000 streams that open, join a channel, subscribe, and close or
        drop leave every table empty, no DelayedCall, and Python memory
        growth under CYCLE_GROWTH_BOUND.
        """
        server = SSEServer(
            channels=["news"],
            keepalive=15,
            on_connection=None,
            on_connection_close=None,
        )
        self._cycle(server, 2_000)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            self._cycle(server, 20_000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        _empty_tables(self, server)
        self.assertLess(after - before, CYCLE_GROWTH_BOUND)
        self.assertEqual(server.endpoint.counters.sessions_opened, 22_000)
        self.assertEqual(server.endpoint.counters.sessions_closed, 22_000)

    def _calls(self, server: SSEServer, count: int) -> dict[str, int]:
        endpoint = server.endpoint
        outcomes = {"answered": 0, "timeout": 0, "cancelled": 0, "closed": 0}
        connection = server.connect()
        session = server.session(connection)
        for i in range(count):
            if i % 250 == 249:
                # Now and then the session goes away with calls in flight.
                pending = [
                    endpoint.run("slow", [i], session_id=session.id) for _ in range(3)
                ]
                session.close()
                server.turn()
                for d in pending:
                    assert isinstance(d, Deferred)
                    self.failureResultOf(d, SessionClosed)
                    outcomes["closed"] += 1
                connection = server.connect()
                session = server.session(connection)
                continue
            d = endpoint.run("echo", [i], session_id=session.id, timeout=5)
            assert isinstance(d, Deferred)
            kind = i % 3
            if kind == 0:
                mark = len(connection.transport.value())
                server.turn()
                sent = connection.written_since(mark)
                callback_id = _callback_id(sent)
                reply = {"args": i, "callbackId": callback_id, "sessionId": session.id}
                self.successResultOf(dispatch(endpoint, reply, None))
                self.assertEqual(self.successResultOf(d), i)
                outcomes["answered"] += 1
            elif kind == 1:
                server.clock.advance(5)
                self.failureResultOf(d, TimeoutError)
                outcomes["timeout"] += 1
            else:
                d.cancel()
                self.failureResultOf(d, CancelledError)
                outcomes["cancelled"] += 1
            connection.transport.clear()
        session.close()
        server.turn()
        return outcomes

    def test_calls(self) -> None:
        """
        10,000 server-to-client calls, answered, timed out, cancelled or cut
        by a closing session, leave the call table empty, no DelayedCall,
        and Python memory growth under CALL_GROWTH_BOUND.
        """
        server = SSEServer(keepalive=0, on_connection=None, on_connection_close=None)
        self._calls(server, 1_000)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            outcomes = self._calls(server, 10_000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        _empty_tables(self, server)
        self.assertLess(after - before, CALL_GROWTH_BOUND)
        self.assertTrue(all(outcomes.values()), outcomes)
        self.assertEqual(sum(outcomes.values()), 10_000 - 40 + 40 * 3)


def _callback_id(sent: bytes) -> str:
    """
    The callbackId of the last runRequest in a chunk of the stream (a
    cancelled call's request may still go out in the same turn).
    """
    for line in reversed(sent.split(b"\n")):
        if line.startswith(b"data: ") and b"runRequest" in line:
            message: Any = json.loads(line[6:])
            return str(message["args"][2])
    raise AssertionError(f"no runRequest in {sent!r}")
