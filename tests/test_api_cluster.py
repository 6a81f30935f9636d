"""
The server API (PROTOCOL.md section 4) across nodes: two real
C{twistd -n graphsse --redis} processes, A and B, tied together by their own
C{redis-server}, all on free ports of 127.0.0.1.

Each test holds streams (or a L{GraphSSEClient}) on node A and uses the API
of node B, so that every answer has to cross Redis: a publish on B reaches
A's stream with the id B answered; a call on B runs the route of a client
whose stream A holds and answers its result (its error as C{502}); a call
for a session no node holds is C{404 no_session} at once, not after the
request timeout; a disconnect on B ends A's streams, by session or by
subject; B's history lists what A published.

Without redis-server these tests fail (never skip), naming the install
command.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import treq
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from txgraphsse import ServerSentEvent
from txgraphsse.client import GraphSSEClient

from ._cluster import Node, clock, free_port, poll, reactor
from ._redis import RedisServer
from .test_backchannel import LiveStream, Reply

#: The nodes' API key (C{--api-key}).
KEY = "cluster-api-key-0123456789"

#: The nodes' JWT secret (C{--jwt-secret}): every stream needs a token.
SECRET = "cluster-api-secret-0123456789abcdef0123"

#: How long a test waits for one expected thing before it fails.
WAIT = 10.0

#: The nodes' request timeout (C{--request-timeout}): far longer than
#: anything here waits for, so that an answer that only a timeout gives
#: shows as a failure.
PRESENCE_TTL = 2.0
REQUEST_TIMEOUT = 30

#: The Redis hash of which node holds which session of C{/sse}.
DIRECTORY = "graphsse:/sse:where"

#: How soon a call for a session that no node holds must be refused.
NO_SESSION_BOUND = 5.0


def token(**claims: Any) -> str:
    """
    A JWT signed with L{SECRET}, valid for an hour.
    """
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


#: A token that may do everything with the API.
ADMIN = token(sub="ops", graphsse={"admin": True})


def of_type(stream: LiveStream, event_type: str) -> list[ServerSentEvent]:
    """
    C{stream}'s events named C{event_type}.
    """
    return [e for e in stream.events if e.type == event_type]


class APIClusterTests(TestCase):
    """
    Two nodes, A and B, with the API (C{--api-key}, C{--jwt-secret}) and
    the channels C{news} and C{chat} (history on), and one Redis.
    """

    timeout = 120

    async def _cluster(self) -> None:
        """
        Start Redis and the two nodes; wait until each node's API can
        publish (its link to Redis is up, so its bus is subscribed).
        """
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.pool = HTTPConnectionPool(reactor(), True)
        self.stream_pool = HTTPConnectionPool(reactor(), False)
        self.streams: list[LiveStream] = []
        argv = [
            "--api-key",
            KEY,
            "--jwt-secret",
            SECRET,
            "--channels",
            "news,chat",
            "--history",
            "100",
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            "--retry",
            "100",
            "--keepalive",
            "2",
            "--presence",
            "chat",
            "--presence-ttl",
            str(PRESENCE_TTL),
        ]
        self.a = Node(self, "node-a", free_port(), self.redis.url, *argv)
        self.b = Node(self, "node-b", free_port(), self.redis.url, *argv)
        # Registered after the nodes, so it runs before their own stops.
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))
        for node in (self.a, self.b):
            await node.listening(node.port)
        for node in (self.a, self.b):
            await self._linked(node)

    async def _linked(self, node: Node) -> None:
        """
        Wait until C{node}'s API publishes: C{503 unavailable} until its
        link to Redis is up.
        """
        deadline = clock().seconds() + 20
        while True:
            reply = await self.api(node, "publish", {"channel": "chat", "data": "up"})
            if reply.status == 200:
                return
            self.assertEqual(reply.status, 503, reply.body)
            self.assertLess(
                clock().seconds(), deadline, f"{node.name}: no link\n{node.text()}"
            )
            await deferLater(clock(), 0.1, lambda: None)

    async def _clean_up(self) -> None:
        """
        Stop the nodes (which ends their streams), then wait until every
        stream's connection is closed, and close the pool's.
        """
        for node in (self.a, self.b):
            node.stop()
        await poll(
            lambda: all(s.done.called for s in self.streams), "streams to end", WAIT
        )
        await self.pool.closeCachedConnections()

    # Requests

    async def api(
        self,
        node: Node,
        name: str,
        body: Any = None,
        *,
        auth: str = f"apikey {KEY}",
    ) -> Reply:
        """
        Call C{node}'s API C{name}: a C{POST} of C{body}, or a C{GET}
        without one.
        """
        headers: dict[bytes | str, bytes | str] = {"Authorization": auth}
        method, data = "GET", None
        if body is not None:
            method, data = "POST", json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        response = await treq.request(
            method,
            f"http://127.0.0.1:{node.port}/api/{name}",
            data=data,
            headers=headers,
            pool=self.pool,
        ).addTimeout(WAIT + REQUEST_TIMEOUT, clock())
        return Reply(response.code, response.headers, await treq.content(response))

    async def open_stream(
        self, node: Node, subject: str, channels: tuple[str, ...] = ("news",)
    ) -> LiveStream:
        """
        Open a stream on C{node} with a token of C{subject} that may join
        C{channels}, joining them; fire once it has its session id.
        """
        query = f"?channels={','.join(channels)}" if channels else ""
        bearer = token(sub=subject, subscribe=list(channels))
        headers: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {bearer}"}
        response = await treq.get(
            f"{node.url}{query}",
            headers=headers,
            unbuffered=True,
            pool=self.stream_pool,
        ).addTimeout(WAIT, clock())
        self.assertEqual(response.code, 200, node.name)
        stream = LiveStream(response)
        stream.done.addErrback(lambda _: None)  # a dropped end is an end too
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        await self.registered(stream.session_id)
        return stream

    async def client_on(self, node: Node) -> tuple[GraphSSEClient, str]:
        """
        A Python client with routes, its stream on C{node}; and its session
        id.
        """
        client = GraphSSEClient(
            reactor(), headers={"Authorization": f"Bearer {token(sub='py')}"}
        )
        self.addCleanup(client.terminate)

        def broken() -> None:
            raise ValueError("the client's own failure")

        client.add_route("double", lambda x: 2 * x)
        client.add_route("broken", broken)
        connection = await client.connect(node.url).addTimeout(WAIT, clock())
        assert connection.session_id is not None
        await self.registered(connection.session_id)
        return client, connection.session_id

    async def registered(self, session_id: str) -> None:
        """
        Wait (at most L{WAIT} seconds) until the session directory in Redis
        names the node holding C{session_id}.

        A node registers a session as it sends the session its C{setId},
        without waiting for Redis, so a client can know its id (and a
        backend can ask another node for it) before Redis does; and then
        the other node finds no one holding it.  The tests here are about
        reaching a session once it is known, so they wait for that first.
        """
        await poll(
            lambda: self.redis.command("HGET", DIRECTORY, session_id) is not None,
            f"session {session_id} in the directory",
            WAIT,
        )

    async def until_ended(self, stream: LiveStream, what: str) -> None:
        """
        Wait (at most L{WAIT} seconds) until C{stream}'s response has ended.
        """
        await poll(lambda: stream.done.called, what, WAIT)

    async def assertLive(self, streams: list[LiveStream], publisher: Node) -> None:
        """
        Each of C{streams} is still open: a publish on C{publisher} after
        the others' ends reaches every one of them.
        """
        reply = await self.api(
            publisher, "publish", {"channel": "news", "data": {"alive": True}}
        )
        self.assertEqual(reply.status, 200, reply.body)
        await poll(
            lambda: all({"alive": True} in s.messages() for s in streams),
            "the live streams to get a publish",
            WAIT,
        )
        for stream in streams:
            self.assertFalse(stream.done.called)

    def assertError(self, reply: Reply, status: int, code: str) -> dict[str, Any]:
        """
        C{reply} is the JSON error C{status} with C{code}; its error object.
        """
        self.assertEqual(reply.status, status, reply.body)
        body = reply.json()
        self.assertEqual(list(body), ["error"], body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertIsInstance(body["error"]["message"], str)
        error: dict[str, Any] = body["error"]
        return error

    # Publish and history

    async def test_publish_on_b_reaches_a(self) -> None:
        """
        A publish on B reaches a stream on A once, named after the channel,
        with B's answered id; so does each event of a publish on several
        channels, each with its own id.
        """
        await self._cluster()
        stream = await self.open_stream(self.a, "ada", ("news", "chat"))
        reply = await self.api(self.b, "publish", {"channel": "news", "data": {"n": 1}})
        self.assertEqual(reply.status, 200, reply.body)
        event_id = reply.json()["id"]
        self.assertIsInstance(event_id, str)
        await poll(lambda: bool(of_type(stream, "news")), "the event on A", WAIT)

        reply = await self.api(
            self.b, "publish", {"channels": ["news", "chat"], "data": "both"}
        )
        self.assertEqual(reply.status, 200, reply.body)
        ids = reply.json()["ids"]
        self.assertEqual(sorted(ids), ["chat", "news"])
        await poll(
            lambda: [e.data for e in stream.events].count("both") == 2,
            "both events on A",
            WAIT,
        )
        first, second = of_type(stream, "news")
        self.assertEqual((first.data, first.last_event_id), ('{"n":1}', event_id))
        self.assertEqual((second.data, second.last_event_id), ("both", ids["news"]))
        [chat] = [e for e in of_type(stream, "chat") if e.data == "both"]
        self.assertEqual(chat.last_event_id, ids["chat"])
        self.assertNotEqual(ids["chat"], ids["news"])

    async def test_history_on_b_lists_what_a_published(self) -> None:
        """
        B's history of a channel lists the events published on A, oldest
        first with A's ids; after one of them, the ones after it.
        """
        await self._cluster()
        ids = []
        for n in range(3):
            reply = await self.api(
                self.a, "publish", {"channel": "news", "data": {"n": n}}
            )
            self.assertEqual(reply.status, 200, reply.body)
            ids.append(reply.json()["id"])
        reply = await self.api(self.b, "history?channel=news")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(
            reply.json(),
            {
                "events": [
                    {
                        "id": ids[n],
                        "event": "news",
                        "data": json.dumps({"n": n}, separators=(",", ":")),
                    }
                    for n in range(3)
                ]
            },
        )
        reply = await self.api(self.b, f"history?channel=news&since={ids[0]}")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual([e["id"] for e in reply.json()["events"]], ids[1:])
        self.assertNotIn("reset", reply.json())

    # Calls

    async def test_call_on_b_reaches_a_client_on_a(self) -> None:
        """
        A call on B runs the route of a Python client whose stream A holds
        (its reply goes to A) and answers the result; the client's own
        error is C{502} with its code.
        """
        await self._cluster()
        _, sid = await self.client_on(self.a)
        reply = await self.api(
            self.b, "call", {"session": sid, "route": "double", "args": [21]}
        )
        self.assertEqual((reply.status, reply.json()), (200, {"result": 42}))
        reply = await self.api(
            self.b, "call", {"session": sid, "route": "double", "args": ["ab"]}
        )
        self.assertEqual((reply.status, reply.json()), (200, {"result": "abab"}))
        self.assertError(
            await self.api(self.b, "call", {"session": sid, "route": "broken"}),
            502,
            "route_failed",
        )
        self.assertError(
            await self.api(self.b, "call", {"session": sid, "route": "missing"}),
            502,
            "no_route",
        )
        # The client logs its route's failure, in this process.
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_call_for_no_session_anywhere(self) -> None:
        """
        A call for a session that no node holds is C{404 no_session} on
        either node, within seconds (not after the request timeout); so is
        a call for the session of a client that has gone.
        """
        await self._cluster()
        for node in (self.a, self.b):
            started = clock().seconds()
            reply = await self.api(
                node, "call", {"session": "x" * 22, "route": "double", "args": [1]}
            )
            self.assertError(reply, 404, "no_session")
            self.assertLess(clock().seconds() - started, NO_SESSION_BOUND, node.name)

        client, sid = await self.client_on(self.a)
        reply = await self.api(
            self.b, "call", {"session": sid, "route": "double", "args": [1]}
        )
        self.assertEqual((reply.status, reply.json()), (200, {"result": 2}))
        await client.terminate()
        answers: list[tuple[int, Any]] = []

        async def gone() -> bool:
            started = clock().seconds()
            reply = await self.api(
                self.b,
                "call",
                {"session": sid, "route": "double", "args": [1], "timeout": 2},
            )
            answers.append((reply.status, reply.json()))
            self.assertLess(clock().seconds() - started, NO_SESSION_BOUND)
            return reply.status == 404

        deadline = clock().seconds() + WAIT
        while not await gone():
            self.assertLess(clock().seconds(), deadline, answers)
        self.assertEqual(answers[-1][1]["error"]["code"], "no_session")

    # Disconnect

    async def test_disconnect_by_session_on_b(self) -> None:
        """
        A disconnect on B of a session A holds ends that stream with a
        C{disconnected} event; A's other stream carries on; the session,
        once gone, counts for nothing.
        """
        await self._cluster()
        gone = await self.open_stream(self.a, "ada")
        kept = await self.open_stream(self.a, "ada")
        reply = await self.api(self.b, "disconnect", {"session": gone.session_id})
        self.assertEqual((reply.status, reply.json()), (200, {"disconnected": 1}))
        await self.until_ended(gone, "A's stream to end")
        self.assertEqual(gone.events[-1].type, "disconnected")
        self.assertEqual(
            json.loads(gone.events[-1].data), {"route": "disconnected", "args": None}
        )
        await self.assertLive([kept], self.b)
        reply = await self.api(self.b, "disconnect", {"session": gone.session_id})
        self.assertEqual((reply.status, reply.json()), (200, {"disconnected": 0}))

    async def test_disconnect_by_subject_on_b(self) -> None:
        """
        A disconnect by subject on B, asked with an admin's token, ends
        every stream of that subject, A's and B's, with a C{disconnected}
        event; another subject's streams carry on.
        """
        await self._cluster()
        on_a = [await self.open_stream(self.a, "ada") for _ in range(2)]
        on_b = await self.open_stream(self.b, "ada")
        bob = [
            await self.open_stream(self.a, "bob"),
            await self.open_stream(self.b, "bob"),
        ]
        reply = await self.api(
            self.b, "disconnect", {"subject": "ada"}, auth=f"Bearer {ADMIN}"
        )
        self.assertEqual(reply.status, 200, reply.body)
        # This node's, and the others' where they answered.
        self.assertIn(reply.json()["disconnected"], (1, 2, 3))
        for stream in [*on_a, on_b]:
            await self.until_ended(stream, "ada's streams to end")
            self.assertEqual(stream.events[-1].type, "disconnected")
        await self.assertLive(bob, self.b)

    async def test_presence_on_b_lists_a_and_a_killed_leaves(self) -> None:
        """
        C{/api/presence} on B lists the sessions of a presence channel that
        A holds, with their subjects, beside B's own; once A is killed
        (C{SIGKILL}: nothing tells Redis), they leave B's answer within the
        presence TTL, and B's own stay.
        """
        await self._cluster()
        on_a = [await self.open_stream(self.a, s, ("chat",)) for s in ("ada", "bob")]
        on_b = await self.open_stream(self.b, "cy", ("chat",))

        async def listed() -> dict[str, Any]:
            reply = await self.api(self.b, "presence?channel=chat")
            self.assertEqual(reply.status, 200, reply.body)
            return {e["id"]: e["subject"] for e in reply.json()["sessions"]}

        expected = {s.session_id: n for s, n in zip(on_a, ("ada", "bob"), strict=True)}
        expected[on_b.session_id] = "cy"
        deadline = clock().seconds() + WAIT
        while await listed() != expected:
            self.assertLess(clock().seconds(), deadline, await listed())
            await deferLater(clock(), 0.1, lambda: None)
        killed = clock().seconds()
        self.a.kill()
        while await listed() != {on_b.session_id: "cy"}:
            self.assertLess(clock().seconds() - killed, PRESENCE_TTL + 3)
            await deferLater(clock(), 0.1, lambda: None)

    async def test_call_at_once_after_the_stream_opens(self) -> None:
        """
        A backend told a session id calls it through B at once, before
        Redis may know which node holds it: the call still reaches it.
        """
        await self._cluster()
        for attempt in range(5):
            client = GraphSSEClient(
                reactor(), headers={"Authorization": f"Bearer {token(sub='py')}"}
            )
            self.addCleanup(client.terminate)
            client.add_route("double", lambda x: 2 * x)
            connection = await client.connect(self.a.url).addTimeout(WAIT, clock())
            reply = await self.api(
                self.b,
                "call",
                {
                    "session": connection.session_id,
                    "route": "double",
                    "args": [attempt],
                },
            )
            self.assertEqual(
                (reply.status, reply.json()), (200, {"result": 2 * attempt})
            )
