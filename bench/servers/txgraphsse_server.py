"""
The txgraphsse bench server: the library as an application uses it.

Features stay on while measured: JSON messages through ``endpoint.send``
(the default channel's broadcast), event ids and history (``--history``,
1000 events by default), session ids (``setId``), keep-alive, the
back-channel with the built-in ``echo`` route, and server-to-client calls
through ``endpoint.run``.  It is served by ``SSESite``, as ``twistd
graphsse`` serves it, with the caps on connections that are not streams yet
lifted: the load client opens every stream from one address, up to 1,000
handshakes at a time, which the default per-address cap (256) would refuse.

Run: python bench/servers/txgraphsse_server.py [--port 0]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    arguments,
    payload,
    ready,
    twisted_quiet,
    twisted_site,
)
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Request

from txgraphsse import Limits, SSEBackend, SSEEndpoint, SSESite


class Control(Resource):
    isLeaf = True

    def __init__(self, endpoint: SSEEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.calling = False
        self.calls_done = 0

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read())
        scenario = body["scenario"]
        endpoint = self.endpoint
        size = int(body.get("size", 64))
        answer: dict[str, Any] = {"ok": True, "sessions": len(endpoint.sessions)}
        if scenario == "burst":
            for _ in range(int(body.get("count", 20))):
                endpoint.send(payload(size))
        elif scenario == "sustained":
            ticks = int(float(body.get("rate", 5)) * float(body.get("duration", 5)))
            sent = [0]

            def tick() -> None:
                endpoint.send(payload(size))
                sent[0] += 1
                if sent[0] >= ticks:
                    loop.stop()

            loop = LoopingCall(tick)
            loop.start(1.0 / float(body.get("rate", 5)), now=True)
        elif scenario == "targeted":
            for sid in list(endpoint.sessions):
                endpoint.send(payload(size), session_id=sid)
        elif scenario == "calls_s2c":
            self.calling = True
            self.calls_done = 0
            for sid in list(endpoint.sessions):
                self._call(sid, 0)
        elif scenario == "stop":
            self.calling = False
            answer["calls"] = self.calls_done
        else:
            request.setResponseCode(400)
            answer = {"ok": False}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()

    def _call(self, sid: str, n: int) -> None:
        if not self.calling or sid not in self.endpoint.sessions:
            return
        d = self.endpoint.run("echo", [n], session_id=sid)

        def done(result: Any) -> None:
            self.calls_done += 1
            self._call(sid, n + 1)

        d.addCallbacks(done, lambda f: None)  # type: ignore[union-attr]


def main() -> None:
    args = arguments()
    twisted_quiet()
    backend = SSEBackend(reactor)
    limits = Limits(max_connecting_per_address=None, max_connecting=None)
    # No line per stream opened and closed, as the peers' servers here write
    # no access log (twisted_site drops Site.log).
    endpoint = backend.setup_sse(
        "/sse", history=args.history, limits=limits, log_streams=False
    )
    root = Resource()
    root.putChild(b"sse", endpoint.resource)
    root.putChild(b"control", Control(endpoint))
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port,
        twisted_site(root, args.nodelay, base=SSESite, limits=limits, reactor=reactor),
        backlog=args.backlog,
        interface=args.host,
    )
    ready(port.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
