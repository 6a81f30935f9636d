#!/usr/bin/env python3
"""
The server API benchmark (issue 16): C{/api/publish} against the back
channel's way of publishing, and C{/api/call} across nodes against the same
call on one node.

    python bench/api_bench.py                  # ~2 min: writes bench/out/RESULTS-api.md
    python bench/api_bench.py --write-results  # also puts it in bench/RESULTS.md
    python bench/api_bench.py --quick          # smoke test, smaller counts

Every server is a real C{twistd -n graphsse} on a free port of 127.0.0.1
with this file as its C{--app}, C{--api-key}, C{--channels bench} and
C{--history 1000}; with C{--redis}, its own C{redis-server} (free port, no
persistence).  Nothing is pinned: the load, the nodes and Redis share the
machine's cores.

(a) Publishes, on one node, in two configurations (C{memory}: the in-memory
broker; C{redis}: C{--redis}), each on a fresh node, three ways in the same
run (their order turns round from run to run):

- C{api}: C{POST /api/publish {"channel":"bench","data":...}}, answered
  once the event has its id (with Redis: once Redis has stored it);
- C{backchannel}: C{POST /sse {"route":"broadcast","args":["bench",...]}},
  a server route that calls C{endpoint.channels["bench"].broadcast(data)}
  and answers at once (the event is queued, not yet ordered);
- C{backchannel-flushed}: the same route, but it answers after
  C{await endpoint.flushed()}, the back channel's nearest thing to an
  acknowledged publish.

The load is a closed loop: C{--concurrency} (32) keep-alive connections,
each with one request in flight, the next sent as soon as the answer is
read, C{--warmup} (2,000) requests first, then C{--count} (20,000)
measured; publishes/s = measured count / (last answer - first send);
latency is send to answer, per request.  One SSE stream subscribed to
C{bench} counts what it gets, to show that every publish was delivered.

(b) Calls: two nodes, A and B, with C{--redis}; C{bench/loadclient.c} in
its C{s2c} mode holds C{--call-sessions} (1,000) streams on A and answers
every C{runRequest} at once (a C{POST} to A on a keep-alive connection of
each session), echoing the route's arguments.  Each round sends one
C{POST /api/call {"session":S,"route":"echo","args":[k]}} per session, all
at once on as many keep-alive connections (1,000 concurrent calls), to A
(C{same node}: A holds the session) or to B (C{cross node}: B runs the
call through Redis and A hands the answer back through Redis); rounds
alternate between the two.  Then C{--serial-calls} (200) calls one at a
time to each, the hop's cost without queueing.

The load client is this process (asyncio, one thread); its CPU and that
of every server process and of Redis are measured over each window, and so
is the CPU that other processes took ("other").  It stops every process it
started by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
#: The heading of this benchmark's section in RESULTS.md.
HEADING = "## Server API (issue 16): publishes and cross-node calls"

KEY = "bench-api-key-0123456789"
CHANNEL = "bench"
#: About 64 bytes of JSON, as the other benchmarks send.
DATA = {"n": 1, "pad": "x" * 44}

PUBLISH_METHODS = ("api", "backchannel", "backchannel-flushed")

#: The configuration that is no graphsse: plain Twisted's POST echo.
FLOOR = "twisted-plain"


# The server side: this module is also the nodes' --app.


def setup(backend: Any) -> None:
    """
    The bench routes, for C{twistd graphsse --app api_bench:setup}.
    """

    @backend.route("broadcast")
    def broadcast(channel: str, data: Any, *, caller: Any) -> int:
        """
        Publish C{data} on C{channel}; answer at once.
        """
        reached: int = caller.endpoint.channels[channel].broadcast(data)
        return reached

    @backend.route("broadcast_flushed")
    async def broadcast_flushed(channel: str, data: Any, *, caller: Any) -> int:
        """
        Publish C{data} on C{channel}; answer once it has its place in the
        order (with Redis: once Redis gave it a sequence number).
        """
        endpoint = caller.endpoint
        reached: int = endpoint.channels[channel].broadcast(data)
        await endpoint.flushed()
        return reached

    @backend.route("sessions")
    def sessions(*, caller: Any) -> list[str]:
        """
        The ids of this node's sessions.
        """
        return sorted(caller.endpoint.sessions)


# Processes and measurements (shared with the cluster benchmark).

sys.path.insert(0, str(BENCH))
import cluster_bench as cb  # noqa: E402


def log(message: str) -> None:
    cb.log(message)


def machine_busy() -> float:
    """
    CPU seconds the whole machine has spent busy (all cores, C{/proc/stat}).
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(f) for f in fields[:8]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Window:
    """
    The CPU that each of some processes, this one and the rest of the
    machine used between L{start} and L{stop}.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.load = loadavg()
        self._t = time.monotonic()
        self._mine = time.process_time()
        self._machine = machine_busy()
        self._cpu = {name: cb._cpu_of(pid) or 0.0 for name, pid in self.pids.items()}

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._t
        cpu = {
            name: round((cb._cpu_of(pid) or 0.0) - self._cpu[name], 3)
            for name, pid in self.pids.items()
        }
        client = time.process_time() - self._mine
        machine = machine_busy() - self._machine
        return {
            "elapsed_s": elapsed,
            "cpu": cpu,
            "client_cpu_s": round(client, 3),
            "other_cpu_s": round(max(0.0, machine - client - sum(cpu.values())), 3),
            "loadavg": self.load,
        }


def start_node(
    workdir: Path, tag: str, redis: cb.Redis | None, prefix: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """
    One C{twistd -n graphsse} with this file's routes and the API; its
    process and port.
    """
    port = cb.free_port()
    twistd = Path(sys.executable).with_name("twistd")
    command = [
        str(twistd),
        "-n",
        "--pidfile=",
        "--logger",
        "cluster_bench.quiet_logger",
        "graphsse",
        "--port",
        f"tcp:{port}:interface=127.0.0.1:backlog=4096",
        "--channels",
        CHANNEL,
        "--history",
        "1000",
        "--app",
        "api_bench:setup",
        "--api-key",
        KEY,
        # Every connection of the load comes from 127.0.0.1.
        "--max-connecting-per-address",
        "8192",
        "--max-connecting",
        "20000",
    ]
    if redis is not None:
        command += ["--redis", redis.url, "--redis-prefix", prefix or f"bench-{tag}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    with (workdir / f"server-{tag}.log").open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    cb.wait_port(port, process, 30)
    return process, port


# The load client: HTTP/1.1 on asyncio, keep-alive, one request in flight
# per connection.


class HTTPConnection(asyncio.Protocol):
    """
    One keep-alive connection.  L{send} writes a request; once its whole
    answer has arrived, C{done(status, body, arrived_ns)} is called, from
    C{data_received}, so that the next request can go out at once.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._done: Callable[[int, bytes, int], None] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self._done is not None:
            done, self._done = self._done, None
            done(0, b"connection lost", time.perf_counter_ns())

    def send(self, request: bytes, done: Callable[[int, bytes, int], None]) -> None:
        assert self.transport is not None and self._done is None
        self._done = done
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = self._answer()
        if answer is not None and self._done is not None:
            done, self._done = self._done, None
            done(answer[0], answer[1], time.perf_counter_ns())

    def _answer(self) -> tuple[int, bytes] | None:
        """
        The status and body of a whole answer at the start of the buffer
        (removed from it), if there is one.
        """
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        if "content-length" in headers:
            end = start + int(headers["content-length"])
            if len(buffer) < end:
                return None
            body = bytes(buffer[start:end])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            at = start
            while True:
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    return None
                size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
                at = line_end + 2
                if size == 0:
                    if buffer.find(b"\r\n", at) != at:
                        return None  # trailers: none expected
                    end = at + 2
                    break
                if len(buffer) < at + size + 2:
                    return None
                parts.append(bytes(buffer[at : at + size]))
                at += size + 2
            body = b"".join(parts)
        else:
            raise RuntimeError(f"an answer without a length: {head}")
        del buffer[:end]
        return status, body


async def connect(port: int, count: int) -> list[HTTPConnection]:
    """
    C{count} connections to 127.0.0.1:C{port}, opened 100 at a time.
    """
    loop = asyncio.get_running_loop()
    connections: list[HTTPConnection] = []
    while len(connections) < count:
        batch = min(100, count - len(connections))
        made = await asyncio.gather(
            *(
                loop.create_connection(HTTPConnection, "127.0.0.1", port)
                for _ in range(batch)
            )
        )
        connections.extend(protocol for _, protocol in made)
    return connections


async def close(connections: Sequence[HTTPConnection]) -> None:
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    await asyncio.gather(*(c.lost for c in connections))


def post(port: int, path: str, body: Any, auth: bool) -> bytes:
    """
    The bytes of a C{POST} of C{body} as JSON.
    """
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if auth:
        lines.append(f"Authorization: apikey {KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def percentile(sorted_values: Sequence[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[int(share * (len(sorted_values) - 1))]


def latency_summary(latencies_ns: list[int]) -> dict[str, float]:
    values = sorted(v / 1e6 for v in latencies_ns)
    return {
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1] if values else float("nan"),
    }


async def request_once(
    connection: HTTPConnection, request: bytes, timeout: float = 10.0
) -> tuple[int, bytes, int]:
    """
    Send C{request} on C{connection}; its answer's status and body, and the
    latency in nanoseconds.
    """
    answer: asyncio.Future[tuple[int, bytes, int]] = (
        asyncio.get_running_loop().create_future()
    )
    started = time.perf_counter_ns()
    connection.send(
        request,
        lambda status, body, arrived: answer.set_result(
            (status, body, arrived - started)
        ),
    )
    return await asyncio.wait_for(answer, timeout)


async def closed_loop(
    connections: Sequence[HTTPConnection],
    request: bytes,
    count: int,
    timeout: float,
) -> dict[str, Any]:
    """
    Send C{count} copies of C{request}, each connection with one in flight;
    the rate, latencies and statuses.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    sent = 0
    first_sent = 0
    last_answer = 0

    def go(connection: HTTPConnection) -> None:
        nonlocal sent
        sent += 1
        started = time.perf_counter_ns()

        def done(status: int, body: bytes, arrived: int) -> None:
            nonlocal last_answer
            latencies.append(arrived - started)
            statuses[status] = statuses.get(status, 0) + 1
            last_answer = arrived
            if status == 0:
                pass  # lost: this connection sends no more
            elif sent < count:
                go(connection)
            if len(latencies) == count and not finished.done():
                finished.set_result(None)

        connection.send(request, done)

    first_sent = time.perf_counter_ns()
    for connection in connections[:count]:
        go(connection)
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    elapsed = (last_answer - first_sent) / 1e9 if last_answer else 0.0
    return {
        "count": count,
        "answered": len(latencies),
        "timed_out": timed_out,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": elapsed,
        "per_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        **latency_summary(latencies),
    }


class Subscriber(asyncio.Protocol):
    """
    One SSE stream of C{bench}: counts its events.
    """

    PATTERN = f"event: {CHANNEL}\n".encode()

    def __init__(self) -> None:
        self.events = 0
        self._tail = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        chunk = self._tail + data
        self.events += chunk.count(self.PATTERN)
        # What could be the start of a pattern that the read cut (too short
        # to hold a whole one, so nothing is counted twice).
        self._tail = chunk[1 - len(self.PATTERN) :]


async def subscribe(port: int) -> Subscriber:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(Subscriber, "127.0.0.1", port)
    assert isinstance(stream.transport, asyncio.Transport)
    stream.transport.write(
        f"GET /sse?channels={CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return stream


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def delivered(stream: Subscriber, expected: int, timeout: float = 10) -> None:
    """
    Wait until C{stream} has C{expected} events (at most C{timeout} s).
    """
    await until(lambda: stream.events >= expected, timeout)


async def wait_linked(port: int, timeout: float = 20.0) -> None:
    """
    Wait until the node's API publishes (C{503} until its Redis link is up).
    """
    [connection] = await connect(port, 1)
    request = post(
        port, "/api/publish", {"channel": CHANNEL, "data": "warm-up"}, auth=True
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            status, body, _ = await request_once(connection, request)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node on {port} is not linked: {status} {body!r}")
            await asyncio.sleep(0.1)
    finally:
        await close([connection])


# (a) Publishes


def start_floor(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """
    C{bench/servers/twisted_plain_server.py}: a bare twisted.web resource
    whose C{POST /sse} echoes, the floor of one C{POST} on one Twisted
    process; its process and port.
    """
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "servers" / "twisted_plain_server.py")],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(workdir / "server-floor.log").open("wb"),
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("READY "):
        cb.stop(process)
        raise RuntimeError(f"twisted_plain_server.py said {line!r}")
    return process, int(line.split()[1])


def publish_request(method: str, port: int) -> bytes:
    if method == "echo":
        return post(port, "/sse", {"route": "echo", "args": [DATA]}, False)
    if method == "api":
        return post(port, "/api/publish", {"channel": CHANNEL, "data": DATA}, True)
    route = "broadcast" if method == "backchannel" else "broadcast_flushed"
    return post(port, "/sse", {"route": route, "args": [CHANNEL, DATA]}, False)


async def publish_config(
    config: str, run: int, args: argparse.Namespace, redis: cb.Redis, workdir: Path
) -> list[dict[str, Any]]:
    """
    One fresh node in C{config}; every publish method on it, in this run's
    order.
    """
    floor = config == FLOOR
    if floor:
        process, port = start_floor(workdir)
    else:
        process, port = start_node(
            workdir, f"{run}-{config}", redis if config == "redis" else None
        )
    results = []
    try:
        if config == "redis":
            await wait_linked(port)
        stream = await subscribe(port)
        if not await until(lambda: stream.transport is not None, 5):
            raise RuntimeError("the subscriber did not connect")
        pids = {"server": process.pid}
        if config == "redis":
            pids["redis"] = redis.process.pid
        methods = ["echo"] if floor else list(PUBLISH_METHODS)
        if run % 2:
            methods.reverse()
        connections = await connect(port, args.concurrency)
        try:
            for method in methods:
                request = publish_request(method, port)
                before = stream.events
                await closed_loop(connections, request, args.warmup, args.timeout)
                window = Window(pids)
                window.start()
                result = await closed_loop(
                    connections, request, args.count, args.timeout
                )
                result.update(window.stop())
                # Then one at a time: the latency of a publish alone.
                alone = await closed_loop(
                    connections[:1], request, args.alone, args.timeout
                )
                result["alone"] = {
                    k: alone[k] for k in ("p50_ms", "p99_ms", "statuses")
                }
                expected = 0 if floor else args.warmup + args.count + args.alone
                await delivered(stream, before + expected)
                result["delivered"] = stream.events - before
                result["expected"] = expected
                result.update(config=config, method=method, run=run)
                results.append(result)
                log(
                    f"run {run + 1} {config:6} {method:20}"
                    f" {result['per_s']:>8,.0f}/s p50 {result['p50_ms']:6.2f} ms"
                    f" p99 {result['p99_ms']:6.2f} ms statuses {result['statuses']}"
                    f" delivered {result['delivered']:,}/{result['expected']:,}"
                    f" [server {result['cpu'].get('server', 0):.2f} s,"
                    f" client {result['client_cpu_s']:.2f} s,"
                    f" other {result['other_cpu_s']:.2f} s]"
                    f" load {result['loadavg']:.1f}"
                )
        finally:
            await close(connections)
            if stream.transport is not None:
                stream.transport.close()
    finally:
        cb.stop(process)
    return results


# (b) Calls


async def call_round(
    connections: Sequence[HTTPConnection],
    port: int,
    sessions: Sequence[str],
    timeout: float,
    base: int,
) -> dict[str, Any]:
    """
    One call per session, all at once, one per connection; latencies and
    how many answered the right result.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    wrong = 0
    requests = [
        post(
            port,
            "/api/call",
            {"session": sid, "route": "echo", "args": [base + index]},
            True,
        )
        for index, sid in enumerate(sessions)
    ]

    def answered(index: int) -> Callable[[int, bytes, int], None]:
        started = time.perf_counter_ns()

        def done(status: int, body: bytes, arrived: int) -> None:
            nonlocal wrong
            latencies.append(arrived - started)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200 and json.loads(body) != {"result": [base + index]}:
                wrong += 1
            if len(latencies) == len(sessions) and not finished.done():
                finished.set_result(None)

        return done

    started_all = time.perf_counter_ns()
    for index, (connection, request) in enumerate(
        zip(connections, requests, strict=False)
    ):
        connection.send(request, answered(index))
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    elapsed = (time.perf_counter_ns() - started_all) / 1e9
    return {
        "calls": len(sessions),
        "answered": len(latencies),
        "timed_out": timed_out,
        "wrong": wrong,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": elapsed,
        "latencies_ns": latencies,
        **latency_summary(latencies),
    }


async def serial_calls(
    connection: HTTPConnection, port: int, sessions: Sequence[str], count: int
) -> dict[str, Any]:
    """
    C{count} calls one after the other, over the sessions in turn.
    """
    latencies: list[int] = []
    statuses: dict[str, int] = {}
    for index in range(count):
        sid = sessions[index % len(sessions)]
        request = post(
            port, "/api/call", {"session": sid, "route": "echo", "args": [index]}, True
        )
        status, _, latency = await request_once(connection, request)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        latencies.append(latency)
    return {"count": count, "statuses": statuses, **latency_summary(latencies)}


async def node_sessions(port: int) -> list[str]:
    [connection] = await connect(port, 1)
    try:
        request = post(port, "/sse", {"route": "sessions", "args": []}, False)
        _, body, _ = await request_once(connection, request)
    finally:
        await close([connection])
    sessions: list[str] = json.loads(body)["args"]
    return sessions


async def calls(
    args: argparse.Namespace, redis: cb.Redis, workdir: Path
) -> dict[str, Any]:
    """
    Nodes A and B, the answering client on A, then the rounds.
    """
    prefix = "bench-calls"
    a, a_port = start_node(workdir, "calls-a", redis, prefix)
    b, b_port = start_node(workdir, "calls-b", redis, prefix)
    answerer: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {"same": [], "cross": [], "serial": {}}
    try:
        await wait_linked(a_port)
        await wait_linked(b_port)
        cb.build_client()
        answerer_log = (workdir / "answerer.log").open("wb")
        answerer = subprocess.Popen(
            [
                str(cb.CLIENT),
                "--port",
                str(a_port),
                "--path",
                "/sse",
                "--streams",
                str(args.call_sessions),
                "--mode",
                "s2c",
                "--settle",
                "0.2",
                "--warmup",
                "0",
                "--duration",
                str(args.timeout * 4),
                "--timeout",
                str(args.timeout * 4),
            ],
            stdin=subprocess.DEVNULL,
            stdout=answerer_log,
            stderr=subprocess.STDOUT,
        )
        sessions: list[str] = []
        deadline = time.monotonic() + args.timeout
        while len(sessions) < args.call_sessions:
            if answerer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the answering client holds {len(sessions)} sessions on A"
                )
            await asyncio.sleep(0.2)
            sessions = await node_sessions(a_port)
        # Its reply connections open once every session has its id.
        await asyncio.sleep(1.0)
        log(f"calls: {len(sessions)} sessions on A, answered by loadclient s2c")
        pids = {
            "A": a.pid,
            "B": b.pid,
            "redis": redis.process.pid,
            "answerer": answerer.pid,
        }
        targets = {"same": a_port, "cross": b_port}
        pools = {
            name: await connect(port, len(sessions)) for name, port in targets.items()
        }
        try:
            for name, port in targets.items():  # warm-up round, not counted
                await call_round(pools[name], port, sessions, args.timeout, 0)
            base = 1000 * len(sessions)
            for round_ in range(args.call_rounds):
                order = ["same", "cross"] if round_ % 2 == 0 else ["cross", "same"]
                for name in order:
                    window = Window(pids)
                    window.start()
                    result = await call_round(
                        pools[name], targets[name], sessions, args.timeout, base
                    )
                    result.update(window.stop())
                    result["round"] = round_
                    base += len(sessions)
                    results[name].append(result)
                    log(
                        f"calls round {round_ + 1} {name:5}"
                        f" p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f}"
                        f" ms max {result['max_ms']:7.2f} ms in"
                        f" {result['elapsed_s']:.3f} s statuses {result['statuses']}"
                        f" wrong {result['wrong']} cpu {result['cpu']}"
                        f" client {result['client_cpu_s']:.2f}"
                        f" other {result['other_cpu_s']:.2f} load"
                        f" {result['loadavg']:.1f}"
                    )
            for name, port in targets.items():
                result = await serial_calls(
                    pools[name][0], port, sessions, args.serial_calls
                )
                results["serial"][name] = result
                log(
                    f"serial calls {name:5} p50 {result['p50_ms']:.2f} ms"
                    f" p99 {result['p99_ms']:.2f} ms statuses {result['statuses']}"
                )
        finally:
            for pool in pools.values():
                await close(pool)
    finally:
        if answerer is not None:
            cb.stop(answerer)
        cb.stop(a)
        cb.stop(b)
    return results


# The report


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _per_publish(
    rows: Sequence[dict[str, Any]], cpu: Callable[[dict[str, Any]], float]
) -> float:
    """
    The median over C{rows} of C{cpu(row)} per answered request, in µs.
    """
    return median([1e6 * cpu(r) / max(r["answered"], 1) for r in rows])


def report(
    args: argparse.Namespace,
    command: str,
    publishes: list[dict[str, Any]],
    call_results: dict[str, Any] | None,
    redis_version: str,
    seconds: float,
) -> str:
    info = cb.machine()
    loads = [r["loadavg"] for r in publishes] + [
        r["loadavg"]
        for name in ("same", "cross")
        for r in (call_results or {}).get(name, [])
    ]
    others = [r["other_cpu_s"] / r["elapsed_s"] for r in publishes if r["elapsed_s"]]
    lines = [
        HEADING,
        "",
        f"Command: `{command}` ({seconds:.0f} s,"
        f" {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC),"
        " `bench/api_bench.py` (see bench/README.md for what it does).",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']},"
        f" Python {info['python']}, Twisted {info['twisted']}, redis-server"
        f" {redis_version}. Nothing pinned: the load client (this script,"
        " asyncio), the nodes and Redis share the cores. Load average during"
        f" the run: median {median(loads):.1f}, max {max(loads, default=0):.1f};"
        " other processes took a median"
        f" {median(others):.2f} cores during the publish windows.",
        "",
    ]
    if median(loads) > 1.5 or median(others) > 0.3:
        lines += [
            "**The machine was busy with other work during this run** (see the"
            ' load and the "other" CPU in each row): absolute rates and'
            " latencies are lower bounds of what the code does on a quiet"
            " machine; the side-by-side ratios, measured in the same minutes,"
            " are the steadier figures.",
            "",
        ]
    if publishes:
        lines += [
            f"### (a) Publishes on one node: {args.count:,} acknowledged publishes,"
            f" {args.concurrency} in flight on keep-alive connections",
            "",
            "Target: `/api/publish` >= 5,000/s with p99 <= 5 ms."
            + (
                f" Medians of {args.runs} runs;"
                if args.runs > 1
                else " One run (`--runs 1`):"
            )
            + " each run starts a fresh node and runs the three"
            " ways in turn (order reversed every other run). Every row"
            " delivered every publish to the one subscribed stream unless the"
            " column says otherwise. The last row is no graphsse at all: a bare"
            " twisted.web resource that echoes a `POST`"
            " (`bench/servers/twisted_plain_server.py`), the floor of one"
            " request on one Twisted process on this machine at that moment."
            ' "Publishes per server CPU s" is what one free core would give.'
            f" With {args.concurrency} in flight, latency is mostly queueing"
            " (Little's law: mean latency = in flight / rate, so p99 <= 5 ms at"
            f" {args.concurrency} in flight needs more than"
            f" {args.concurrency / 0.005:,.0f} publishes/s); the last column"
            f" is {args.alone:,} publishes sent one at a time on one"
            " connection, right after.",
            "",
            "| broker | way | publishes/s | p50 ms | p99 ms | max ms | server CPU"
            " µs/publish | publishes per server CPU s | Redis CPU µs/publish |"
            " client CPU µs/publish | non-200 | delivered | one at a time:"
            " p50 / p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        table: dict[tuple[str, str], dict[str, float]] = {}
        for config, method in [
            *((c, m) for c in ("memory", "redis") for m in PUBLISH_METHODS),
            (FLOOR, "echo"),
        ]:
            rows = [
                r for r in publishes if r["config"] == config and r["method"] == method
            ]
            if not rows:
                continue
            per = median([r["per_s"] for r in rows])
            p99 = median([r["p99_ms"] for r in rows])
            table[(config, method)] = {"per_s": per, "p99_ms": p99}
            bad = sum(n for r in rows for s, n in r["statuses"].items() if s != "200")
            share = min(r["delivered"] / max(r["expected"], 1) for r in rows)
            server = _per_publish(rows, lambda r: r["cpu"]["server"])
            redis_cpu = _per_publish(rows, lambda r: r["cpu"].get("redis", 0.0))
            client = _per_publish(rows, lambda r: r["client_cpu_s"])
            lines.append(
                f"| `{config}` | `{method}` | {per:,.0f}"
                f" | {_ms(median([r['p50_ms'] for r in rows]))}"
                f" | {_ms(p99)} | {_ms(median([r['max_ms'] for r in rows]))}"
                f" | {server:.0f} | {1e6 / server if server else 0:,.0f}"
                f" | {redis_cpu:.0f} | {client:.0f}"
                f" | {bad} | {'-' if config == FLOOR else f'{share:.0%}'}"
                f" | {_ms(median([r['alone']['p50_ms'] for r in rows]))}"
                f" / {_ms(median([r['alone']['p99_ms'] for r in rows]))} |"
            )
        lines += [
            "",
            "`/api/publish` against the back channel (>1: the API is faster):",
            "",
        ]
        lines += [
            "| broker | vs | publishes/s ratio | p99 ratio |",
            "|---|---|---:|---:|",
        ]
        for config in ("memory", "redis"):
            api = table.get((config, "api"))
            for method in PUBLISH_METHODS[1:]:
                other = table.get((config, method))
                if api is None or other is None:
                    continue
                lines.append(
                    f"| `{config}` | `{method}` | {api['per_s'] / other['per_s']:.2f}x"
                    f" | {other['p99_ms'] / api['p99_ms']:.2f}x |"
                )
        lines += ["", "Every run (publishes/s, p50 / p99 ms, load average):", ""]
        for r in publishes:
            lines.append(
                f"- run {r['run'] + 1} `{r['config']}` `{r['method']}`:"
                f" {r['per_s']:,.0f}/s, {_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} ms,"
                f" server {r['cpu']['server']:.2f} s CPU in {r['elapsed_s']:.2f} s,"
                f" client {r['client_cpu_s']:.2f} s, other {r['other_cpu_s']:.2f} s"
                f" ({r['loadavg']:.1f})"
                + ("" if not r["timed_out"] else " **timed out**")
            )
        lines.append("")
    if call_results:
        same, cross = call_results["same"], call_results["cross"]
        pooled = {
            name: latency_summary(
                [v for r in call_results[name] for v in r["latencies_ns"]]
            )
            for name in ("same", "cross")
        }
        lines += [
            f"### (b) `/api/call`, cross-node against one node:"
            f" {args.call_sessions:,} concurrent calls, loopback Redis",
            "",
            "Target: cross-node adds <= 5 ms p99. Two nodes with `--redis`;"
            f" {args.call_sessions:,} sessions on A (`bench/loadclient.c` in"
            " `s2c` mode answers each `runRequest` at once); each round is one"
            " call per session, all sent at once; `same node` calls A,"
            f" `cross node` calls B. {args.call_rounds} rounds each,"
            " alternating, after one warm-up round each. p50/p99 over every"
            " call of every round (the median of the rounds' p99 in brackets).",
            "",
            "| calls to | p50 ms | p99 ms | max ms | round takes s | non-200 or"
            " wrong | CPU µs per call: A / B / Redis / answerer / load client |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]

        def per_call(rows: list[dict[str, Any]], name: str) -> float:
            return median(
                [
                    1e6
                    * (r["client_cpu_s"] if name == "client" else r["cpu"][name])
                    / max(r["answered"], 1)
                    for r in rows
                ]
            )

        for name, rows in (("same node (A)", same), ("cross node (B)", cross)):
            key = "same" if name.startswith("same") else "cross"
            bad = sum(
                n for r in rows for s, n in r["statuses"].items() if s != "200"
            ) + sum(r["wrong"] for r in rows)
            lines.append(
                f"| {name} | {_ms(pooled[key]['p50_ms'])}"
                f" | {_ms(pooled[key]['p99_ms'])}"
                f" ({_ms(median([r['p99_ms'] for r in rows]))})"
                f" | {_ms(pooled[key]['max_ms'])}"
                f" | {median([r['elapsed_s'] for r in rows]):.3f} | {bad} | "
                + " / ".join(
                    f"{per_call(rows, n):.0f}"
                    for n in ("A", "B", "redis", "answerer", "client")
                )
                + " |"
            )
        one = per_call(same, "A")
        busiest = max(per_call(cross, "A"), per_call(cross, "B"))
        total = per_call(cross, "A") + per_call(cross, "B") + per_call(cross, "redis")
        lines += [
            "",
            f"CPU per call: one node {one:.0f} µs (all on A); cross node"
            f" {total:.0f} µs in all ({total / one:.2f}x), {busiest:.0f} µs in"
            f" the busier node ({busiest / one:.2f}x): with a free core for"
            " each node a cross-node round would take about"
            f" {busiest / one:.2f}x a one-node round; on cores shared with"
            f" other work, about {total / one:.2f}x.",
        ]
        added = pooled["cross"]["p99_ms"] - pooled["same"]["p99_ms"]
        ratio = pooled["cross"]["p99_ms"] / pooled["same"]["p99_ms"]
        lines += [
            "",
            f"Cross-node adds **{added:+.2f} ms** at p99"
            f" ({ratio:.2f}x the one-node p99);"
            f" {pooled['cross']['p50_ms'] - pooled['same']['p50_ms']:+.2f} ms at p50.",
            "",
        ]
        serial = call_results.get("serial", {})
        if serial.get("same") and serial.get("cross"):
            s, c = serial["same"], serial["cross"]
            lines += [
                f"One call at a time ({s['count']} each): same node p50"
                f" {_ms(s['p50_ms'])} / p99 {_ms(s['p99_ms'])} ms, cross node p50"
                f" {_ms(c['p50_ms'])} / p99 {_ms(c['p99_ms'])} ms: the Redis hops"
                f" add {c['p50_ms'] - s['p50_ms']:+.2f} ms at p50 without"
                " queueing.",
                "",
            ]
        lines += ["Every round (p50 / p99 ms, load average):", ""]
        for name in ("same", "cross"):
            values = ", ".join(
                f"{_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} ({r['loadavg']:.1f})"
                for r in call_results[name]
            )
            lines.append(f"- {name}: {values}")
        lines.append("")
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """
    Put C{text} in C{path} in place of its section under L{HEADING}, or
    at its end.
    """
    old = path.read_text() if path.exists() else ""
    start = old.find(HEADING)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = old.find("\n## ", start + len(HEADING))
        rest = "" if end < 0 else old[end:]
        new = old[:start] + text.rstrip("\n") + "\n" + rest
    path.write_text(new)


async def main_async(args: argparse.Namespace) -> int:
    command = " ".join(["python bench/api_bench.py", *sys.argv[1:]]).strip()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="txgraphsse-api-bench-"))
    redis = cb.Redis(workdir)
    publishes: list[dict[str, Any]] = []
    call_results = None
    parts = set(args.parts.split(","))
    try:
        if "publish" in parts:
            for run in range(args.runs):
                for config in args.configs.split(","):
                    publishes += await publish_config(config, run, args, redis, workdir)
        if "call" in parts:
            call_results = await calls(args, redis, workdir)
        text = report(
            args,
            command,
            publishes,
            call_results,
            redis.version(),
            time.monotonic() - started,
        )
    finally:
        redis.close()
    OUT.mkdir(exist_ok=True)
    (OUT / "RESULTS-api.md").write_text(text)
    raw = {"publishes": publishes, "calls": call_results}
    if call_results:
        for name in ("same", "cross"):
            for r in call_results[name]:
                r.pop("latencies_ns", None)
    (OUT / f"api-results-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(raw, indent=1)
    )
    if args.write_results:
        write_section(text)
        log(f"wrote the section of {RESULTS}")
    shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="publish runs (2)")
    parser.add_argument("--configs", default=f"memory,redis,{FLOOR}")
    parser.add_argument("--parts", default="publish,call")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--call-sessions", type=int, default=1_000)
    parser.add_argument("--call-rounds", type=int, default=5)
    parser.add_argument("--serial-calls", type=int, default=200)
    parser.add_argument(
        "--alone", type=int, default=1_000, help="publishes one at a time (1,000)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds each phase may take"
    )
    parser.add_argument("--quick", action="store_true", help="1 run, small counts")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"put the report in bench/RESULTS.md under {HEADING!r}",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.count, args.warmup = 1, 2_000, 200
        args.call_sessions, args.call_rounds, args.serial_calls = 200, 2, 20
        args.alone = 100
    cb.raise_nofile()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
