"""
Tests for presence (L{txgraphsse.ChannelSpec}C{(name, presence=True)}):
who is in a channel, and the C{presence} events its members get as
sessions join and leave.

First the batches on a L{Clock} (what is coalesced, and when it is sent),
then one endpoint on a real port of 127.0.0.1 with a JWT authorizer (the
entries' subjects and infos, events read from real streams), then two
nodes in this process on a real C{redis-server} (L{tests._redis}): each
sees the other's members, hears of its joins and leaves, and a node that
dies leaves presence within the TTL.  Last, C{twistd graphsse --presence}.
"""

from __future__ import annotations

import json
import time
from inspect import isawaitable
from typing import Any, cast

import jwt
import treq
from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txgraphsse import (
    ChannelSpec,
    IBroker,
    InMemoryBroker,
    JWTAuthorizer,
    SSEBackend,
    SSEClient,
    SSEEndpoint,
    StoredEvent,
    tap,
)
from txgraphsse._broker import IDeliverySink
from txgraphsse._presence import Presence
from txgraphsse.redis import RedisBroker

from ._redis import RedisServer
from .test_backchannel import LiveStream, TrackingSite, _HangUp

SECRET = "s3cret-for-presence-tests-0123456789abcdef"

#: Seconds any one wait may take before the test fails.
WAIT = 15.0


def token(subject: str, **claims: Any) -> str:
    """
    A token for C{subject} that may join every channel of these tests.
    """
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode({"sub": subject, "subscribe": ["*"], **claims}, SECRET)


def _clock() -> IReactorTime:
    return cast(IReactorTime, reactor)


async def until(check: Any, what: str, wait: float = WAIT) -> Any:
    """
    Wait until C{await check()} (or C{check()}) is true; fire with it.
    """
    deadline = _clock().seconds() + wait
    while True:
        found = check()
        if isawaitable(found):
            found = await found
        if found:
            return found
        if _clock().seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(_clock(), 0.02, lambda: None)


def batches(stream: LiveStream) -> list[dict[str, Any]]:
    """
    The C{args} of every C{presence} event on C{stream}.
    """
    found = []
    for event in stream.events:
        if event.type == "presence":
            message = json.loads(event.data)
            assert message["route"] == "presence", message
            found.append(message["args"])
    return found


def ids(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["id"] for entry in entries}


# Batches, on a clock


@define(eq=False)
class _Member:
    id: str
    principal: Any = None
    info: dict[str, Any] | None = None


@define
class _Subject:
    subject: str


@implementer(IDeliverySink)
class _Sink:
    """
    Keeps what the broker delivers.
    """

    def __init__(self) -> None:
        self.delivered: list[StoredEvent] = []

    def deliver(self, event: StoredEvent) -> None:
        self.delivered.append(event)

    def batches(self) -> list[dict[str, Any]]:
        out = []
        for event in self.delivered:
            assert (event.event, event.id) == ("presence", None), event
            out.append(json.loads(event.data)["args"])
        return out


class BatchTests(SynchronousTestCase):
    """
    L{Presence} over an L{InMemoryBroker}, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = InMemoryBroker(self.clock)
        self.sink = _Sink()
        self.broker.attach("/k", cast(IDeliverySink, self.sink))
        self.presence = Presence(self.broker, self.clock, "/k", "room")

    def listed(self) -> list[dict[str, Any]]:
        return self.successResultOf(self.broker.presence("/k", "room"))

    def test_coalesced(self) -> None:
        """
        Three joins in one second are one batch, sent one second after the
        first, with each member's entry; the broker lists them from the end
        of the turn they joined in.
        """
        members = [
            _Member("a", _Subject("alice"), {"n": 1}),
            _Member("b"),
            _Member("c", object()),
        ]
        self.presence.joined(members[0])
        self.assertEqual(self.listed(), [])
        self.clock.advance(0)
        self.assertEqual(
            self.listed(), [{"id": "a", "subject": "alice", "info": {"n": 1}}]
        )
        self.clock.advance(0.5)
        self.presence.joined(members[1])
        self.presence.joined(members[2])
        self.clock.advance(0.49)
        self.assertEqual(self.sink.batches(), [])
        self.clock.advance(0.01)
        self.assertEqual(
            self.sink.batches(),
            [
                {
                    "channel": "room",
                    "joined": [
                        {"id": "a", "subject": "alice", "info": {"n": 1}},
                        {"id": "b", "subject": None, "info": None},
                        {"id": "c", "subject": None, "info": None},
                    ],
                    "left": [],
                }
            ],
        )
        self.clock.advance(5)
        self.assertEqual(len(self.sink.batches()), 1)

    def test_joined_and_left_in_one_batch(self) -> None:
        """
        A session that joins and leaves within one batch is in neither of
        its lists; one that leaves in a later batch is in its C{left}.
        """
        stays, passes = _Member("stays"), _Member("passes")
        self.presence.joined(stays)
        self.clock.advance(0)
        self.clock.advance(1)
        self.presence.joined(passes)
        self.clock.advance(0)
        self.clock.advance(0.2)
        self.presence.left(passes)
        self.presence.left(stays)
        self.clock.advance(1)
        self.assertEqual(
            [(ids(b["joined"]), ids(b["left"])) for b in self.sink.batches()],
            [({"stays"}, set()), (set(), {"stays"})],
        )
        self.assertEqual(self.listed(), [])

    def test_left_before_announced(self) -> None:
        """
        A session that leaves in the turn it joined in is never announced:
        no entry, no batch.
        """
        member = _Member("brief")
        self.presence.joined(member)
        self.presence.left(member)
        self.clock.advance(0)
        self.assertEqual(self.listed(), [])
        self.clock.advance(5)
        self.assertEqual(self.sink.delivered, [])

    def test_info_not_json(self) -> None:
        """
        An C{info} that JSON cannot carry is shown as L{None}.
        """
        self.presence.joined(_Member("odd", None, {"when": object()}))
        self.clock.advance(0)
        self.assertEqual(self.listed(), [{"id": "odd", "subject": None, "info": None}])

    def test_lost(self) -> None:
        """
        Members the broker says left without their node (it died) go in the
        next batch's C{left}.
        """
        far = {"id": "far", "subject": "s", "info": None}
        self.presence.lost([far])
        self.clock.advance(1)
        self.assertEqual(
            self.sink.batches(), [{"channel": "room", "joined": [], "left": [far]}]
        )

    def test_close_sends_at_once(self) -> None:
        """
        Closing sends what was gathered at once, and nothing after.
        """
        self.presence.joined(_Member("a"))
        self.clock.advance(0)
        self.presence.close()
        self.assertEqual([ids(b["joined"]) for b in self.sink.batches()], [{"a"}])
        self.presence.joined(_Member("b"))
        self.clock.advance(5)
        self.assertEqual(len(self.sink.batches()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_brokers_provide_it(self) -> None:
        """
        Both brokers provide L{IBroker}, presence methods included.
        """
        self.assertTrue(verifyObject(IBroker, self.broker))
        self.assertTrue(verifyObject(IBroker, RedisBroker(self.clock)))


class ChannelTests(SynchronousTestCase):
    """
    Which channels keep presence.
    """

    def test_spec(self) -> None:
        """
        C{ChannelSpec(name, presence=True)} keeps presence; a plain name,
        the default channel and a dynamic channel do not, and asking one of
        them for its presence is a L{ValueError}.
        """
        endpoint = SSEBackend(Clock()).setup_sse(
            "/sse",
            channels=[ChannelSpec("room", presence=True), "plain"],
            dynamic_channels=True,
        )
        self.addCleanup(endpoint.terminate)
        endpoint.channel_table.join(["made"])
        self.assertEqual(
            {name: c.keeps_presence for name, c in endpoint.channels.items()},
            {"message": False, "room": True, "plain": False, "made": False},
        )
        self.assertEqual(self.successResultOf(endpoint.channels["room"].presence()), [])
        for name in ("plain", "message", "made"):
            self.assertRaises(ValueError, endpoint.channels[name].presence)

    def test_added_later(self) -> None:
        """
        A channel added again with C{presence=True} keeps presence from
        then on, the members it has already included.
        """
        clock = Clock()
        endpoint = SSEBackend(clock).setup_sse("/sse", dynamic_channels=True)
        self.addCleanup(endpoint.terminate)
        endpoint.channel_table.join(["made"])
        channel = endpoint.channels["made"]
        member = cast(SSEClient, _Member("early"))
        channel.members[member] = None
        self.addCleanup(channel.members.clear)
        self.assertIs(endpoint.add_channel(ChannelSpec("made", presence=True)), channel)
        self.assertTrue(channel.keeps_presence)
        self.assertFalse(channel.dynamic)
        self.assertEqual(ids(self.successResultOf(channel.presence())), {"early"})


# One endpoint, real sockets


class LivePresenceCase(TestCase):
    """
    Endpoints at C{/sse} of real sites on 127.0.0.1, with a JWT authorizer,
    a channel C{room} that keeps presence and one, C{plain}, that does not;
    C{on_connection} sets C{client.info} from the token's C{name}.
    """

    timeout = 60

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, False)
        self.streams: list[LiveStream] = []
        self.backends: list[SSEBackend] = []
        self.ports: list[tuple[IListeningPort, TrackingSite]] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))

    async def _clean_up(self) -> None:
        for backend in self.backends:
            await backend.shutdown()
        for stream in self.streams:
            await stream.done.addErrback(lambda f: None)
        await self.pool.closeCachedConnections()
        for port, site in self.ports:
            await port.stopListening()
            await site.all_closed()

    @staticmethod
    def on_connection(
        client: SSEClient, endpoint: SSEEndpoint, session_id: str, request: Any
    ) -> None:
        name = client.principal.claims.get("name")
        if name is not None:
            client.info = {"name": name}

    def serve(self, backend: SSEBackend) -> tuple[SSEEndpoint, str]:
        """
        Set up C{backend}'s endpoint and serve it: the endpoint and its URL.
        """
        self.backends.append(backend)
        endpoint = backend.setup_sse(
            "/sse",
            channels=[ChannelSpec("room", presence=True), "plain"],
            authorizer=JWTAuthorizer(SECRET),
            on_connection=self.on_connection,
        )
        root = Resource()
        root.putChild(b"sse", endpoint.resource)
        site = TrackingSite(root)
        port = cast(IReactorTCP, reactor).listenTCP(0, site, interface="127.0.0.1")
        self.ports.append((port, site))
        return endpoint, f"http://127.0.0.1:{port.getHost().port}/sse"

    async def open(
        self, url: str, subject: str, channels: str = "room", name: str | None = None
    ) -> LiveStream:
        """
        Open a stream as C{subject} in C{channels}; wait for its C{setId}.
        """
        claims = {} if name is None else {"name": name}
        response = await treq.get(
            f"{url}?channels={channels}",
            headers={"Authorization": f"Bearer {token(subject, **claims)}"},
            unbuffered=True,
            pool=self.pool,
        )
        self.assertEqual(response.code, 200)
        stream = LiveStream(response)
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        return stream

    async def hang_up(self, stream: LiveStream) -> None:
        """
        Drop C{stream}'s connection from the client's side.
        """
        stream.hang_up_when = lambda messages: True  # at the next bytes
        endpoint = self.backends[0].endpoints["/sse"]
        endpoint.sessions[stream.session_id].push("bye")
        await stream.done.addErrback(lambda f: f.trap(_HangUp))


class LivePresenceTests(LivePresenceCase):
    """
    One endpoint on the in-memory broker.
    """

    async def test_members_listed(self) -> None:
        """
        C{channel.presence()} lists every member session of the channel with
        its subject and the C{info} C{on_connection} set (L{None} where it
        set none); a session not in the channel is not listed, and one that
        ends leaves the list.
        """
        endpoint, url = self.serve(SSEBackend(reactor))
        alice = await self.open(url, "alice", name="Alice")
        bob = await self.open(url, "bob", channels="room,plain")
        await self.open(url, "carol", channels="plain")
        room = endpoint.channels["room"]
        listed = await room.presence()
        self.assertEqual(
            sorted(listed, key=lambda e: e["subject"]),
            [
                {"id": alice.session_id, "subject": "alice", "info": {"name": "Alice"}},
                {"id": bob.session_id, "subject": "bob", "info": None},
            ],
        )
        endpoint.sessions[alice.session_id].close()
        self.assertEqual(ids(await room.presence()), {bob.session_id})

    async def test_events_coalesced(self) -> None:
        """
        Members get C{presence} events: three sessions that join within a
        second come in one event, and their leaving in one more.
        """
        endpoint, url = self.serve(SSEBackend(reactor))
        watcher = await self.open(url, "watcher")
        [own] = await watcher.until(lambda _: batches(watcher) or None)
        self.assertEqual((ids(own["joined"]), own["left"]), ({watcher.session_id}, []))
        joiners = [await self.open(url, f"j{n}", name=f"J{n}") for n in range(3)]
        await watcher.until(lambda _: len(batches(watcher)) >= 2 or None)
        joined = batches(watcher)[1]
        self.assertEqual(joined["channel"], "room")
        self.assertEqual(joined["left"], [])
        self.assertEqual(
            sorted(joined["joined"], key=lambda e: e["subject"]),
            [
                {"id": j.session_id, "subject": f"j{n}", "info": {"name": f"J{n}"}}
                for n, j in enumerate(joiners)
            ],
        )
        # Each joiner heard the same batch (it was in the channel by then).
        for joiner in joiners:
            await joiner.until(lambda _, j=joiner: batches(j) or None)
            self.assertEqual(batches(joiner)[0], joined)
        for joiner in joiners:
            endpoint.sessions[joiner.session_id].close()
        await watcher.until(lambda _: len(batches(watcher)) >= 3 or None)
        left = batches(watcher)[2]
        self.assertEqual(
            (left["joined"], ids(left["left"])),
            ([], {j.session_id for j in joiners}),
        )
        await deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(len(batches(watcher)), 3)
        self.assertEqual(
            [e.type for e in watcher.events if e.type not in ("message",)],
            ["presence"] * 3,
        )

    async def test_join_and_leave_within_a_batch(self) -> None:
        """
        A session that joins and leaves within one batch is in neither of
        its lists; a client that hangs up leaves as one the server closed.
        """
        endpoint, url = self.serve(SSEBackend(reactor))
        watcher = await self.open(url, "watcher")
        await watcher.until(lambda _: batches(watcher) or None)
        passing = await self.open(url, "passing")
        staying = await self.open(url, "staying")
        await self.hang_up(passing)
        await until(lambda: passing.session_id not in endpoint.sessions, "hang-up")
        await watcher.until(lambda _: len(batches(watcher)) >= 2 or None)
        batch = batches(watcher)[1]
        self.assertEqual(
            (ids(batch["joined"]), batch["left"]), ({staying.session_id}, [])
        )

    async def test_plain_channel_has_none(self) -> None:
        """
        A channel that does not keep presence sends no C{presence} events.
        """
        _, url = self.serve(SSEBackend(reactor))
        watcher = await self.open(url, "watcher", channels="plain")
        await self.open(url, "other", channels="plain")
        await deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(batches(watcher), [])


# Two nodes on one redis-server


class RedisPresenceTests(LivePresenceCase):
    """
    Two nodes in this process, each with its own L{RedisBroker} (short
    heartbeats, a presence TTL of L{TTL} seconds), on one real
    C{redis-server}.
    """

    TTL = 1.0

    def setUp(self) -> None:
        self.redis = RedisServer(appendonly=True)
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        super().setUp()

    async def node(self, name: str) -> tuple[SSEEndpoint, str, RedisBroker]:
        broker = RedisBroker(
            _clock(),
            self.redis.url,
            prefix="test",
            node_id=name,
            heartbeat=0.1,
            node_ttl=1.0,
            presence_ttl=self.TTL,
        )
        broker.reconnect_initial = 0.05
        broker.reconnect_max = 0.3
        endpoint, url = self.serve(SSEBackend(reactor, broker=broker))
        await broker.start()
        return endpoint, url, broker

    async def test_each_node_lists_both(self) -> None:
        """
        Each node's C{presence()} lists the members of both, with their
        subjects and infos.
        """
        a, url_a, _ = await self.node("a")
        b, url_b, _ = await self.node("b")
        on_a = await self.open(url_a, "alice", name="Alice")
        on_b = await self.open(url_b, "bob", name="Bob")
        both = [
            {"id": on_a.session_id, "subject": "alice", "info": {"name": "Alice"}},
            {"id": on_b.session_id, "subject": "bob", "info": {"name": "Bob"}},
        ]
        for endpoint in (a, b):
            room = endpoint.channels["room"]

            async def listed(room: Any = room) -> list[dict[str, Any]]:
                found = await room.presence()
                return sorted(found, key=lambda e: e["subject"])

            await until(lambda listed=listed: _equal(listed(), both), "both members")
        self.assertEqual(
            sorted(self.redis.command("ZRANGE", "test:/sse:pn:room", 0, -1)),
            ["a", "b"],
        )

    async def test_events_across_nodes(self) -> None:
        """
        A member on A hears of B's joins and leaves.
        """
        _, url_a, _ = await self.node("a")
        b, url_b, _ = await self.node("b")
        watcher = await self.open(url_a, "watcher")
        await watcher.until(lambda _: batches(watcher) or None)
        on_b = await self.open(url_b, "bob", name="Bob")
        await watcher.until(lambda _: len(batches(watcher)) >= 2 or None)
        self.assertEqual(
            batches(watcher)[1],
            {
                "channel": "room",
                "joined": [
                    {"id": on_b.session_id, "subject": "bob", "info": {"name": "Bob"}}
                ],
                "left": [],
            },
        )
        b.sessions[on_b.session_id].close()
        await watcher.until(lambda _: len(batches(watcher)) >= 3 or None)
        self.assertEqual(ids(batches(watcher)[2]["left"]), {on_b.session_id})

    async def test_dead_node_leaves_within_ttl(self) -> None:
        """
        A node that vanishes (its link dropped as a crash would, nothing
        unregistered) leaves the other's presence within the TTL, and the
        other's members are told its members left.
        """
        a, url_a, _ = await self.node("a")
        _, url_b, broker_b = await self.node("b")
        watcher = await self.open(url_a, "watcher")
        on_b = await self.open(url_b, "bob")
        room = a.channels["room"]
        await until(lambda: _has(room.presence(), on_b.session_id), "B's member")
        await deferLater(reactor, self.TTL, lambda: None)  # B refreshed meanwhile
        self.assertIn(on_b.session_id, ids(await room.presence()))
        gone_at = _clock().seconds()
        await broker_b._vanish()
        await until(
            lambda: _lacks(room.presence(), on_b.session_id), "B's member to leave"
        )
        self.assertLessEqual(_clock().seconds() - gone_at, self.TTL + 0.25)

        def told(_: Any) -> bool:
            return any(on_b.session_id in ids(b["left"]) for b in batches(watcher))

        await watcher.until(lambda m: told(m) or None)
        self.assertEqual(
            self.redis.command("EXISTS", "test:/sse:ph:b:room"), 0, "taken out"
        )

    async def test_stop_leaves_at_once(self) -> None:
        """
        A node that stops takes its entries out of Redis as it goes.
        """
        a, url_a, _ = await self.node("a")
        _, url_b, _ = await self.node("b")
        await self.open(url_a, "alice")
        on_b = await self.open(url_b, "bob")
        room = a.channels["room"]
        await until(lambda: _has(room.presence(), on_b.session_id), "B's member")
        await self.backends[1].shutdown()
        self.assertNotIn(on_b.session_id, ids(await room.presence()))
        self.assertEqual(self.redis.command("EXISTS", "test:/sse:ph:b:room"), 0)
        self.assertEqual(
            self.redis.command("ZRANGE", "test:/sse:pn:room", 0, -1), ["a"]
        )

    async def test_written_again_when_lost(self) -> None:
        """
        Entries Redis lost are written again at the next refresh.
        """
        a, url_a, _ = await self.node("a")
        on_a = await self.open(url_a, "alice")
        room = a.channels["room"]
        await until(lambda: _has(room.presence(), on_a.session_id), "the member")
        self.redis.command("DEL", "test:/sse:ph:a:room", "test:/sse:pn:room")
        self.assertEqual(await room.presence(), [])
        await until(lambda: _has(room.presence(), on_a.session_id), "written again")

    async def test_outage(self) -> None:
        """
        A session that ends while Redis is away leaves presence once the
        link is back: the node writes its entries anew (and meanwhile
        answers with its own).
        """
        a, url_a, broker = await self.node("a")
        stays = await self.open(url_a, "stays")
        goes = await self.open(url_a, "goes")
        room = a.channels["room"]
        both = {stays.session_id, goes.session_id}
        await until(lambda: _equal(_ids(room.presence()), both), "both")
        self.redis.stop()
        await until(lambda: not broker.connected, "the link to go down")
        a.sessions[goes.session_id].close()
        self.assertEqual(ids(await room.presence()), {stays.session_id})
        self.redis.start()
        await until(lambda: broker.connected, "the link to come back")
        await until(
            lambda: (
                self.redis.command("HKEYS", "test:/sse:ph:a:room") == [stays.session_id]
            ),
            "the entries written anew",
        )
        self.assertEqual(ids(await room.presence()), {stays.session_id})


async def _ids(found: Deferred[list[dict[str, Any]]]) -> set[str]:
    return ids(await found)


async def _equal(found: Deferred[Any], wanted: Any) -> bool:
    return bool(await found == wanted)


async def _has(found: Deferred[list[dict[str, Any]]], session_id: str) -> bool:
    return session_id in ids(await found)


async def _lacks(found: Deferred[list[dict[str, Any]]], session_id: str) -> bool:
    return session_id not in ids(await found)


# twistd graphsse --presence


class TapTests(SynchronousTestCase):
    """
    C{--presence} and C{--presence-ttl}.
    """

    def options(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_presence(self) -> None:
        """
        The channels C{--presence} names keep presence; the others do not.
        """
        options = self.options("--channels", "a, b,c", "--presence", "c,a")
        self.assertEqual(
            tap.channel_specs(options),
            [
                ChannelSpec("a", presence=True),
                ChannelSpec("b"),
                ChannelSpec("c", presence=True),
            ],
        )
        _, endpoint, _ = tap.build(options)
        self.addCleanup(endpoint.terminate)
        self.assertLessEqual({"message", "a", "b", "c"}, set(endpoint.channels))
        self.assertEqual(
            {name for name, c in endpoint.channels.items() if c.keeps_presence},
            {"a", "c"},
        )

    def test_not_a_channel(self) -> None:
        """
        A C{--presence} channel must be among C{--channels}, unless
        channels are dynamic (then it is made a configured one).
        """
        with self.assertRaises(UsageError):
            self.options("--channels", "a", "--presence", "a,z")
        options = self.options("--dynamic-channels", "--presence", "z")
        self.assertEqual(tap.channel_specs(options), [ChannelSpec("z", presence=True)])

    def test_ttl(self) -> None:
        """
        C{--presence-ttl} reaches the Redis broker; it must be positive.
        """
        options = self.options(
            "--redis", "redis://127.0.0.1:1/0", "--presence-ttl", "4"
        )
        broker = tap.broker_for(options, Clock())
        assert isinstance(broker, RedisBroker)
        self.assertEqual(broker._presence.interval, 4 / 3)
        with self.assertRaises(UsageError):
            self.options("--presence-ttl", "0")
