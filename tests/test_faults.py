"""
Faults under load on a real cluster (issue 17, point 4): an event a node
accepted reaches every subscriber on every node, or those subscribers get
C{reset}; never a silent gap.

Each run has its own C{redis-server}, three C{twistd -n graphsse --redis}
nodes A, B and C, and nginx in front of A and C, all on free ports of
127.0.0.1; readers stream through nginx, the publisher posts to B directly,
and both a node and Redis are killed with C{SIGKILL} while events flow.
What Redis holds at the end is read from it directly, to say what a reader
told C{reset} must have from there on.

Without nginx or redis-server these tests fail (never skip), naming the
install command.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ._cluster import ClusterClient, Node, Process, clock, free_port, start_nginx
from ._redis import RedisServer

#: Runs of the whole scenario, each on a cluster of its own.
RUNS = 10

#: Readers wanted on each of the two nodes behind nginx.
READERS_PER_NODE = 3

#: Events each channel keeps for replay: more than a run publishes.
HISTORY = 10_000

#: Seconds between two batches, and the broadcasts in each: 1,000 a second.
TICK = 0.01
BATCH = 10

#: When (seconds after publishing began) node A is killed, Redis is
#: killed, and Redis is started again, empty.
KILL_NODE_AT = 1.2
KILL_REDIS_AT = 2.4
REDIS_DOWN = 0.5

#: In every other run, Redis drops C's connections (C{CLIENT KILL}) this
#: long before it is killed, less than C waits before it reconnects: Redis
#: dies holding events that C never got, so that C truly misses events,
#: which its readers must be told of.  (Killed alone, Redis has written
#: every event to C's socket by the time it dies.)
CUT = 0.15

#: Publishing lasts this long at least, and goes on for this long at least
#: after every surviving node is linked to the new Redis.
PUBLISH_FOR = 3.6
AFTER_RELINK = 0.5


def _ranges(numbers: Iterable[int]) -> str:
    """
    C{numbers}, sorted, written as ranges: C{"1-3,7"}.
    """
    parts: list[list[int]] = []
    for n in sorted(set(numbers)):
        if parts and parts[-1][1] == n - 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts) or "none"


def _local_ports(pid: int) -> set[int]:
    """
    The local ports of process C{pid}'s TCP sockets (Linux C{/proc}).
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


class _Reader:
    """
    What one reader received: the C{k} of each broadcast with the epoch of
    its id, and the C{reset}s.
    """

    def __init__(self, client: ClusterClient, owner: str) -> None:
        self.client = client
        self.owner = owner

    def numbers(self) -> list[tuple[str, int, int]]:
        """
        C{(epoch, sequence number, k)} of every broadcast received, over
        every connection, from its id and data.
        """
        found = []
        for event in self.client.events:
            if '"k"' not in event.data:
                continue
            message = json.loads(event.data)
            if isinstance(message, dict) and "k" in message:
                epoch, _, seq = event.last_event_id.rpartition(".")
                found.append((epoch, int(seq), int(message["k"])))
        return found

    def ks(self) -> set[int]:
        return {k for _, _, k in self.numbers()}

    def epochs_around_reset(self) -> tuple[set[str], set[str]]:
        """
        The epochs of the broadcasts received before the first C{reset},
        and of those after it.
        """
        before: set[str] = set()
        after: set[str] = set()
        seen = before
        for event in self.client.events:
            if event.type == "reset":
                seen = after
            elif '"k"' in event.data:
                seen.add(event.last_event_id.rpartition(".")[0])
        return before, after

    def resets(self) -> list[str]:
        """
        The id of every C{reset} received.
        """
        return [e.last_event_id for e in self.client.events if e.type == "reset"]


class _Run:
    """
    One run: its cluster, its readers and what its publisher sent.

    @ivar accepted: every C{k} whose broadcast was answered with success.
    @ivar refused: every C{k} whose broadcast was answered with an error.
    @ivar uncertain: every C{k} whose POST got no answer (its outcome is
        unknown).
    @ivar relinked: the first C{k} sent after every surviving node was
        linked to the new Redis again.
    @ivar cut: the ids of C's connections that Redis dropped just before it
        was killed (none in a run that does not cut C off).
    @ivar over: whether the run is over (its cluster is being stopped).
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self.accepted: set[int] = set()
        self.refused: set[int] = set()
        self.uncertain: set[int] = set()
        self.sent = 0
        self.relinked: int | None = None
        self.readers: list[_Reader] = []
        self.nodes: dict[str, Node] = {}
        self.processes: list[Process] = []
        self.posts_in_flight: list[Deferred[None]] = []
        self.marks: list[str] = []
        self.cut: list[int] = []
        self.over = False

    def owed(self, reader: _Reader) -> set[int]:
        """
        What C{reader} must have: every accepted event, or after a reset
        every one accepted after the nodes relinked to the new Redis.
        """
        if not reader.resets():
            return self.accepted
        start = self.sent if self.relinked is None else self.relinked
        return {k for k in self.accepted if k >= start}


class FaultTests(TestCase):
    """
    Three nodes on one Redis under 1,000 broadcasts a second, while a node
    and then Redis itself are killed.
    """

    timeout = 300

    def setUp(self) -> None:
        from twisted.internet import reactor

        stream_pool = HTTPConnectionPool(reactor, False)
        post_pool = HTTPConnectionPool(reactor, True)
        post_pool.maxPersistentPerHost = 64
        self.post_pool = post_pool
        self.addCleanup(post_pool.closeCachedConnections)
        self.streams = HTTPClient(Agent(reactor, pool=stream_pool))
        self.posts = HTTPClient(Agent(reactor, pool=post_pool))

    async def _linked(self, node: Node, timeout: float = 20.0) -> None:
        """
        Wait until C{node}'s broker is linked to Redis (asking the node
        itself).
        """
        deadline = clock().seconds() + timeout
        while not await self._is_linked(node):
            self.assertLess(clock().seconds(), deadline, f"{node.name}: no link")
            await deferLater(clock(), 0.02, lambda: None)

    async def _is_linked(self, node: Node) -> bool:
        status, body = await self._post(node.url, {"route": "linked", "args": []})
        return status == 200 and isinstance(body, dict) and body.get("args") is True

    async def _post(self, url: str, body: Any) -> tuple[int, Any]:
        headers: dict[bytes | str, list[bytes | str]] = {
            "Content-Type": ["application/json"]
        }
        response = await self.posts.post(
            url, data=json.dumps(body).encode(), headers=headers
        )
        raw = await treq.content(response)
        return response.code, json.loads(raw) if raw else None

    async def _start(self, run: _Run) -> None:
        """
        Start Redis, the nodes A, B and C, and nginx in front of A and C;
        open readers through nginx until each of A and C holds
        L{READERS_PER_NODE} of them.
        """
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.cleanup)
        for name in "ABC":
            node = Node(
                self,
                f"run{run.number}-{name}",
                free_port(),
                self.redis.url,
                "--history",
                str(HISTORY),
                "--retry",
                "100",
                "--keepalive",
                "2",
                "--quiet-streams",
            )
            run.nodes[name] = node
            run.processes.append(node)
        for node in run.nodes.values():
            await node.listening(node.port)
        for node in run.nodes.values():
            await self._linked(node)
        a, c = run.nodes["A"], run.nodes["C"]
        port = free_port()
        nginx = start_nginx(self, port, [a.port, c.port])
        run.processes.append(nginx)
        await nginx.listening(port)
        url = f"http://127.0.0.1:{port}/sse"
        names = {a.pid: "A", c.pid: "C"}
        held = {"A": 0, "C": 0}
        while min(held.values()) < READERS_PER_NODE:
            self.assertLess(len(run.readers), 6 * READERS_PER_NODE, f"spread: {held}")
            client = ClusterClient(
                url, self.streams, self.posts, f"r{len(run.readers)}"
            )
            session = await client.open()
            # Asked of A itself (which forwards it to the session's node),
            # so that nginx sees only the streams and hands them out in
            # turn.
            status, body = await self._post(
                a.url, {"route": "pid", "args": [], "sessionId": session}
            )
            self.assertEqual(status, 200, body)
            owner = names[int(body["args"])]
            held[owner] += 1
            run.readers.append(_Reader(client, owner))

    async def _stop(self, run: _Run) -> None:
        """
        Close the readers, and kill what is left of the cluster.
        """
        run.over = True
        for reader in run.readers:
            await reader.client.close()
        for process in run.processes:
            process.kill()
        self.redis.cleanup()
        await self.post_pool.closeCachedConnections()

    def _send(self, run: _Run, url: str) -> None:
        """
        POST one batch of L{BATCH} broadcasts to C{url}, without waiting
        for the answer, and file each C{k} by how it was answered.
        """
        ks = list(range(run.sent, run.sent + BATCH))
        run.sent += BATCH
        batch = [{"route": "broadcast", "args": [{"k": k}]} for k in ks]

        async def send() -> None:
            try:
                status, body = await self._post(url, batch)
            except Exception:
                run.uncertain.update(ks)
                return
            if status != 200 or not isinstance(body, list) or len(body) != len(ks):
                run.refused.update(ks)
                return
            for k, answer in zip(ks, body, strict=True):
                ok = isinstance(answer, dict) and "args" in answer
                (run.accepted if ok else run.refused).add(k)

        posted = Deferred.fromCoroutine(send())
        run.posts_in_flight.append(posted)
        posted.addBoth(lambda _: run.posts_in_flight.remove(posted))

    async def _relinked(self, run: _Run) -> None:
        """
        Note the first C{k} sent once both surviving nodes say they are
        linked to the new Redis.
        """
        b, c = run.nodes["B"], run.nodes["C"]
        while not run.over:
            try:
                linked = [await self._is_linked(node) for node in (b, c)]
            except Exception:
                linked = [False]
            if all(linked):
                run.relinked = run.sent
                return
            await deferLater(clock(), 0.02, lambda: None)

    async def _publish(self, run: _Run) -> None:
        """
        Publish at 1,000 broadcasts a second to B; kill A, then Redis, and
        start Redis again, empty, on the way.
        """
        url = run.nodes["B"].url
        start = clock().seconds()
        tick = 0
        node_killed = redis_killed = False
        relinking: Deferred[None] | None = None
        restart_at: float | None = None
        relinked_at: float | None = None
        while True:
            now = clock().seconds() - start
            if not node_killed and now >= KILL_NODE_AT:
                node_killed = True
                run.nodes["A"].kill()
                run.marks.append(f"A killed at k={run.sent}")
            if not run.cut and run.number % 2 and now >= KILL_REDIS_AT - CUT:
                run.cut = self._cut(run.nodes["C"])
                run.marks.append(f"C cut off from Redis at k={run.sent}: {run.cut}")
            if not redis_killed and now >= KILL_REDIS_AT:
                redis_killed = True
                self.redis.kill()
                restart_at = now + REDIS_DOWN
                run.marks.append(f"Redis killed at k={run.sent}")
            if restart_at is not None and now >= restart_at:
                restart_at = None
                self.redis.start()
                run.marks.append(f"Redis started at k={run.sent}")
                relinking = Deferred.fromCoroutine(self._relinked(run))
            if relinked_at is None and run.relinked is not None:
                relinked_at = now
                run.marks.append(f"relinked at k={run.relinked}")
            if (
                now >= PUBLISH_FOR
                and relinked_at is not None
                and now >= relinked_at + AFTER_RELINK
            ):
                break
            if now > PUBLISH_FOR + 15:
                self.fail(f"the nodes never relinked\n{self._state(run)}")
            self._send(run, url)
            tick += 1
            await deferLater(clock(), max(0.0, start + tick * TICK - clock().seconds()))
        assert relinking is not None
        await relinking

    def _state(self, run: _Run) -> str:
        """
        What a failure shows: the run's marks, each reader's tally and the
        end of each node's log.
        """
        lines = [
            f"run {run.number}: sent {run.sent}, accepted {len(run.accepted)},"
            f" refused {_ranges(run.refused)}, uncertain {_ranges(run.uncertain)}",
            *run.marks,
        ]
        for reader in run.readers:
            numbers = reader.numbers()
            ks = [k for _, _, k in numbers]
            lines.append(
                f"{reader.client.name} (on {reader.owner}):"
                f" connections={reader.client.connections}"
                f" resets={reader.resets()} got {len(ks)}"
                f" missing {_ranges(run.owed(reader) - set(ks))}"
                f" epochs {sorted({e for e, _, _ in numbers})}"
            )
        for node in run.nodes.values():
            # The access log and the connections' factories say nothing here.
            log = [
                line
                for line in node.text().splitlines()
                if "/sse HTTP/1.1" not in line and "OneShotFactory" not in line
            ]
            lines += [f"--- {node.name} (pid {node.pid})", *log[-40:]]
        return "\n".join(lines)

    def _caught_up(self, run: _Run) -> bool:
        return not run.posts_in_flight and all(
            run.owed(reader) <= reader.ks() for reader in run.readers
        )

    def _cut(self, node: Node) -> list[int]:
        """
        Have Redis drop C{node}'s connections; the ids of those it dropped.
        """
        ports = _local_ports(node.pid)
        dropped = []
        for line in str(self.redis.command("CLIENT", "LIST")).splitlines():
            fields = dict(f.partition("=")[::2] for f in line.split())
            if int(fields["addr"].rpartition(":")[2]) in ports:
                self.redis.command("CLIENT", "KILL", "ID", fields["id"])
                dropped.append(int(fields["id"]))
        return dropped

    def _stored(self) -> tuple[str, dict[int, int]]:
        """
        The epoch of the (new) Redis, and the C{k} of each event its history
        of the endpoint's default channel holds, by sequence number.
        """
        epoch = self.redis.command("GET", "graphsse:/sse:epoch")
        entries = self.redis.command("XRANGE", "graphsse:/sse:h:message", "-", "+")
        stored = {}
        for entry_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            stored[int(entry_id.partition("-")[0])] = int(json.loads(fields["d"])["k"])
        return str(epoch), stored

    async def _check(self, run: _Run) -> int:
        """
        Wait until every reader has what it is owed, then hold the rule:
        no event twice, in order within each epoch, and every accepted
        event, or exactly one C{reset} and every event accepted after the
        nodes relinked.

        @return: how many readers truly missed events (told by a reset).
        """
        deadline = clock().seconds() + 30
        while not self._caught_up(run) and clock().seconds() < deadline:
            await deferLater(clock(), 0.05, lambda: None)
        # Anything still on its way (a duplicate) arrives now.
        await deferLater(clock(), 0.3, lambda: None)
        state = self._state(run)
        self.assertEqual(run.posts_in_flight, [], state)
        self.assertIsNotNone(run.relinked, state)
        assert run.relinked is not None
        self.assertGreaterEqual(run.sent - run.relinked, 300, state)
        self.assertGreaterEqual(len(run.accepted), run.sent * 0.9, state)
        current, stored = self._stored()
        # B stored every broadcast it accepted once both were linked again.
        lost = {k for k in run.accepted if k >= run.relinked} - set(stored.values())
        self.assertEqual(lost, set(), f"not in Redis: {_ranges(lost)}\n{state}")
        everything = set(range(run.sent))
        places: dict[tuple[str, int], set[int]] = {}
        for reader in run.readers:
            name = reader.client.name
            numbers = reader.numbers()
            ks = [k for _, _, k in numbers]
            twice = [k for k, n in Counter(ks).items() if n > 1]
            self.assertEqual(twice, [], f"{name} twice {_ranges(twice)}\n{state}")
            epochs = [
                e
                for i, (e, _, _) in enumerate(numbers)
                if i == 0 or e != numbers[i - 1][0]
            ]
            self.assertEqual(len(epochs), len(set(epochs)), f"{name} epochs\n{state}")
            for epoch in epochs:
                seqs = [seq for e, seq, _ in numbers if e == epoch]
                self.assertEqual(
                    seqs, sorted(set(seqs)), f"{name} order in {epoch}\n{state}"
                )
                batches: dict[int, list[int]] = {}
                for e, _, k in numbers:
                    if e == epoch:
                        batches.setdefault(k // BATCH, []).append(k)
                for batch in batches.values():
                    self.assertEqual(batch, sorted(batch), f"{name} batch\n{state}")
            for epoch, seq, k in numbers:
                places.setdefault((epoch, k), set()).add(seq)
            self.assertLessEqual(set(ks), everything, state)
            self.assertLessEqual(len(reader.resets()), 1, f"{name} resets\n{state}")
            missing = run.owed(reader) - set(ks)
            self.assertEqual(
                missing, set(), f"{name} missing {_ranges(missing)}\n{state}"
            )
            for reset in reader.resets():
                # The reset says where the stream carries on: from there,
                # the reader has exactly what the new Redis holds.
                at, _, after = reset.rpartition(".")
                self.assertEqual(at, current, f"{name} reset {reset}\n{state}")
                got = [(seq, k) for e, seq, k in numbers if e == current]
                owed = sorted((seq, k) for seq, k in stored.items() if seq > int(after))
                self.assertEqual(got, owed, f"{name} after {reset}\n{state}")
                self.assertEqual(
                    [e for e in reader.epochs_around_reset()[1] if e != current],
                    [],
                    f"{name} old events after the reset\n{state}",
                )
                self.assertNotIn(current, reader.epochs_around_reset()[0], state)
        # One order for all: each event has the same place everywhere.
        moved = {at: seqs for at, seqs in places.items() if len(seqs) > 1}
        self.assertEqual(moved, {}, state)
        victims = [r for r in run.readers if r.owner == "A"]
        for reader in victims:
            self.assertGreaterEqual(reader.client.connections, 2, state)
        a = run.nodes["A"]
        self.assertEqual(a.process.returncode, -signal.SIGKILL, state)
        return sum(bool(run.accepted - reader.ks()) for reader in run.readers)

    async def test_no_silent_gap(self) -> None:
        """
        In each of L{RUNS} runs, readers on A and on C (through nginx) count
        the broadcasts B is sent at 1,000 a second, in batches of L{BATCH},
        for about L{PUBLISH_FOR} seconds.  A third of the way in, A is
        killed (C{SIGKILL}): its readers reconnect through nginx to C with
        their C{Last-Event-ID}.  Two thirds in, Redis is killed (C{SIGKILL})
        and started again, empty, after L{REDIS_DOWN} seconds, while B keeps
        being sent broadcasts; in every other run Redis drops C's
        connections just before (L{CUT}), so that C truly misses events.

        Every reader then has no broadcast twice and those of each epoch in
        order, and either every broadcast B accepted (answered with
        success) and no C{reset}, or exactly one C{reset} and every
        broadcast accepted after B and C said they were linked to the new
        Redis; indeed, after the C{reset}, exactly what the new Redis holds
        after the C{reset}'s id, and nothing of the old epoch.  The order is
        the cluster's, the ids': the same for every reader, and the order of
        C{k} within each batch (B takes a batch in order); the batches
        themselves may reach B out of turn, as they go on several
        connections so as not to wait for the answers, which wait for
        Redis through the outage.  The runs that cut C off must have made
        real gaps, so that the resets were put to the test.

        The issue's story has 50 readers; here there are
        2 x L{READERS_PER_NODE}, since this process parses every event each
        of them receives (some 4,000 a run each), on the same two cores as
        the three nodes, nginx and Redis: more readers would slow the test
        process down until it, not the cluster, is what lags.
        """
        gaps = []
        for number in range(RUNS):
            run = _Run(number)
            try:
                await self._start(run)
                await self._publish(run)
                gaps.append(await self._check(run))
            finally:
                await self._stop(run)
        # The runs that cut C off made real gaps: the resets were tested.
        self.assertTrue(any(gaps[1::2]), gaps)
