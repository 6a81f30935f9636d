"""
Tests for L{txgraphsse.redis.RedisBroker}: several nodes in this process,
each an L{SSEBackend} with its own C{Site} on 127.0.0.1, linked by a real
C{redis-server} (L{tests._redis}), and clients reading real streams with
treq and the project's L{EventStreamParser}.

Then the broker's package itself (L{txgraphsse._redis}): its Lua files are
the scripts Redis stores under our SHA1s; each txredisapi hook the faster
protocol relies on is named here, so that a txredisapi release which
changes one fails loudly, and the broadcast tests run again with the fast
path off; and its parts import only the parts below them.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, cast

import treq
import txredisapi
from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from txgraphsse import (
    ChannelSpec,
    EventStreamParser,
    HistoryPolicy,
    IBroker,
    RemoteCallError,
    ServerSentEvent,
    SessionClosed,
    SSEBackend,
    SSEEndpoint,
)
from txgraphsse import redis as public_redis
from txgraphsse._redis import _broker as coordinator
from txgraphsse._redis import _protocol, _scripts
from txgraphsse.redis import RedisBroker

from ._layout import module_name, package_imports, package_modules
from ._redis import RedisServer, free_port

#: Seconds any single wait may take before the test fails (generous: a
#: busy machine is slow, and a passing test never waits this long).
WAIT = 15.0


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _clock() -> IReactorTime:
    return cast(IReactorTime, _reactor())


async def until(predicate: Callable[[], bool], what: str, wait: float = WAIT) -> None:
    """
    Wait, a few milliseconds at a time, until C{predicate()} holds; fail
    after C{wait} seconds.
    """
    clock = _clock()
    deadline = clock.seconds() + wait
    while not predicate():
        if clock.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(clock, 0.01, lambda: None)


async def pause(seconds: float) -> None:
    await deferLater(_clock(), seconds, lambda: None)


class _Body(Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def dataReceived(self, data: bytes) -> None:
        self.stream.events.extend(self.stream.parser.feed(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.stream.ended.callback(None)


class Stream:
    """
    One open event stream, parsed as it arrives.

    @ivar events: every event so far, the C{setId} one first.
    """

    def __init__(self, response: IResponse) -> None:
        self.parser = EventStreamParser()
        self.events: list[ServerSentEvent] = []
        self.ended: Deferred[None] = Deferred()
        self._body = _Body(self)
        response.deliverBody(self._body)

    @property
    def session_id(self) -> str | None:
        if not self.events:
            return None
        message = json.loads(self.events[0].data)
        assert message["route"] == "setId", message
        return str(message["args"])

    @property
    def last_id(self) -> str:
        """
        The last event id the client saw, as a browser would send it back.
        """
        return self.parser.last_event_id

    def after_setup(self) -> list[ServerSentEvent]:
        """
        The events after C{setId}.
        """
        return self.events[1:]

    def data(self, event_type: str | None = None) -> list[Any]:
        """
        The decoded data of the events after C{setId} (of one type, if
        given).
        """
        return [
            json.loads(e.data)
            for e in self.after_setup()
            if event_type is None or e.type == event_type
        ]

    async def close(self) -> None:
        """
        Drop the connection, and wait until it is gone here.
        """
        transport = self._body.transport
        if not self.ended.called and transport is not None:
            transport.loseConnection()
        await self.ended


@define
class Node:
    """
    One cluster node: a backend, its endpoint at C{/sse} and a site.
    """

    name: str
    backend: SSEBackend
    broker: RedisBroker
    endpoint: SSEEndpoint
    port: IListeningPort
    routes: list[str] = field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/sse"  # type: ignore[attr-defined]


class RedisTestCase(TestCase):
    """
    A real C{redis-server}, nodes on it, and an HTTP client; all of it
    stopped in cleanup, leaving the reactor clean.
    """

    timeout = 60
    appendonly = False

    def setUp(self) -> None:
        self.redis = RedisServer(appendonly=self.appendonly)
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.pool = HTTPConnectionPool(_reactor(), False)
        self.http = HTTPClient(Agent(_reactor(), pool=self.pool))
        self.streams: list[Stream] = []
        self.nodes: list[Node] = []
        self.addCleanup(self._clean)

    async def _clean(self) -> None:
        for stream in self.streams:
            await stream.close()
        for node in self.nodes:
            await node.backend.shutdown()
            await maybeDeferred(node.port.stopListening)
        await self.pool.closeCachedConnections()

    async def node(
        self,
        name: str,
        url: str | None = None,
        start: bool = True,
        **options: Any,
    ) -> Node:
        """
        Start a node: a backend on a L{RedisBroker} (fast heartbeats), with
        an endpoint at C{/sse} set up with C{options} and a route C{where}
        that answers the node's name.
        """
        broker = RedisBroker(
            _clock(),
            url or self.redis.url,
            prefix="test",
            node_id=name,
            heartbeat=0.1,
            node_ttl=1.0,
        )
        broker.reconnect_initial = 0.05
        broker.reconnect_max = 0.3
        backend = SSEBackend(_clock(), broker=broker)
        backend.add_route("where", lambda: name)
        options.setdefault("history", 20)
        endpoint = backend.setup_sse("/sse", **options)
        root = Resource()
        root.putChild(b"sse", endpoint.resource)
        port = cast(IReactorTCP, _reactor()).listenTCP(
            0, Site(root), interface="127.0.0.1"
        )
        node = Node(name, backend, broker, endpoint, port)
        self.nodes.append(node)
        if start:
            await broker.start()
        return node

    async def stream(
        self,
        node: Node,
        channels: str | None = None,
        last_event_id: str | None = None,
    ) -> Stream:
        """
        Open a stream on C{node} and wait for its session id.
        """
        url = node.url
        if channels is not None:
            url += f"?channels={channels}"
        headers = {}
        if last_event_id is not None:
            headers[b"last-event-id"] = [last_event_id.encode()]
        response = await self.http.get(
            url, headers=headers, unbuffered=True, timeout=WAIT
        )
        self.assertEqual(response.code, 200)
        stream = Stream(response)
        self.streams.append(stream)
        await until(lambda: stream.session_id is not None, "setId")
        sid = stream.session_id
        assert sid is not None
        await until(lambda: sid in node.endpoint.sessions, "the session to open")
        return stream

    async def post(self, node: Node, body: Any) -> tuple[int, Any]:
        """
        C{POST} C{body} to C{node}; the status and the decoded answer.
        """
        response = await self.http.post(
            node.url,
            data=json.dumps(body).encode(),
            headers={b"content-type": [b"application/json"]},
            timeout=WAIT,
        )
        raw = await treq.content(response)
        return response.code, (json.loads(raw) if raw else None)


class BroadcastTests(RedisTestCase):
    """
    Channel events reach every node's sessions once, in one order, with
    ids from one sequence.
    """

    async def test_broadcast_reaches_every_node_once_in_order(self) -> None:
        """
        Events published on A and on B reach streams on A and B exactly
        once each, in the same order, with the same increasing ids.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_a = await self.stream(a)
        on_b = await self.stream(b)
        for i in range(5):
            a.endpoint.send({"n": i})
            b.endpoint.send({"n": 10 + i})
        for stream in (on_a, on_b):
            await until(lambda s=stream: len(s.after_setup()) >= 10, "10 events")
        await pause(0.2)
        self.assertEqual(on_a.data(), on_b.data())
        self.assertEqual(len(on_a.data()), 10)
        self.assertEqual([m["n"] for m in on_a.data() if m["n"] < 10], [0, 1, 2, 3, 4])
        self.assertEqual(
            [m["n"] for m in on_a.data() if m["n"] >= 10], [10, 11, 12, 13, 14]
        )
        ids_a = [e.last_event_id for e in on_a.after_setup()]
        ids_b = [e.last_event_id for e in on_b.after_setup()]
        self.assertEqual(ids_a, ids_b)
        epochs = {i.rpartition(".")[0] for i in ids_a}
        self.assertEqual(len(epochs), 1)
        seqs = [int(i.rpartition(".")[2]) for i in ids_a]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), 10)

    async def test_event_without_history_has_no_id(self) -> None:
        """
        A channel without history still reaches every node, without ids.
        """
        a = await self.node("a", history=0)
        b = await self.node("b", history=0)
        on_b = await self.stream(b)
        a.endpoint.send("plain")
        await until(lambda: len(on_b.after_setup()) == 1, "the event")
        self.assertEqual(on_b.after_setup()[0].data, "plain")
        self.assertEqual(on_b.last_id, "")

    async def test_large_and_many_events(self) -> None:
        """
        Events larger than a socket read, and bursts of small ones, cross
        the bus intact and in order (Redis replies split anywhere).
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        big = "é" * 100_000
        a.endpoint.send({"big": big})
        for i in range(200):
            a.endpoint.send({"n": i})
        a.endpoint.send({"big": big[:40_000]})
        await until(lambda: len(on_b.data()) == 202, "every event")
        data = on_b.data()
        self.assertEqual(data[0], {"big": big})
        self.assertEqual([m["n"] for m in data[1:-1]], list(range(200)))
        self.assertEqual(data[-1], {"big": big[:40_000]})
        sid = on_b.session_id
        assert sid is not None
        a.endpoint.send({"pushed": big}, session_id=sid)
        await until(lambda: len(on_b.data()) == 203, "the push")
        self.assertEqual(on_b.data()[-1], {"pushed": big})

    async def test_named_channel(self) -> None:
        """
        A named channel's events reach only its members, on every node,
        under its event name.
        """
        options: dict[str, Any] = {"channels": [ChannelSpec("news")]}
        a = await self.node("a", **options)
        b = await self.node("b", **options)
        member = await self.stream(b, channels="news")
        other = await self.stream(b)
        a.endpoint.channels["news"].broadcast({"headline": 1})
        await until(lambda: len(member.after_setup()) == 1, "the news")
        self.assertEqual(member.after_setup()[0].type, "news")
        self.assertEqual(member.data(), [{"headline": 1}])
        self.assertEqual(other.after_setup(), [])


class SessionTests(RedisTestCase):
    """
    Pushes, forwarded posts and calls find the node that holds a session.
    """

    async def test_push_to_session_on_other_node(self) -> None:
        """
        C{send(..., session_id=)} on A reaches a session that B holds.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        assert sid is not None
        self.assertEqual(a.endpoint.send({"to": "you"}, session_id=sid), 1)
        await until(lambda: on_b.data() == [{"to": "you"}], "the push")

    async def test_request_to_unknown_session_fails_fast(self) -> None:
        """
        A request from A to a session no node holds fails with
        L{SessionClosed}, long before its timeout.
        """
        a = await self.node("a")
        await self.node("b")
        call = a.endpoint.request({"route": "x"}, session_id="nobody")
        assert isinstance(call, Deferred)
        with self.assertRaises(SessionClosed):
            await call

    async def test_forwarded_route_call(self) -> None:
        """
        A route call C{POST}ed to A for a session on B runs on B.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        status, body = await self.post(a, {"route": "where", "sessionId": sid})
        self.assertEqual((status, body), (200, {"args": "b"}))
        status, body = await self.post(
            a, {"route": "echo", "args": [1, 2], "sessionId": sid}
        )
        self.assertEqual((status, body), (200, {"args": [1, 2]}))

    async def test_forward_unknown_session(self) -> None:
        """
        A C{POST} naming a session no node holds is C{404 no_session}.
        """
        a = await self.node("a")
        await self.node("b")
        status, body = await self.post(a, {"route": "where", "sessionId": "nobody"})
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "no_session")

    async def test_forwarded_run_request(self) -> None:
        """
        A C{runRequest} C{POST}ed to A for a session on B runs on B,
        answers in the body and on B's stream.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        status, body = await self.post(
            a, {"route": "runRequest", "args": [{"route": "where"}, "/sse", "c1", sid]}
        )
        self.assertEqual((status, body), (200, {"args": "b", "callbackId": "c1"}))
        await until(lambda: on_b.data() == [{"args": "b", "callbackId": "c1"}], "reply")

    async def test_reply_to_request_made_on_owner_posted_elsewhere(self) -> None:
        """
        B asks its session; the client's answer lands on A and settles B's
        call.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        call = b.endpoint.request({"route": "ask"}, session_id=sid)
        assert isinstance(call, Deferred)
        await until(lambda: len(on_b.data()) == 1, "the request")
        envelope = on_b.data()[0]
        self.assertEqual(envelope["route"], "runRequest")
        cid = envelope["args"][2]
        self.assertTrue(cid.startswith("b."))
        status, _ = await self.post(
            a, {"args": 42, "callbackId": cid, "sessionId": sid}
        )
        self.assertEqual(status, 204)
        self.assertEqual(await call, 42)

    async def test_request_from_other_node(self) -> None:
        """
        A asks a session that B holds; the client answers to B (its own
        node) or to A, and A's call resolves either way.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        for target, value in ((b, "via b"), (a, "via a")):
            call = a.endpoint.request({"route": "ask"}, session_id=sid)
            assert isinstance(call, Deferred)
            await until(lambda: len(on_b.data()) >= 1, "the request")
            envelope = on_b.data()[-1]
            cid = envelope["args"][2]
            self.assertTrue(cid.startswith("a."))
            reply = {"args": value, "callbackId": cid, "sessionId": sid}
            status, _ = await self.post(target, reply)
            self.assertEqual(status, 204)
            self.assertEqual(await call, value)
            on_b.events[1:] = []

    async def test_error_reply_to_request_from_other_node(self) -> None:
        """
        A asks a session that B holds; the client's route fails and it
        answers with an error, to B (its own node) or to A: A's call fails
        with the client's code and message, either way, and at once.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        for target, code in ((b, "no_route"), (a, "route_failed")):
            call = a.endpoint.request({"route": "ask"}, session_id=sid, timeout=30)
            assert isinstance(call, Deferred)
            await until(lambda: len(on_b.data()) >= 1, "the request")
            cid = on_b.data()[-1]["args"][2]
            reply = {
                "error": {"code": code, "message": f"{code} on the client"},
                "callbackId": cid,
                "sessionId": sid,
            }
            status, _ = await self.post(target, reply)
            self.assertEqual(status, 204)
            error = await self.assertFailure(call, RemoteCallError)
            self.assertEqual(
                (error.code, error.message), (code, f"{code} on the client")
            )
            # Settled: the same answer again is not pending anywhere.
            status, body = await self.post(target, reply)
            self.assertEqual((status, body["error"]["code"]), (409, "not_pending"))
            on_b.events[1:] = []

    async def test_reply_not_pending_anywhere(self) -> None:
        """
        A reply that no node is waiting for is C{409 not_pending}.
        """
        await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        status, body = await self.post(
            b, {"args": 1, "callbackId": "a.nothing", "sessionId": sid}
        )
        self.assertEqual((status, body["error"]["code"]), (409, "not_pending"))
        status, body = await self.post(
            b, {"args": 1, "callbackId": "nothing", "sessionId": sid}
        )
        self.assertEqual((status, body["error"]["code"]), (409, "not_pending"))

    async def test_subscribe_sse_forwarded(self) -> None:
        """
        A client on B subscribes to a server route through A; the route's
        outputs on B reach its stream.
        """
        a = await self.node("a")
        b = await self.node("b")
        b.backend.add_route("ticker", lambda n: n * 2)
        on_b = await self.stream(b)
        sid = on_b.session_id
        status, body = await self.post(
            a,
            {
                "route": "subscribeSSE",
                "args": ["ticker", "/sse", None, None, None, sid],
            },
        )
        self.assertEqual(status, 200)
        self.assertIsInstance(body["args"], int)
        await b.backend.call("ticker", 21)
        await until(
            lambda: on_b.data() == [{"args": 42, "callbackId": "ticker"}], "update"
        )

    async def test_server_subscribes_to_client_route_across_nodes(self) -> None:
        """
        A subscribes to a client route of a session on B; the client's
        updates, posted to B, reach A's callback.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        assert sid is not None
        updates: list[Any] = []
        subscribed = a.endpoint.subscribe("sensor", updates.append, session_id=sid)
        assert isinstance(subscribed, Deferred)
        await until(lambda: len(on_b.data()) == 1, "the subscribeSSE request")
        cid = on_b.data()[0]["args"][2]
        status, _ = await self.post(b, {"args": 7, "callbackId": cid, "sessionId": sid})
        self.assertEqual(status, 204)
        self.assertEqual(await subscribed, 7)
        update = {"args": {"t": 20}, "callbackId": "sensor", "sessionId": sid}
        status, _ = await self.post(b, update)
        self.assertEqual(status, 204)
        self.assertEqual(updates, [{"t": 20}])

    async def test_session_count(self) -> None:
        """
        Every node counts the sessions of every live node.
        """
        a = await self.node("a")
        b = await self.node("b")
        await self.stream(a)
        await self.stream(a)
        last = await self.stream(b)
        await a.broker.refresh()
        await b.broker.refresh()
        self.assertEqual(a.broker.session_count("/sse"), 3)
        self.assertEqual(b.broker.session_count("/sse"), 3)
        self.assertEqual(a.endpoint.stats()["cluster_sessions"], 3)
        await last.close()
        await until(lambda: not b.endpoint.sessions, "the session to close")
        await a.broker.refresh()
        self.assertEqual(a.broker.session_count("/sse"), 2)

    async def test_closed_session_fails_remote_calls(self) -> None:
        """
        When a session on B closes, A's pending calls to it fail with
        L{SessionClosed}.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        call = a.endpoint.request({"route": "ask"}, session_id=sid)
        assert isinstance(call, Deferred)
        await until(lambda: len(on_b.data()) == 1, "the request")
        await on_b.close()
        with self.assertRaises(SessionClosed):
            await call

    async def test_dead_node(self) -> None:
        """
        A node that stops heartbeating without leaving: its sessions leave
        the registry, and A's pending calls to them fail with
        L{SessionClosed}.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        assert sid is not None
        call = a.endpoint.request({"route": "ask"}, session_id=sid, timeout=30)
        assert isinstance(call, Deferred)
        await until(lambda: len(on_b.data()) == 1, "the request")
        self.assertEqual(self.redis.command("HGET", "test:/sse:where", sid), "b")
        await b.broker._vanish()
        with self.assertRaises(SessionClosed):
            await call
        self.assertIsNone(self.redis.command("HGET", "test:/sse:where", sid))
        self.assertEqual(self.redis.command("SMEMBERS", "test:nodes"), ["a"])
        status, body = await self.post(a, {"route": "where", "sessionId": sid})
        self.assertEqual((status, body["error"]["code"]), (404, "no_session"))

    async def test_node_counted_dead_comes_back(self) -> None:
        """
        A node whose heartbeat key expired while it lived on (a long pause)
        is forgotten by its peers, then registers its sessions again at its
        next heartbeat, and pushes reach them again.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        assert sid is not None
        heart = b.broker._nodes._heart
        assert heart is not None
        heart.stop()
        self.redis.command("DEL", "test:alive:b")
        await a.broker.refresh()
        self.assertIsNone(self.redis.command("HGET", "test:/sse:where", sid))
        await b.broker.refresh()
        await until(
            lambda: self.redis.command("HGET", "test:/sse:where", sid) == "b",
            "B to register its session again",
        )
        self.assertEqual(a.endpoint.send("again", session_id=sid), 1)
        await until(lambda: [e.data for e in on_b.after_setup()] == ["again"], "push")

    async def test_stop_leaves_the_cluster(self) -> None:
        """
        A node that stops unregisters its sessions and itself.
        """
        await self.node("a")
        b = await self.node("b")
        await self.stream(b)
        await b.backend.shutdown()
        self.assertEqual(self.redis.command("HLEN", "test:/sse:where"), 0)
        self.assertEqual(self.redis.command("SMEMBERS", "test:nodes"), ["a"])
        self.assertEqual(self.redis.command("EXISTS", "test:alive:b"), 0)


class ReplayTests(RedisTestCase):
    """
    History lives in Redis: a client replays from any node.
    """

    async def test_reconnect_elsewhere_replays_exactly_the_missed(self) -> None:
        """
        A client that saw events on B, left, and reconnects to B with its
        last id after more were published on A gets exactly those, then
        live ones, none twice.
        """
        a = await self.node("a")
        b = await self.node("b")
        first = await self.stream(b)
        for i in range(3):
            a.endpoint.send({"n": i})
        await until(lambda: len(first.data()) == 3, "3 events")
        last = first.last_id
        await first.close()
        for i in range(3, 6):
            a.endpoint.send({"n": i})
        await until(lambda: b.broker._endpoints["/sse"].delivered >= 6, "B to see them")
        again = await self.stream(b, last_event_id=last)
        await until(lambda: len(again.data()) == 3, "the replay")
        a.endpoint.send({"n": 6})
        await until(lambda: len(again.data()) == 4, "a live event")
        await pause(0.2)
        self.assertEqual([m["n"] for m in again.data()], [3, 4, 5, 6])
        ids = [int(e.last_event_id.rpartition(".")[2]) for e in again.after_setup()]
        self.assertEqual(ids, [4, 5, 6, 7])

    async def test_replay_on_a_fresh_node(self) -> None:
        """
        A node that started after the events were published replays them
        too.
        """
        a = await self.node("a")
        for i in range(4):
            a.endpoint.send({"n": i})
        await until(lambda: a.broker._endpoints["/sse"].delivered >= 4, "A to see them")
        on_a = await self.stream(a)
        a.endpoint.send({"n": 4})
        await until(lambda: len(on_a.data()) == 1, "an event")
        first_id = on_a.last_id
        c = await self.node("c")
        epoch = first_id.rpartition(".")[0]
        replayed = await self.stream(c, last_event_id=f"{epoch}.2")
        await until(lambda: len(replayed.data()) == 3, "the replay")
        self.assertEqual([m["n"] for m in replayed.data()], [2, 3, 4])

    async def test_reset_when_trimmed(self) -> None:
        """
        A client whose last id was trimmed off gets C{reset}, then what is
        kept.
        """
        a = await self.node("a", history=3)
        b = await self.node("b", history=3)
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "an event")
        old = on_b.last_id
        await on_b.close()
        for i in range(1, 6):
            a.endpoint.send({"n": i})
        await until(lambda: b.broker._endpoints["/sse"].delivered >= 6, "B to see them")
        again = await self.stream(b, last_event_id=old)
        await until(lambda: len(again.after_setup()) == 4, "reset and replay")
        self.assertEqual(again.after_setup()[0].type, "reset")
        self.assertEqual([m["n"] for m in again.data("message")], [3, 4, 5])

    async def test_no_reset_when_nothing_missed_was_trimmed(self) -> None:
        """
        Events trimmed off before the client's last id are no reset: it
        missed nothing, on this channel or another.
        """
        a = await self.node("a", history=2, channels=["news"])
        on_a = await self.stream(a, channels="news")
        for i in range(4):
            a.endpoint.send({"n": i})
            a.endpoint.channels["news"].broadcast({"news": i})
        await until(lambda: len(on_a.data()) == 8, "8 events")
        again = await self.stream(a, channels="news", last_event_id=on_a.last_id)
        a.endpoint.send({"n": 4})
        await until(lambda: len(again.after_setup()) == 1, "a live event")
        await pause(0.1)
        self.assertEqual(again.data(), [{"n": 4}])

    async def test_reset_for_unknown_id(self) -> None:
        """
        A malformed id, or one of another epoch, is a reset and a replay of
        all that is kept.
        """
        a = await self.node("a", history=5)
        a.endpoint.send({"n": 0})
        await until(lambda: a.broker._endpoints["/sse"].delivered >= 1, "the event")
        for bad in ("garbage", "otherepoch.1", "x.99999"):
            again = await self.stream(a, last_event_id=bad)
            await until(lambda s=again: len(s.after_setup()) == 2, "reset and replay")
            self.assertEqual(again.after_setup()[0].type, "reset")
            self.assertEqual(again.data("message"), [{"n": 0}])

    async def test_reset_for_events_past_their_age(self) -> None:
        """
        Kept events older than the channel's age limit are not replayed, and
        the client is told it missed them.
        """
        policy = HistoryPolicy(10, age=0.3)
        a = await self.node("a", history=policy)
        on_a = await self.stream(a)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_a.data()) == 1, "an event")
        old = on_a.last_id
        a.endpoint.send({"n": 1})
        await pause(0.5)
        a.endpoint.send({"n": 2})
        await until(lambda: len(on_a.data()) == 3, "3 events")
        again = await self.stream(a, last_event_id=old)
        await until(lambda: len(again.after_setup()) == 2, "reset and replay")
        self.assertEqual(again.after_setup()[0].type, "reset")
        self.assertEqual(again.data("message"), [{"n": 2}])


class OutageTests(RedisTestCase):
    """
    Redis goes away and comes back: local delivery goes on, and history
    covers the gap.
    """

    appendonly = True

    async def test_redis_restart_while_events_flow(self) -> None:
        """
        While Redis is down, events published on A reach A's streams at
        once; once it is back they are in history (a client replays them)
        and B's stream, connected throughout, gets them too, once.  Calls
        to B's sessions fail fast meanwhile; the outage is logged.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        a = await self.node("a")
        b = await self.node("b")
        on_a = await self.stream(a)
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "an event")
        self.assertEqual(len(on_a.data()), 1)
        before = on_a.last_id
        self.redis.stop()
        await until(lambda: not a.broker.connected, "A to see Redis go")
        for i in range(1, 4):
            a.endpoint.send({"n": i})
        await until(lambda: len(on_a.data()) == 4, "local delivery")
        self.assertEqual(on_a.last_id, before)
        sid = on_b.session_id
        assert sid is not None
        status, body = await self.post(a, {"route": "where", "sessionId": sid})
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        call = a.endpoint.request({"route": "ask"}, session_id=sid)
        assert isinstance(call, Deferred)
        with self.assertRaises(SessionClosed):
            await call
        self.redis.start()
        await until(lambda: a.broker.connected and b.broker.connected, "the links")
        a.endpoint.send({"n": 4})
        await until(lambda: len(on_a.data()) == 5, "the next event on A")
        await until(lambda: len(on_b.data()) == 5, "every event on B")
        await pause(0.2)
        self.assertEqual([m["n"] for m in on_a.data()], [0, 1, 2, 3, 4])
        self.assertEqual([m["n"] for m in on_b.data()], [0, 1, 2, 3, 4])
        again = await self.stream(b, last_event_id=before)
        await until(lambda: len(again.data()) == 4, "the replay")
        self.assertEqual([m["n"] for m in again.data()], [1, 2, 3, 4])
        ids = [e.last_event_id for e in again.after_setup()]
        self.assertEqual(len(set(ids)), 4)
        texts = [formatEvent(e) for e in logged]
        self.assertTrue(any(t.startswith("Lost Redis at") for t in texts), texts)
        self.assertTrue(any("wrote 3 events kept meanwhile" in t for t in texts))

    async def test_events_flow_through_a_restart(self) -> None:
        """
        Events published every few milliseconds while Redis stops and
        starts again reach A's stream, once each and in order, without a
        gap; B's stream gets every one of them too once Redis is back; and
        a client that saw only the first replays every later one.
        """
        a = await self.node("a", history=1000)
        b = await self.node("b", history=1000)
        on_a = await self.stream(a)
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "the first event")
        first = on_b.last_id
        sent = 1

        def tick() -> None:
            nonlocal sent
            a.endpoint.send({"n": sent})
            sent += 1

        loop = LoopingCall(tick)
        loop.clock = _clock()
        loop.start(0.005)
        try:
            await pause(0.1)
            self.redis.stop()
            await pause(0.3)
            self.redis.start()
            await until(lambda: a.broker.connected, "the link")
            await pause(0.1)
        finally:
            loop.stop()
        everything = list(range(sent))
        await until(lambda: len(on_a.data()) >= sent, "every event on A")
        await until(lambda: len(on_b.data()) >= sent, "every event on B")
        await pause(0.2)
        self.assertEqual([m["n"] for m in on_a.data()], everything)
        self.assertEqual(sorted(m["n"] for m in on_b.data()), everything)
        again = await self.stream(b, last_event_id=first)
        await until(lambda: len(again.data()) >= sent - 1, "the replay")
        await pause(0.1)
        self.assertEqual(sorted(m["n"] for m in again.data()), everything[1:])

    async def test_start_while_redis_is_down(self) -> None:
        """
        A node whose Redis is not there yet serves its own sessions, and
        writes what they got into history once Redis comes.
        """
        self.redis.stop()
        a = await self.node("a", start=False)
        started = a.broker.start()
        self.assertFalse(started.called)
        on_a = await self.stream(a)
        a.endpoint.send({"n": 0})
        a.endpoint.send({"n": 1})
        await until(lambda: len(on_a.data()) == 2, "local delivery")
        self.redis.start()
        await started
        self.assertTrue(a.broker.connected)
        fresh = await self.stream(a, last_event_id="x.0")
        await until(lambda: len(fresh.data("message")) == 2, "the replay")
        self.assertEqual(fresh.data("message"), [{"n": 0}, {"n": 1}])


class DataLossTests(RedisTestCase):
    """
    Redis comes back empty (no persistence): the cluster carries on.
    """

    async def test_restart_without_data(self) -> None:
        """
        After Redis lost everything, nodes register their sessions again,
        pushes find them, events get ids of a new epoch, and a client with
        an id of the old epoch is told it missed events.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        sid = on_b.session_id
        assert sid is not None
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "an event")
        old = on_b.last_id
        self.redis.stop()
        await until(lambda: not a.broker.connected, "A to see Redis go")
        b.endpoint.send({"n": 1})
        self.redis.start()
        await until(lambda: a.broker.connected and b.broker.connected, "the links")
        await until(
            lambda: self.redis.command("HGET", "test:/sse:where", sid) == "b",
            "B to register its session again",
        )
        self.assertEqual(a.endpoint.send({"to": "you"}, session_id=sid), 1)
        a.endpoint.send({"n": 2})
        await until(lambda: len(on_b.data("message")) == 4, "the push and the events")
        self.assertEqual(
            on_b.data("message"), [{"n": 0}, {"n": 1}, {"to": "you"}, {"n": 2}]
        )
        new = on_b.last_id
        self.assertNotEqual(new.rpartition(".")[0], old.rpartition(".")[0])
        # B may have missed what Redis lost: its session is told, once.
        resets = [e for e in on_b.after_setup() if e.type == "reset"]
        self.assertEqual(len(resets), 1, on_b.after_setup())
        self.assertEqual(
            resets[0].last_event_id.rpartition(".")[0], new.rpartition(".")[0]
        )
        again = await self.stream(a, last_event_id=old)
        await until(lambda: len(again.after_setup()) >= 2, "reset and replay")
        self.assertEqual(again.after_setup()[0].type, "reset")
        self.assertEqual(again.data("message"), [{"n": 1}, {"n": 2}])

    async def test_lost_while_away(self) -> None:
        """
        Redis is killed while an event it stored is on its way to B, and
        comes back empty: B cannot deliver that event, and says so with
        one C{reset} whose id is where the new epoch begins; what is
        published next reaches B, and a client resuming from the reset's
        id gets the new epoch's events without a second C{reset}.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "an event")
        # Stored in Redis, never delivered to B: B's bus stops reading, and
        # what Redis sent it is thrown away with its connection.
        bus = b.broker._link.subscriber
        assert bus is not None and bus.transport is not None
        bus.transport.pauseProducing()
        a.endpoint.send({"n": 1})
        await until(
            lambda: self.redis.command("GET", "test:/sse:seq") == "2", "n=1 stored"
        )
        self.redis.kill()
        bus.transport.abortConnection()
        self.redis.start()
        await until(lambda: a.broker.connected and b.broker.connected, "the links")
        a.endpoint.send({"n": 2})
        await until(lambda: {"n": 2} in on_b.data(), "the next event on B")
        await pause(0.2)
        self.assertEqual(on_b.data("message"), [{"n": 0}, {"n": 2}])
        resets = [e for e in on_b.after_setup() if e.type == "reset"]
        self.assertEqual(
            [e.type for e in on_b.after_setup()], ["message", "reset", "message"]
        )
        position = resets[0].last_event_id
        self.assertEqual(position, on_b.last_id.rpartition(".")[0] + ".0")
        again = await self.stream(b, last_event_id=position)
        await until(lambda: len(again.after_setup()) >= 1, "the replay")
        await pause(0.1)
        self.assertEqual([e.type for e in again.after_setup()], ["message"])
        self.assertEqual(again.data(), [{"n": 2}])

    async def test_flushed_while_linked(self) -> None:
        """
        Redis is flushed under linked nodes: the next event comes in a new
        epoch, and B's session is told, with one C{reset} before it, that
        it may have missed events.
        """
        a = await self.node("a")
        b = await self.node("b")
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        await until(lambda: len(on_b.data()) == 1, "an event")
        self.redis.command("FLUSHALL")
        a.endpoint.send({"n": 1})
        await until(lambda: len(on_b.data()) == 3, "the reset and the event")
        self.assertEqual(
            [e.type for e in on_b.after_setup()], ["message", "reset", "message"]
        )
        self.assertEqual(on_b.data("message"), [{"n": 0}, {"n": 1}])
        reset = on_b.after_setup()[1]
        self.assertEqual(reset.last_event_id, on_b.last_id.rpartition(".")[0] + ".0")
        self.assertEqual(json.loads(reset.data)["route"], "reset")


class OutageCoverageTests(RedisTestCase):
    """
    Redis goes away and comes back with its data: history covers the gap,
    and only what it could not cover is said.
    """

    appendonly = True

    async def test_reset_only_without_history(self) -> None:
        """
        After an outage, the members of a channel that keeps history get
        what they missed and no C{reset}; those of a channel that keeps
        none (whose events of the outage are gone) get one C{reset} each.
        """
        options: dict[str, Any] = {"channels": [ChannelSpec("live", history=0)]}
        a = await self.node("a", **options)
        b = await self.node("b", **options)
        kept = await self.stream(b)
        live = await self.stream(b, channels="live")
        a.endpoint.send({"n": 0})
        await until(lambda: len(kept.data()) == 1, "an event")
        self.redis.stop()
        await until(lambda: not a.broker.connected, "A to see Redis go")
        a.endpoint.send({"n": 1})
        a.endpoint.channels["live"].broadcast({"live": 1})
        self.redis.start()
        await until(lambda: a.broker.connected and b.broker.connected, "the links")
        await until(lambda: len(kept.data()) == 2, "the kept event")
        await until(lambda: len(live.data()) == 3, "the reset")
        await pause(0.2)
        self.assertEqual([e.type for e in kept.after_setup()], ["message", "message"])
        # The live stream is in the endpoint's channel too: it gets the
        # kept event, after the reset that says what is gone.
        self.assertEqual(
            [e.type for e in live.after_setup()], ["message", "reset", "message"]
        )
        self.assertEqual(live.data("message"), [{"n": 0}, {"n": 1}])


class ConfigurationTests(TestCase):
    """
    What the constructor accepts.
    """

    def test_node_id(self) -> None:
        """
        A node id is random unless given, and may not contain a dot.
        """
        broker = RedisBroker(_clock())
        self.assertTrue(broker.node_id)
        self.assertNotIn(".", broker.node_id)
        self.assertTrue(broker.clustered)
        self.assertRaises(ValueError, RedisBroker, _clock(), node_id="a.b")
        self.assertRaises(ValueError, RedisBroker, _clock(), url="http://x")

    async def test_stop_before_linked(self) -> None:
        """
        Stopping a broker that never reached Redis leaves nothing behind,
        and fires what L{start} returned.
        """
        broker = RedisBroker(_clock(), f"redis://127.0.0.1:{free_port()}/0")
        started = broker.start()
        await pause(0.1)
        await broker.stop()
        self.assertTrue(started.called)
        self.assertFalse(broker.connected)


#: The SHA1 of each script as it was when the scripts lived in
#: C{txgraphsse/redis.py}: moving them into files changed no byte that
#: Redis sees.  (A script that changes on purpose changes its line here.)
SCRIPT_SHAS = {
    "publish": "62eb6588f69dc5d1d847381d520a76d8fb11e91d",
    "direct": "58948f81c79a8bb6872c3812df71f660104d527f",
    "heartbeat": "bdf9a684ee1b4f29fa2e6a5fe65b2898f02b0c40",
    "register": "26d5779e40ebfb87bfcea24744e070061c69c038",
    "opened": "f52b9d2144058f445bd21b30bc13e7d1f188b3c7",
    "closed": "52d6279610441f3b445a4388bd6f889b4b6bbcea",
    "leave": "99106a69ca77359a0ca9bc130fff0b4701f7f3a6",
    "sync": "3eeb3a4c91e2d41aa6dd2defef8aa941898b02dc",
    "replay": "96815c5516f613a60a809be40dcfae8320c5abe6",
    "presence_write": "7de32617e2106f5efa5b80fd1dd8292d5b73b169",
    "presence_refresh": "265b9f1455c1319bd1a841f98be0c7373ffde0bf",
    "presence_read": "ee9813f3a153e0e8d646a50be849aeee2bdd1701",
}

#: The broker's package.
_REDIS = "txgraphsse._redis"


def _in_redis(module: str) -> bool:
    """
    Whether C{module} is the broker's package or one of its modules.
    """
    return module == _REDIS or module.startswith(f"{_REDIS}.")


def _redis_modules() -> list[Path]:
    """
    The modules of the broker's package, in order.
    """
    return [path for path in package_modules() if _in_redis(module_name(path))]


def _script_names_used(path: Path) -> set[str]:
    """
    The names a module imports from C{_scripts} and uses.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").rpartition(".")[2] == "_scripts"
        for alias in node.names
    }
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return {imported[name] for name in used if name in imported}


class ScriptTests(SynchronousTestCase):
    """
    The Lua scripts are package data: each file is loaded, used, and is
    the script Redis stores under our SHA1.
    """

    def test_every_file_is_a_script(self) -> None:
        """
        Every C{lua/*.lua} file of the package is one of L{_scripts.SCRIPTS}
        (and the other way round), read as it is, with the SHA1 of its
        bytes, the same as before the scripts moved into files.
        """
        lua = resources.files("txgraphsse._redis") / "lua"
        files = {
            entry.name[: -len(".lua")]: entry.read_bytes()
            for entry in lua.iterdir()
            if entry.name.endswith(".lua")
        }
        self.assertEqual(sorted(files), sorted(s.name for s in _scripts.SCRIPTS))
        for script in _scripts.SCRIPTS:
            self.assertIs(getattr(_scripts, script.name.upper()), script)
            self.assertEqual(script.text.encode("utf-8"), files[script.name])
            self.assertEqual(script.sha, hashlib.sha1(files[script.name]).hexdigest())
        self.assertEqual({s.name: s.sha for s in _scripts.SCRIPTS}, SCRIPT_SHAS)

    def test_every_script_is_used(self) -> None:
        """
        Each script is run by some part of the broker.
        """
        used: set[str] = set()
        for path in _redis_modules():
            if path.name != "_scripts.py":
                used |= _script_names_used(path)
        wanted = {s.name.upper() for s in _scripts.SCRIPTS}
        self.assertEqual(used & wanted, wanted)

    def test_redis_stores_them_under_our_sha(self) -> None:
        """
        C{SCRIPT LOAD} of each script into a real C{redis-server} answers
        our SHA1 (so C{EVALSHA} finds it), and Redis compiles every one.
        """
        redis = RedisServer()
        redis.start()
        self.addCleanup(redis.cleanup)
        for script in _scripts.SCRIPTS:
            self.assertEqual(
                redis.command("SCRIPT", "LOAD", script.text), script.sha, script.name
            )
        shas = [s.sha for s in _scripts.SCRIPTS]
        self.assertEqual(redis.command("SCRIPT", "EXISTS", *shas), [1] * len(shas))


#: The txredisapi attributes the faster protocol relies on, with the
#: parameters of each method: written out here, not taken from the module
#: under test.
RELIED_UPON: dict[str, list[str] | None] = {
    "dataReceived": ["data", "unpause"],
    "setLineMode": ["extra"],
    "line_mode": None,
    "_build_command": ["args", "kwargs"],
}

#: What the faster protocol adds, which txredisapi must not define itself.
ADDED = ["_extra"]


def _reader(**changes: Any) -> type:
    """
    A stand-in for a txredisapi protocol with every hook the probe looks
    for; C{changes} replace (or, given as L{None}, remove) attributes.
    """

    def dataReceived(self: Any, data: bytes, unpause: bool = False) -> None:
        while self.line_mode:
            break

    def setLineMode(self: Any, extra: bytes = b"") -> None:
        self.line_mode = 1

    def _build_command(self: Any, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def execute_command(self: Any, *args: Any, **kwargs: Any) -> bytes:
        built: bytes = self._build_command(*args, **kwargs)
        return built

    attributes: dict[str, Any] = {
        "line_mode": 1,
        "dataReceived": dataReceived,
        "setLineMode": setLineMode,
        "_build_command": _build_command,
        "execute_command": execute_command,
    }
    for name, value in changes.items():
        if value is None:
            del attributes[name]
        else:
            attributes[name] = value
    return type("Reader", (), attributes)


class ProtocolSeamTests(SynchronousTestCase):
    """
    L{_protocol} is the one seam with txredisapi's private hooks: the hooks
    are named here, the probe finds a txredisapi that lacks one, and no
    other part of the broker names them.
    """

    def test_attributes_named(self) -> None:
        """
        The module relies on exactly the attributes this test names.
        """
        self.assertEqual(
            {
                k: None if v is None else list(v)
                for k, v in _protocol.TXREDISAPI_ATTRIBUTES.items()
            },
            RELIED_UPON,
        )
        self.assertEqual(list(_protocol.FASTER_OWN_ATTRIBUTES), ADDED)

    def test_installed_txredisapi_keeps_them(self) -> None:
        """
        txredisapi's protocols have every hook, with the parameters the
        faster protocol passes, and none of its own attributes; the probe
        agrees and the fast path is on.  If this fails after a txredisapi
        upgrade, L{_protocol._Faster} must be brought up to date.
        """
        for cls in (txredisapi.RedisProtocol, txredisapi.SubscriberProtocol):
            for name, parameters in RELIED_UPON.items():
                self.assertTrue(hasattr(cls, name), f"{cls.__name__}.{name}")
                if parameters is not None:
                    found = list(inspect.signature(getattr(cls, name)).parameters)
                    self.assertEqual(found, ["self", *parameters], name)
            for name in ADDED:
                self.assertFalse(hasattr(cls, name), f"{cls.__name__}.{name}")
            reader = next(c for c in cls.__mro__ if "setLineMode" in vars(c))
            self.assertIn("line_mode", reader.dataReceived.__code__.co_names)
            self.assertIn("_build_command", cls.execute_command.__code__.co_names)
        self.assertEqual(_protocol.probe(), "")
        self.assertTrue(_protocol.FAST_PATH)

    def test_stand_in_passes(self) -> None:
        """
        The stand-in the next tests change passes the probe as it is.
        """
        self.assertEqual(_protocol.probe(_reader()), "")

    def test_missing_attribute(self) -> None:
        """
        A txredisapi without one of the attributes fails the probe, which
        names it.
        """
        for name in RELIED_UPON:
            self.assertIn(name, _protocol.probe(_reader(**{name: None})), name)

    def test_other_parameters(self) -> None:
        """
        A hook that takes other parameters fails the probe, which names it.
        """

        def dataReceived(self: Any, data: bytes) -> None:
            while self.line_mode:
                break

        def setLineMode(self: Any) -> None:
            pass

        def _build_command(self: Any, *args: Any) -> bytes:
            return b""

        for name, hook in [
            ("dataReceived", dataReceived),
            ("setLineMode", setLineMode),
            ("_build_command", _build_command),
        ]:
            self.assertIn(name, _protocol.probe(_reader(**{name: hook})), name)
        self.assertIn("line_mode", _protocol.probe(_reader(line_mode=None)))

    def test_rewired(self) -> None:
        """
        A line reader that no longer loops on C{line_mode}, a command path
        that no longer frames with C{_build_command}, and a protocol with an
        C{_extra} of its own fail the probe.
        """

        def dataReceived(self: Any, data: bytes, unpause: bool = False) -> None:
            pass

        def execute_command(self: Any, *args: Any, **kwargs: Any) -> None:
            pass

        self.assertIn("line_mode", _protocol.probe(_reader(dataReceived=dataReceived)))
        self.assertIn(
            "_build_command", _protocol.probe(_reader(execute_command=execute_command))
        )
        self.assertIn("_extra", _protocol.probe(_reader(_extra=b"")))

    def test_failed_probe_is_logged(self) -> None:
        """
        When the probe fails, the fast path is off, and the log says so and
        why.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.patch(_protocol, "probe", lambda: "RedisProtocol has no line_mode")
        self.assertFalse(_protocol._fast_path_holds())
        texts = [formatEvent(e) for e in logged]
        self.assertEqual(len(texts), 1, texts)
        self.assertIn("the fast path is off", texts[0])
        self.assertIn("RedisProtocol has no line_mode", texts[0])

    def test_protocols_follow_the_flag(self) -> None:
        """
        The connections are the faster ones while L{_protocol.FAST_PATH}
        holds, and txredisapi's plain ones (without a single override)
        once it does not.
        """
        owner = _Owner()
        self.assertIsInstance(_protocol.command_protocol(owner), _protocol._Faster)
        self.assertIsInstance(_protocol.subscriber_protocol(owner), _protocol._Faster)
        self.patch(_protocol, "FAST_PATH", False)
        command = _protocol.command_protocol(owner)
        subscriber = _protocol.subscriber_protocol(owner)
        for proto in (command, subscriber):
            self.assertNotIsInstance(proto, _protocol._Faster)
            for name in RELIED_UPON:
                self.assertNotIn(name, vars(type(proto)), name)
        self.assertIsInstance(command, txredisapi.RedisProtocol)
        self.assertIsInstance(subscriber, txredisapi.SubscriberProtocol)

    def test_no_other_module_names_them(self) -> None:
        """
        No module of the broker but L{_protocol} names a txredisapi private
        attribute, nor one of the hooks the faster protocol overrides.
        """
        names = {*RELIED_UPON, *ADDED}
        offences = []
        for path in _redis_modules():
            if path.name == "_protocol.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                named = None
                if isinstance(node, ast.Attribute):
                    named = node.attr
                elif isinstance(node, ast.Name):
                    named = node.id
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    named = node.value
                if named in names:
                    offences.append(f"{path.name}:{node.lineno}: {named}")
        self.assertEqual(offences, [])


class _Owner:
    """
    A connection's owner that ignores what it is told.
    """

    def received(self, channel: str, message: Any) -> None:
        pass

    def lost(self, proto: object) -> None:
        pass


class PlainProtocolTests(BroadcastTests):
    """
    The broadcast tests again, with the fast path off: txredisapi's plain
    protocols carry events as well, large ones split across reads included.
    """

    def setUp(self) -> None:
        self.patch(_protocol, "FAST_PATH", False)
        super().setUp()

    async def test_round_trip_on_plain_protocols(self) -> None:
        """
        Two nodes on txredisapi's plain protocols: events published on each
        reach both, a push reaches the other node's session, and a
        forwarded call comes back with its answer.
        """
        a = await self.node("a")
        b = await self.node("b")
        for node in (a, b):
            for proto in (node.broker._link._cmd, node.broker._link.subscriber):
                self.assertIsInstance(proto, txredisapi.BaseRedisProtocol)
                self.assertNotIsInstance(proto, _protocol._Faster)
        on_a = await self.stream(a)
        on_b = await self.stream(b)
        a.endpoint.send({"n": 0})
        b.endpoint.send({"n": 1})
        for stream in (on_a, on_b):
            await until(lambda s=stream: len(s.data()) == 2, "both events")
        self.assertEqual(on_a.data(), on_b.data())
        sid = on_b.session_id
        assert sid is not None
        self.assertEqual(a.endpoint.send({"to": "you"}, session_id=sid), 1)
        await until(lambda: on_b.data()[-1:] == [{"to": "you"}], "the push")
        status, body = await self.post(a, {"route": "where", "sessionId": sid})
        self.assertEqual((status, body["args"]), (200, "b"))


class LayoutTests(SynchronousTestCase):
    """
    The public face is thin, and the parts of the broker import only the
    parts below them.
    """

    #: The parts, lowest first, as the package's docstring lists them.
    ORDER = [
        "_protocol",
        "_scripts",
        "_state",
        "_link",
        "_context",
        "_nodes",
        "_replay",
        "_publish",
        "_bus",
        "_peers",
        "_presence",
        "_broker",
    ]

    def test_face(self) -> None:
        """
        C{txgraphsse.redis} exports L{RedisBroker} alone, and it is the
        coordinator's.
        """
        self.assertEqual(public_redis.__all__, ["RedisBroker"])
        self.assertIs(public_redis.RedisBroker, coordinator.RedisBroker)
        self.assertIs(RedisBroker, coordinator.RedisBroker)
        self.assertTrue(verifyObject(IBroker, RedisBroker(_clock())))

    def test_parts_import_only_lower_parts(self) -> None:
        """
        Each module of the package imports (anywhere in it: inside
        functions and under C{TYPE_CHECKING} too) only the parts listed
        before it, and of the rest of C{txgraphsse} only its broker
        interfaces and the probe of internals; the package's C{__init__}
        imports nothing.
        """
        found = sorted(path.stem for path in _redis_modules())
        self.assertEqual(found, sorted([*self.ORDER, "__init__"]))
        outside = {"txgraphsse._broker", "txgraphsse._internals"}
        offences = []
        for path in _redis_modules():
            part = path.stem
            if part in self.ORDER:
                lower = self.ORDER[: self.ORDER.index(part)]
                allowed = {f"{_REDIS}.{name}" for name in lower} | outside
            else:
                allowed = set()
            bad = package_imports(path) - allowed
            offences.extend(f"{path.name}: {target}" for target in sorted(bad))
        self.assertEqual(offences, [])

    def test_only_the_face_imports_the_parts(self) -> None:
        """
        Of the rest of the package, only C{txgraphsse/redis.py} imports the
        broker's parts, and only the coordinator: nothing the parts import
        can import them back.
        """
        importers = {}
        for path in package_modules():
            if _in_redis(module_name(path)):
                continue
            parts = {target for target in package_imports(path) if _in_redis(target)}
            if parts:
                importers[module_name(path)] = parts
        self.assertEqual(importers, {"txgraphsse.redis": {f"{_REDIS}._broker"}})
