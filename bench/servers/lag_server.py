"""
The server of the lagging-readers benchmark (bench/lag_bench.py, issue 17).

One endpoint with one named channel, ``news``, whose history covers the
whole burst (``--history``, 10,000 events by default), served by
``SSESite`` as ``twistd graphsse`` serves it, with the caps on connections
that are not streams yet lifted (every reader comes from 127.0.0.1).
Everything else is the library's default: ``max_backlog`` 1 MiB,
``overflow="disconnect"``, 15 s keep-alive (``--keepalive``).  It runs against whichever
txgraphsse ``PYTHONPATH`` puts first (the working tree, or a worktree of
an older commit), and says which in its ``status``.

``POST /control`` takes JSON:

    {"scenario": "burst", "count": 10000, "size": 1024, "rate": 10000}
        broadcast ``count`` events on ``news``, ``rate`` a second, paced by
        the reactor's clock every ``interval`` (0.01) seconds: each tick
        sends what is due, so that a busy reactor sends larger batches,
        never fewer events; with ``per_tick`` > 0, at most that many a
        tick (a busy reactor then sends them more slowly); with
        ``notice_every`` k > 0, every k-th tick also sends ``notice <i>`` on
        the default channel (every stream is in it; it keeps no history),
        just before that tick's news, in the same reactor turn.  Answers at once.
    {"scenario": "status"}
        sessions open, events sent so far, the burst's first and last send
        (``time.monotonic()``), the endpoint's counters, the size of one
        event on the wire, and the txgraphsse module that was loaded.

Each event's data is the text ``{"n":<k>,"pad":"xx…"}`` of ``size`` bytes
(``k`` counts from 0), sent as text, so the readers check order by ``n``.

Run: python bench/servers/lag_server.py [--port 0] [--history 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attrs
from _common import ready, twisted_quiet, twisted_site
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request

import txgraphsse
from txgraphsse import (
    ChannelSpec,
    Limits,
    SSEBackend,
    SSEEndpoint,
    SSESite,
    encode_event,
)

CHANNEL = "news"


def event_data(n: int, size: int) -> str:
    """
    The data of event C{n}: C{{"n":n,"pad":"xx…"}}, C{size} characters.
    """
    head = f'{{"n":{n},"pad":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


class Control(Resource):
    isLeaf = True

    def __init__(self, endpoint: SSEEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.sent = 0
        self.count = 0
        self.size = 1024
        self.per_tick = 0
        self.notice_every = 0
        self.ticks = 0
        self.notices = 0
        self.started: float | None = None
        self.finished: float | None = None

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read())
        scenario = body["scenario"]
        answer: dict[str, Any] = {"ok": True}
        if scenario == "burst":
            if self.started is not None:
                request.setResponseCode(409)
                answer = {"ok": False, "error": "one burst per server"}
            else:
                self.count = int(body.get("count", 10_000))
                self.size = int(body.get("size", 1024))
                rate = float(body.get("rate", 10_000))
                interval = float(body.get("interval", 0.01))
                self.per_tick = int(body.get("per_tick", 0))
                self.notice_every = int(body.get("notice_every", 0))
                self.started = time.monotonic()
                self._tick(rate, interval)
        elif scenario == "status":
            sample = encode_event(
                event_data(self.count or 10_000, self.size), CHANNEL, "0000.10000"
            )
            answer.update(
                sessions=len(self.endpoint.sessions),
                sent=self.sent,
                notices=self.notices,
                started=self.started,
                finished=self.finished,
                counters=attrs.asdict(self.endpoint.counters),
                event_bytes=len(sample),
                txgraphsse=os.path.dirname(os.path.abspath(txgraphsse.__file__)),
            )
        else:
            request.setResponseCode(400)
            answer = {"ok": False}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()

    def _tick(self, rate: float, interval: float) -> None:
        assert self.started is not None
        due = min(self.count, math.ceil((time.monotonic() - self.started) * rate))
        due = max(due, min(self.count, self.sent + 1))
        if self.per_tick:
            due = min(due, self.sent + self.per_tick)
        news = self.endpoint.channels[CHANNEL]
        self.ticks += 1
        if self.notice_every and self.ticks % self.notice_every == 0:
            self.endpoint.send(f"notice {self.notices}")
            self.notices += 1
        while self.sent < due:
            news.broadcast(event_data(self.sent, self.size))
            self.sent += 1
        if self.sent < self.count:
            reactor.callLater(interval, self._tick, rate, interval)  # type: ignore[attr-defined]
        else:
            self.finished = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--keepalive", type=float, default=15.0)
    args = parser.parse_args()
    twisted_quiet()
    backend = SSEBackend(reactor)
    limits = Limits(max_connecting_per_address=None, max_connecting=None)
    endpoint = backend.setup_sse(
        "/sse",
        channels=[ChannelSpec(CHANNEL, history=args.history)],
        limits=limits,
        keepalive=args.keepalive,
    )
    root = Resource()
    root.putChild(b"sse", endpoint.resource)
    root.putChild(b"control", Control(endpoint))
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port,
        twisted_site(root, base=SSESite, limits=limits, reactor=reactor),
        backlog=args.backlog,
        interface=args.host,
    )
    ready(port.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
