"""
Tests for L{txgraphsse._channel} and the channel side of the endpoint: who
joins, what a channel's events are called, filters, and history replayed to
reconnecting clients before live events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import (
    ChannelSpec,
    HistoryPolicy,
    InMemoryBroker,
    Limits,
    Replay,
    ServerSentEvent,
    SSESession,
    StoredEvent,
    encode_event,
)
from txgraphsse._encoder import chunk

from .test_session import LAST_CHUNK, SSEServer, StreamConnection


def _datas(connection: StreamConnection) -> list[tuple[str, str]]:
    """
    C{(type, data)} of every event after C{setId}.
    """
    return [(e.type, e.data) for e in connection.events()[1:]]


def _history(server: SSEServer, channel: str) -> list[StoredEvent]:
    """
    What the in-memory broker keeps of C{channel}.
    """
    broker = server.backend.broker
    assert isinstance(broker, InMemoryBroker)
    return broker.history_of("/sse", channel)


class JoinTests(SynchronousTestCase):
    """
    C{?channels=} joins channels when the stream opens.
    """

    def test_configured(self) -> None:
        """
        Configured channels named in C{?channels=} (comma-separated,
        repeated, with spaces and duplicates) are joined, with the default
        channel.
        """
        server = SSEServer(channels=["a", "b", "c"])
        connection = server.connect(query=b"?channels=a,%20b&channels=a")
        session = server.session(connection)
        self.assertEqual(session.channels, ("message", "a", "b"))
        channels = server.endpoint.channels
        self.assertIn(session, channels["a"].members)
        self.assertIn(session, channels["b"].members)
        self.assertNotIn(session, channels["c"].members)
        self.assertIn(session, channels["message"].members)
        self.assertEqual(channels["c"].session_count, 0)

    def test_none(self) -> None:
        """
        Without C{?channels=} a session is in the default channel only.
        """
        server = SSEServer(channels=["a"])
        session = server.session(server.connect())
        self.assertEqual(session.channels, ("message",))
        self.assertEqual(server.endpoint.channels["a"].members, {})

    def test_unknown_forbidden(self) -> None:
        """
        An unknown channel is refused with C{403 forbidden} in JSON, and
        nothing is opened or created.
        """
        server = SSEServer(channels=["a"])
        connection = server.connect(query=b"?channels=a,zzz")
        response = connection.response()
        self.assertEqual(response.status, 403)
        self.assertEqual(
            response.header(b"content-type"), b"application/json; charset=utf-8"
        )
        error = json.loads(response.body)["error"]
        self.assertEqual(error["code"], "forbidden")
        self.assertIn("zzz", error["message"])
        self.assertNotIn("zzz", server.endpoint.channels)
        self.assertEqual(server.endpoint.sessions, {})
        self.assertEqual(server.endpoint.channels["a"].members, {})
        self.assertEqual(server.opened, [])
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_unknown_forbidden_head(self) -> None:
        """
        HEAD refuses an unknown channel the same way.
        """
        server = SSEServer()
        response = server.connect(query=b"?channels=zzz", method=b"HEAD").response()
        self.assertEqual(response.status, 403)

    def test_dynamic(self) -> None:
        """
        With C{dynamic_channels=True} an unknown channel is created and
        joined, and its events carry its name.
        """
        server = SSEServer(dynamic_channels=True)
        connection = server.connect(query=b"?channels=new")
        self.assertEqual(connection.response().status, 200)
        channel = server.endpoint.channels["new"]
        self.assertEqual(list(channel.members), [server.session(connection)])
        self.assertEqual(channel.broadcast("hi"), 1)
        server.turn()
        self.assertEqual(_datas(connection), [("new", "hi")])

    def test_too_many(self) -> None:
        """
        More channels than C{Limits.max_channels} are refused.
        """
        server = SSEServer(channels=["a", "b", "c"], limits=Limits(max_channels=2))
        response = server.connect(query=b"?channels=a,b,c").response()
        self.assertEqual(response.status, 403)
        self.assertEqual(server.endpoint.sessions, {})

    def test_disconnect_leaves(self) -> None:
        """
        A session that goes away is no longer counted or written to.
        """
        server = SSEServer(channels=["a"])
        gone = server.connect(query=b"?channels=a")
        staying = server.connect(query=b"?channels=a")
        gone.disconnect()
        channel = server.endpoint.channels["a"]
        self.assertEqual(list(channel.sessions()), [server.session(staying)])
        self.assertEqual(channel.broadcast("x"), 1)

    def test_register_deregister(self) -> None:
        """
        L{Channel.register} and L{Channel.deregister} keep the channel's
        members and the session's channel names in step.
        """
        server = SSEServer(channels=["a"])
        session = server.session(server.connect())
        channel = server.endpoint.channels["a"]
        channel.register(session)
        self.assertEqual(channel.session_count, 1)
        self.assertIn("a", session.channels)
        channel.deregister(session)
        channel.deregister(session)
        self.assertEqual(channel.session_count, 0)
        self.assertEqual(session.channels, ("message",))


class ChannelSetupTests(SynchronousTestCase):
    """
    C{add_channel} refuses what the wire or the query cannot carry.
    """

    def test_bad_names(self) -> None:
        """
        An empty name or one with a comma is refused.
        """
        server = SSEServer()
        self.assertRaises(ValueError, server.endpoint.add_channel, "")
        self.assertRaises(ValueError, server.endpoint.add_channel, "a,b")

    def test_bad_event_name(self) -> None:
        """
        A channel whose events would be named with a line break is refused.
        """
        server = SSEServer()
        self.assertRaises(
            ValueError, server.endpoint.add_channel, ChannelSpec("a", event="x\ny")
        )
        self.assertRaises(ValueError, server.endpoint.add_channel, "a\rb")
        self.assertNotIn("a", server.endpoint.channels)

    def test_existing(self) -> None:
        """
        Adding a channel twice gives the same channel.
        """
        server = SSEServer(channels=["a"])
        self.assertIs(server.endpoint.add_channel("a"), server.endpoint.channels["a"])


class BroadcastTests(SynchronousTestCase):
    """
    L{Channel.broadcast} reaches members with the channel's event name.
    """

    def test_channel_name_is_event_name(self) -> None:
        """
        A channel's events are named after it and reach its members only;
        C{broadcast} counts them.
        """
        server = SSEServer(channels=["news"])
        member = server.connect(query=b"?channels=news")
        other = server.connect()
        mark = len(other.transport.value())
        channel = server.endpoint.channels["news"]
        self.assertEqual(channel.broadcast({"headline": "x"}), 1)
        server.turn()
        self.assertEqual(
            member.response().chunks[-1],
            encode_event('{"headline":"x"}', "news"),
        )
        self.assertEqual(other.written_since(mark), b"")

    def test_spec_event_name(self) -> None:
        """
        A L{ChannelSpec} may name its events otherwise, and one broadcast
        may override the name.
        """
        server = SSEServer(channels=[ChannelSpec("prices", event="tick")])
        connection = server.connect(query=b"?channels=prices")
        channel = server.endpoint.channels["prices"]
        channel.broadcast(1)
        channel.broadcast(2, event="special")
        server.turn()
        self.assertEqual(_datas(connection), [("tick", "1"), ("special", "2")])

    def test_default_channel(self) -> None:
        """
        Events of the default channel carry no C{event:} field, so clients
        see C{message}.
        """
        server = SSEServer()
        connection = server.connect()
        server.endpoint.send({"x": 1})
        server.turn()
        self.assertEqual(connection.response().chunks[-1], b'data: {"x":1}\n\n')

    def test_bad_event_refused(self) -> None:
        """
        A broadcast event name with a line break raises L{ValueError} and
        nothing is sent or kept.
        """
        server = SSEServer(channels=[ChannelSpec("a", history=5)], keepalive=0)
        connection = server.connect(query=b"?channels=a")
        mark = len(connection.transport.value())
        channel = server.endpoint.channels["a"]
        self.assertRaises(ValueError, channel.broadcast, "x", event="a\nb")
        server.turn()
        self.assertEqual(connection.written_since(mark), b"")
        self.assertEqual(_history(server, "a"), [])

    def test_filter(self) -> None:
        """
        With a filter, only members it accepts get the event, in one write,
        without an id, and the event is not kept for replay.
        """
        server = SSEServer(channels=[ChannelSpec("a", history=10)])
        connections = [server.connect(query=b"?channels=a") for _ in range(4)]
        chosen = {connections[1].session_id, connections[3].session_id}
        channel = server.endpoint.channels["a"]
        writes = [c.transport.writes for c in connections]
        seen: list[SSESession] = []

        def only_chosen(session: SSESession) -> bool:
            seen.append(session)
            return session.id in chosen

        self.assertEqual(channel.broadcast("secret", filter=only_chosen), 2)
        self.assertEqual(len(seen), 4)
        server.turn()
        for connection, before in zip(connections, writes, strict=True):
            if connection.session_id in chosen:
                self.assertEqual(connection.transport.writes - before, 1)
                self.assertEqual(
                    connection.events()[1:], [ServerSentEvent("a", "secret", "")]
                )
            else:
                self.assertEqual(connection.transport.writes, before)
        self.assertEqual(_history(server, "a"), [])

    def test_filter_none_chosen(self) -> None:
        """
        A filter that accepts nobody queues nothing and counts none.
        """
        server = SSEServer(channels=["a"], keepalive=0)
        server.connect(query=b"?channels=a")
        channel = server.endpoint.channels["a"]
        self.assertEqual(channel.broadcast("x", filter=lambda session: False), 0)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_filter_error_reaches_caller(self) -> None:
        """
        A filter that raises makes C{broadcast} raise, and nothing is sent.
        """
        server = SSEServer(channels=["a"])
        connection = server.connect(query=b"?channels=a")
        mark = len(connection.transport.value())

        def broken(session: SSESession) -> bool:
            raise KeyError("broken filter")

        channel = server.endpoint.channels["a"]
        self.assertRaises(KeyError, channel.broadcast, "x", filter=broken)
        server.turn()
        self.assertEqual(connection.written_since(mark), b"")

    def test_channels_share_one_write(self) -> None:
        """
        Events of several channels in one turn are one write per session,
        in the order they were sent.
        """
        server = SSEServer(channels=["a", "b"])
        both = server.connect(query=b"?channels=a,b")
        only_b = server.connect(query=b"?channels=b")
        writes = (both.transport.writes, only_b.transport.writes)
        channels = server.endpoint.channels
        channels["a"].broadcast(1)
        channels["b"].broadcast(2)
        server.endpoint.send(3)
        channels["a"].broadcast(4)
        server.turn()
        self.assertEqual(both.transport.writes - writes[0], 1)
        self.assertEqual(only_b.transport.writes - writes[1], 1)
        self.assertEqual(
            _datas(both), [("a", "1"), ("b", "2"), ("message", "3"), ("a", "4")]
        )
        self.assertEqual(_datas(only_b), [("b", "2"), ("message", "3")])

    def test_joined_mid_turn(self) -> None:
        """
        A session that opens after an event was sent in the same turn does
        not get it, but gets the events sent after it opened.
        """
        server = SSEServer(channels=["a"])
        early = server.connect(query=b"?channels=a")
        channel = server.endpoint.channels["a"]
        channel.broadcast("before")
        late = server.connect(query=b"?channels=a")
        channel.broadcast("after")
        server.turn()
        self.assertEqual(_datas(early), [("a", "before"), ("a", "after")])
        self.assertEqual(_datas(late), [("a", "after")])


class HistoryTests(SynchronousTestCase):
    """
    Channels with history give their events ids, and replay what a
    reconnecting client missed before live events.
    """

    def publish(
        self, server: SSEServer, channel: str, *items: str
    ) -> list[ServerSentEvent]:
        """
        Publish C{items} on C{channel}, one turn each, and return the
        events as a member saw them (with their ids).
        """
        watcher = server.connect(query=b"?channels=" + channel.encode())
        for item in items:
            server.endpoint.channels[channel].broadcast(item)
            server.turn()
        events = watcher.events()[1:]
        watcher.disconnect()
        return events

    def test_ids(self) -> None:
        """
        Events of a channel with history carry distinct ids; a channel
        without history gives none.
        """
        server = SSEServer(channels=[ChannelSpec("kept", history=5), "plain"])
        connection = server.connect(query=b"?channels=kept,plain")
        server.endpoint.channels["kept"].broadcast("k1")
        server.endpoint.channels["plain"].broadcast("p")
        server.endpoint.channels["kept"].broadcast("k2")
        server.turn()
        raw = connection.response().chunks[-1].split(b"\n\n")
        self.assertTrue(raw[0].startswith(b"id: "))
        self.assertFalse(raw[1].startswith(b"id: "))
        self.assertIn(b"event: plain", raw[1])
        events = connection.events()[1:]
        self.assertNotEqual(events[0].last_event_id, "")
        self.assertNotEqual(events[2].last_event_id, events[0].last_event_id)
        self.assertEqual(events[1].last_event_id, events[0].last_event_id)

    def test_replay_header(self) -> None:
        """
        A client that sends C{Last-Event-ID} gets the kept events after it,
        with their names and ids, right after C{setId} and before live
        events, with no C{reset}.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1", "e2", "e3")
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        session = server.session(back)
        self.assertEqual(session.last_event_id, seen[0].last_event_id)
        self.assertEqual(back.events()[1:], seen[1:])
        self.assertEqual(len(back.response().chunks), 1)
        server.endpoint.channels["a"].broadcast("e4")
        server.turn()
        self.assertEqual([e.data for e in back.events()[1:]], ["e2", "e3", "e4"])

    def test_replay_query(self) -> None:
        """
        C{lastEventId} in the query works as the header does.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1", "e2")
        back = server.connect(
            query=b"?channels=a&lastEventId=" + seen[0].last_event_id.encode()
        )
        self.assertEqual(back.events()[1:], seen[1:])

    def test_up_to_date(self) -> None:
        """
        A client that saw the last event gets nothing replayed and no
        C{reset}.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1", "e2")
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[-1].last_event_id.encode())],
        )
        self.assertEqual(back.events()[1:], [])

    def assertReset(
        self, connection: StreamConnection, last_event_id: str
    ) -> list[ServerSentEvent]:
        """
        The first event after C{setId} is a C{reset} that quotes
        C{last_event_id}; return the events after it.
        """
        events = connection.events()[1:]
        self.assertEqual(events[0].type, "reset")
        self.assertEqual(
            json.loads(events[0].data),
            {"route": "reset", "args": {"lastEventId": last_event_id}},
        )
        return events[1:]

    def test_too_old(self) -> None:
        """
        When history no longer holds everything after the id, a C{reset}
        event comes first, then what is still kept.
        """
        server = SSEServer(channels=[ChannelSpec("a", history=2)])
        seen = self.publish(server, "a", "e1", "e2", "e3", "e4", "e5")
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        self.assertEqual(self.assertReset(back, seen[0].last_event_id), seen[3:])

    def test_too_old_by_age(self) -> None:
        """
        Events older than the history's age are gone too.
        """
        server = SSEServer(channels=[ChannelSpec("a", history=HistoryPolicy(10, 60))])
        seen = self.publish(server, "a", "e1", "e2")
        server.clock.advance(61)
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        self.assertEqual(self.assertReset(back, seen[0].last_event_id), [])

    def test_malformed_and_unknown(self) -> None:
        """
        A malformed id, an id of another epoch, and an id from the future
        are "too old": a C{reset}, then everything kept.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1", "e2")
        epoch, _, _ = seen[0].last_event_id.rpartition(".")
        for bad in ("garbage", "", "zzzz.1", epoch + ".999", epoch + ".-1", "\xe9"):
            with self.subTest(last_event_id=bad):
                back = server.connect(
                    query=b"?channels=a",
                    headers=[(b"Last-Event-ID", bad.encode())],
                )
                self.assertEqual(back.response().status, 200)
                self.assertEqual(self.assertReset(back, bad), seen)

    def test_across_channels(self) -> None:
        """
        One id locates the client in every channel: a client of two
        channels gets what it missed of both, in the order it was sent, and
        a client of one channel with an id seen on another gets only what
        came later on its own.
        """
        server = SSEServer(channels=["a", "b"], history=10)
        watcher = server.connect(query=b"?channels=a,b")
        channels = server.endpoint.channels
        for channel, item in (("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")):
            channels[channel].broadcast(item)
            server.turn()
        seen = watcher.events()[1:]
        both = server.connect(
            query=b"?channels=a,b",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        self.assertEqual(both.events()[1:], seen[1:])
        only_a = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[1].last_event_id.encode())],
        )
        self.assertEqual(only_a.events()[1:], [seen[2]])

    def test_replay_not_duplicated(self) -> None:
        """
        An event published earlier in the turn in which a client reconnects
        reaches it once, by replay, not again live.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1")
        member = server.connect(query=b"?channels=a")
        server.endpoint.channels["a"].broadcast("e2")
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        server.turn()
        self.assertEqual([e.data for e in back.events()[1:]], ["e2"])
        self.assertEqual([e.data for e in member.events()[1:]], ["e2"])

    def test_filtered_not_replayed(self) -> None:
        """
        A filtered event is not kept, so it is not replayed.
        """
        server = SSEServer(channels=["a"], history=10)
        seen = self.publish(server, "a", "e1")
        member = server.connect(query=b"?channels=a")
        server.endpoint.channels["a"].broadcast("private", filter=lambda s: True)
        server.endpoint.channels["a"].broadcast("e2")
        server.turn()
        self.assertEqual([e.data for e in member.events()[1:]], ["private", "e2"])
        back = server.connect(
            query=b"?channels=a",
            headers=[(b"Last-Event-ID", seen[0].last_event_id.encode())],
        )
        self.assertEqual([e.data for e in back.events()[1:]], ["e2"])


class _SlowReplayBroker(InMemoryBroker):
    """
    An in-memory broker that answers replays later, as a networked one
    does.
    """

    def __init__(self, clock: MemoryReactorClock) -> None:
        super().__init__(clock)
        self.pending: list[tuple[Deferred[Replay], Replay]] = []

    def replay(
        self,
        key: str,
        channels: Sequence[tuple[str, HistoryPolicy]],
        last_event_id: str | None,
    ) -> Deferred[Replay]:
        answer: Deferred[Replay] = Deferred()
        self.pending.append((answer, self.replay_now(key, channels, last_event_id)))
        return answer


class SlowReplayTests(SynchronousTestCase):
    """
    A replay that arrives later still comes before live events.
    """

    def setUp(self) -> None:
        self.server = SSEServer(
            broker=_SlowReplayBroker, channels=["a"], history=10, keepalive=0
        )
        broker = self.server.backend.broker
        assert isinstance(broker, _SlowReplayBroker)
        self.broker = broker
        watcher = self.server.connect(query=b"?channels=a")
        for item in ("e1", "e2"):
            self.server.endpoint.channels["a"].broadcast(item)
            self.server.turn()
        self.seen = watcher.events()[1:]
        watcher.disconnect()

    def reconnect(self, last_event_id: str) -> StreamConnection:
        return self.server.connect(
            query=b"?channels=a", headers=[(b"Last-Event-ID", last_event_id.encode())]
        )

    def test_live_events_wait(self) -> None:
        """
        Live events sent while the replay is awaited are written after it.
        """
        back = self.reconnect(self.seen[0].last_event_id)
        self.server.endpoint.channels["a"].broadcast("e3")
        self.server.turn()
        self.assertEqual(back.events()[1:], [])
        answer, result = self.broker.pending.pop()
        answer.callback(result)
        self.server.turn()
        # e3 came while the replay was awaited: it is read from history by
        # a second question, not held in a copy meanwhile.
        while self.broker.pending:
            answer, result = self.broker.pending.pop()
            answer.callback(result)
            self.server.turn()
        self.assertEqual([e.data for e in back.events()[1:]], ["e2", "e3"])

    def test_empty_replay(self) -> None:
        """
        A replay with nothing in it writes nothing, and above all not an
        empty chunk, which would end the response.
        """
        back = self.reconnect(self.seen[-1].last_event_id)
        mark = len(back.transport.value())
        answer, result = self.broker.pending.pop()
        answer.callback(result)
        self.server.turn()
        self.assertEqual(back.written_since(mark), b"")
        self.server.endpoint.channels["a"].broadcast("e3")
        self.server.turn()
        (live,) = back.events()[1:]
        self.assertEqual(live.data, "e3")
        self.assertEqual(
            back.written_since(mark), chunk(encode_event("e3", "a", live.last_event_id))
        )
        self.assertNotIn(LAST_CHUNK, back.transport.value())

    def test_failed_replay(self) -> None:
        """
        A replay that fails is logged and tells the client to C{reset}.
        """
        back = self.reconnect(self.seen[0].last_event_id)
        self.server.endpoint.channels["a"].broadcast("e3")
        answer, _ = self.broker.pending.pop()
        answer.errback(RuntimeError("network down"))
        self.server.turn()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        events = back.events()[1:]
        self.assertEqual([e.type for e in events], ["reset", "a"])
        self.assertEqual(events[1].data, "e3")
