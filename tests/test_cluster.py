"""
A real cluster: its own C{redis-server}, three C{twistd -n graphsse --redis}
nodes and nginx in front of them with C{examples/cluster/nginx.conf} (round
robin, no sticky sessions), all on free ports of 127.0.0.1.

Clients reach the nodes through nginx only, so every stream and every
C{POST} lands on whichever node nginx picks.  The nodes load the test app
C{tests.apps.cluster_app}, whose routes say which process ran them.

Without nginx these tests fail (never skip), naming the install command.
"""

from __future__ import annotations

import signal
from typing import Any

from treq.client import HTTPClient
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import Limits, SSEBackend

from ._cluster import ClusterClient, Node, clock, free_port, poll, start_nginx
from ._rawclient import open_stream
from ._redis import RedisServer

#: Streams opened through nginx.
CLIENTS = 9

#: Events each channel keeps for replay: more than any test sends.
HISTORY = 1000


def _numbers(client: ClusterClient, key: str) -> list[Any]:
    """
    The C{key} values of the dict messages C{client} received that have it.
    """
    return [m[key] for m in client.received(lambda m: isinstance(m, dict) and key in m)]


class ClusterTests(TestCase):
    """
    Three nodes behind nginx.
    """

    timeout = 120

    async def _cluster(self) -> None:
        """
        Start Redis, the nodes and nginx; open L{CLIENTS} streams through
        nginx and find the node each landed on.
        """
        from twisted.internet import reactor

        stream_pool = HTTPConnectionPool(reactor, False)
        post_pool = HTTPConnectionPool(reactor, True)
        self.addCleanup(post_pool.closeCachedConnections)
        self.streams = HTTPClient(Agent(reactor, pool=stream_pool))
        self.posts = HTTPClient(Agent(reactor, pool=post_pool))
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        self.nodes = [
            Node(
                self,
                f"node-{index}",
                free_port(),
                self.redis.url,
                "--history",
                str(HISTORY),
                "--retry",
                "100",
                "--keepalive",
                "2",
            )
            for index in range(3)
        ]
        for node in self.nodes:
            await node.listening(node.port)
        # A node serves before its link to Redis is up: wait for the links.
        for node in self.nodes:
            await self._linked(node)
        self.pids = {node.pid for node in self.nodes}
        self.nginx_port = free_port()
        self.nginx = start_nginx(self, self.nginx_port, [n.port for n in self.nodes])
        await self.nginx.listening(self.nginx_port)
        self.url = f"http://127.0.0.1:{self.nginx_port}/sse"

        self.clients: list[ClusterClient] = []
        self.addCleanup(self._close_clients)
        self.owners: dict[str, int] = {}
        while len(self.clients) < CLIENTS or set(self.owners.values()) != self.pids:
            self.assertLess(len(self.clients), 3 * CLIENTS, f"spread: {self.owners}")
            client = ClusterClient(
                self.url, self.streams, self.posts, f"c{len(self.clients)}"
            )
            self.clients.append(client)
            await client.open()
            self.owners[client.name] = await self._owner(client)

    async def _linked(self, node: Node) -> None:
        """
        Wait until C{node}'s broker is linked to Redis (asking the node
        itself, not through nginx).
        """
        direct = ClusterClient(node.url, self.streams, self.posts, node.name)
        deadline = clock().seconds() + 20
        while True:
            status, body = await direct.call("linked")
            if status == 200 and body["args"] is True:
                return
            self.assertLess(clock().seconds(), deadline, f"{node.name}: no link")
            await deferLater(clock(), 0.05, lambda: None)

    async def _close_clients(self) -> None:
        for client in self.clients:
            await client.close()

    async def _owner(self, client: ClusterClient) -> int:
        """
        The PID of the node holding C{client}'s session: a C{POST} naming it
        is forwarded there from whichever node nginx picked.
        """
        status, body = await client.call("pid", session=True)
        self.assertEqual(status, 200, body)
        return int(body["args"])

    def _state(self) -> str:
        lines = [
            f"{c.name} on {self.owners.get(c.name)}: connections={c.connections}"
            f" k={_numbers(c, 'k')}"
            for c in self.clients
        ]
        for node in self.nodes:
            lines.append(f"--- {node.name} (pid {node.pid})\n{node.text()[-3000:]}")
        return "\n".join(lines)

    async def test_every_request_works_on_any_node(self) -> None:
        """
        Streams spread over the three nodes, and so do C{POST}s; broadcasts,
        targeted pushes, calls both ways and subscriptions work whichever
        node each request lands on.
        """
        await self._cluster()
        clients = self.clients
        anyone = clients[0]

        # POSTs land on every node.
        served = set()
        for _ in range(6):
            status, body = await anyone.call("pid")
            self.assertEqual(status, 200)
            served.add(body["args"])
        self.assertEqual(served, self.pids)

        # Broadcasts, sent from whichever node: every stream gets all of
        # them, in order, each with an event id.
        senders = set()
        for n in range(3):
            status, body = await anyone.call("broadcast", {"b": n})
            self.assertEqual(status, 200, body)
            senders.add(body["args"]["pid"])
        self.assertGreater(len(senders), 1)
        await poll(
            lambda: all(len(_numbers(c, "b")) == 3 for c in clients),
            "every broadcast everywhere",
            10,
            detail=self._state,
        )
        for client in clients:
            self.assertEqual(_numbers(client, "b"), [0, 1, 2])
            ids = [e.last_event_id for e in client.events if '"b"' in e.data]
            self.assertEqual(len(set(ids)), 3, ids)

        # Targeted pushes: each stream gets its own, and only its own.
        crossed = 0
        for index, client in enumerate(clients):
            pusher = clients[(index + 1) % len(clients)]
            status, body = await pusher.call(
                "push", client.session_id, {"to": client.name}
            )
            self.assertEqual(status, 200, body)
            self.assertEqual(body["args"]["value"], 1)
            crossed += body["args"]["pid"] != self.owners[client.name]
        self.assertGreater(crossed, 0)
        await poll(
            lambda: all(_numbers(c, "to") == [c.name] for c in clients),
            "every push",
            10,
            detail=self._state,
        )

        # Server to client: a node runs a client's route and gets the answer,
        # which the client POSTs to whichever node nginx picks.
        # (Three calls each: nginx's round robin moves on with every
        # request, so they are made from different nodes.)
        askers = set()
        for index, client in enumerate(clients):
            for _ in range(3):
                status, body = await anyone.call(
                    "ask", client.session_id, "double", [index]
                )
                self.assertEqual(status, 200, body)
                self.assertEqual(body["args"]["value"], 2 * index)
                askers.add((body["args"]["pid"], self.owners[client.name]))
        self.assertEqual({asker for asker, _ in askers}, self.pids)
        self.assertTrue(any(asker != owner for asker, owner in askers), askers)
        for client in clients:
            self.assertTrue(client.answered)
            self.assertTrue(all(s in (200, 204) for _, s in client.answered))

        # Client to server, as a request: the answer comes in the body and
        # on the stream.
        for index, client in enumerate(clients):
            request = {"route": "counter", "args": [index]}
            cid = f"cb-{client.name}"
            status, body = await client.post(
                {"route": "runRequest", "args": [request, "/sse", cid, None]},
                client.session_id,
            )
            self.assertEqual((status, body), (200, {"args": index, "callbackId": cid}))
        await poll(
            lambda: all(
                c.received(
                    lambda m, c=c: (
                        m == {"args": clients.index(c), "callbackId": f"cb-{c.name}"}
                    )
                )
                for c in clients
            ),
            "every request's answer on its stream",
            10,
            detail=self._state,
        )

        # Subscriptions to a server route: one client per node, in turn.
        firsts = {}
        for client in clients:
            firsts.setdefault(self.owners[client.name], client)
        for client in firsts.values():
            sid = client.session_id
            status, body = await client.post(
                {
                    "route": "subscribeSSE",
                    "args": ["counter", "/sse", None, None, None, sid],
                },
                None,
            )
            self.assertEqual(status, 200, body)
            sub = body["args"]
            for value in ("one", "two"):
                status, _ = await client.call(
                    "counter", f"{client.name}-{value}", session=True
                )
                self.assertEqual(status, 200)
            expected = [
                {"args": f"{client.name}-one", "callbackId": "counter"},
                {"args": f"{client.name}-two", "callbackId": "counter"},
            ]
            await poll(
                lambda c=client, e=expected: c.received(lambda m: m in e) == e,
                "subscription updates",
                10,
                detail=self._state,
            )
            status, body = await client.post(
                {"route": "unsubscribe", "args": ["counter", sub]}, sid
            )
            self.assertEqual((status, body), (200, {"args": True}))
            status, _ = await client.call(
                "counter", f"{client.name}-after", session=True
            )
            self.assertEqual(status, 200)
            status, _ = await anyone.call("push", sid, {"marker": client.name})
            await poll(lambda c=client: bool(_numbers(c, "marker")), "the marker", 10)
            self.assertEqual(
                client.received(
                    lambda m, c=client: (
                        isinstance(m, dict) and m.get("args") == f"{c.name}-after"
                    )
                ),
                [],
            )

        # The server subscribes to a client's route; the client's updates
        # reach it whichever node they are POSTed to.
        for client in firsts.values():
            sid = client.session_id
            status, body = await client.call("watch", "ticks", session=True)
            self.assertEqual(status, 200, body)
            self.assertIn("ticks", client.subscriptions)
            for tick in range(3):
                status, _ = await client.post(
                    {"args": {"tick": tick}, "callbackId": "ticks"}, sid
                )
                self.assertIn(status, (200, 204))
            status, body = await client.call("updates", session=True)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["args"], [{"tick": 0}, {"tick": 1}, {"tick": 2}])

        for client in clients:
            self.assertEqual(client.connections, 1, client.name)

    async def test_node_killed_while_events_flow(self) -> None:
        """
        One node is killed with C{SIGKILL} while broadcasts flow: every
        client of that node reconnects through nginx with C{Last-Event-ID},
        lands on another node, and ends with every event, none twice and in
        order; the other nodes' clients never notice.
        """
        await self._cluster()
        victim_node = next(n for n in self.nodes if n.pid == self.owners["c0"])
        victims = [c for c in self.clients if self.owners[c.name] == victim_node.pid]
        others = [c for c in self.clients if c not in victims]
        self.assertTrue(victims and others)

        acknowledged: list[int] = []
        uncertain: list[int] = []
        total, kill_at = 80, 25

        async def send(k: int) -> None:
            try:
                status, _ = await self.clients[-1].post(
                    {"route": "broadcast", "args": [{"k": k}]}, None
                )
            except Exception:
                uncertain.append(k)
                return
            (acknowledged if status == 200 else uncertain).append(k)

        for k in range(total):
            if k == kill_at:
                victim_node.kill()
            await send(k)
            await deferLater(clock(), 0.02, lambda: None)

        def caught_up() -> bool:
            return all(set(acknowledged) <= set(_numbers(c, "k")) for c in self.clients)

        await poll(caught_up, "every client caught up", 30, detail=self._state)
        # Anything still on its way arrives now.
        await deferLater(clock(), 0.5, lambda: None)

        self.assertGreaterEqual(len(acknowledged), total - 5, uncertain)
        for client in self.clients:
            got = _numbers(client, "k")
            self.assertEqual(len(got), len(set(got)), f"{client.name} twice: {got}")
            self.assertEqual(got, sorted(got), f"{client.name} out of order")
            self.assertLessEqual(set(got), set(acknowledged) | set(uncertain))
            self.assertLessEqual(set(acknowledged), set(got))
            ids = [e.last_event_id for e in client.events if '"k"' in e.data]
            self.assertEqual(len(ids), len(set(ids)), ids)

        survivors = {n.pid for n in self.nodes} - {victim_node.pid}
        for client in victims:
            self.assertGreaterEqual(client.connections, 2, client.name)
            owner = await self._owner(client)
            self.assertIn(owner, survivors)
        for client in others:
            self.assertEqual(client.connections, 1, client.name)
        self.assertIsNotNone(victim_node.process.poll())
        self.assertEqual(victim_node.process.returncode, -signal.SIGKILL)


class ProxyAddressTests(TestCase):
    """
    A node behind the example's nginx counts clients by the address nginx
    forwards, when it trusts nginx.
    """

    timeout = 60

    async def test_sessions_per_forwarded_address(self) -> None:
        """
        With C{max_sessions_per_address=1} and nginx's address trusted,
        clients on two loopback addresses each open a stream through nginx;
        the second stream from one of them is refused with 503.
        """
        from twisted.internet import reactor

        backend = SSEBackend(reactor)
        endpoint = backend.setup_sse(
            "/sse",
            keepalive=0,
            limits=Limits(max_sessions_per_address=1, trusted_proxies=["127.0.0.1"]),
        )
        self.addCleanup(endpoint.terminate)
        root = Resource()
        root.putChild(b"sse", endpoint.resource)
        node = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(node.stopListening)
        port = free_port()
        nginx = start_nginx(self, port, [node.getHost().port])
        await nginx.listening(port)

        first = await open_stream(reactor, port, source="127.0.0.2")
        second = await open_stream(reactor, port, source="127.0.0.3")
        self.assertEqual(
            (endpoint.sessions_from("127.0.0.2"), endpoint.sessions_from("127.0.0.3")),
            (1, 1),
        )
        with self.assertRaisesRegex(Exception, "status 503"):
            await open_stream(reactor, port, source="127.0.0.2")
        for stream in (first, second):
            assert stream.transport is not None
            stream.transport.loseConnection()
            await stream.closed
