"""
The floor of doing nothing clever in Twisted: a plain twisted.web resource,
one ``request.write`` per session per event, no framework.

It speaks just enough of the graphsse wire for the same load client: a
``setId`` event when a stream opens, ``runRequest`` events for
server-to-client calls whose replies it matches in a dict, and a bare
``POST`` echo (``{"route":..,"args":[x]}`` answers ``{"args":x}``).

Run: python bench/servers/twisted_plain_server.py [--port 0]
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    arguments,
    payload_text,
    ready,
    twisted_quiet,
    twisted_site,
)
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

sessions: dict[str, Request] = {}
pending: dict[str, str] = {}  # callbackId -> session id
state = {"calling": False, "calls": 0}


def event(data: str) -> bytes:
    return b"data: " + data.encode() + b"\n\n"


class Stream(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        sid = secrets.token_urlsafe(16)
        sessions[sid] = request
        request.write(
            b"retry: 2000\n\n"
            + event(json.dumps({"route": "setId", "args": sid}, separators=(",", ":")))
        )
        request.notifyFinish().addBoth(lambda _: sessions.pop(sid, None))
        return NOT_DONE_YET

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read())
        cid = body.get("callbackId")
        if cid is not None:
            sid = pending.pop(cid, None)
            if sid is None or sid != body.get("sessionId"):
                request.setResponseCode(409)
                return b""
            request.setResponseCode(204)
            state["calls"] += 1
            call(sid)
            return b""
        args = body.get("args")
        if isinstance(args, list) and len(args) == 1:
            args = args[0]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"args": args}, separators=(",", ":")).encode()


def call(sid: str) -> None:
    request = sessions.get(sid)
    if not state["calling"] or request is None:
        return
    cid = secrets.token_urlsafe(16)
    pending[cid] = sid
    message = {"route": "echo", "args": [state["calls"]]}
    request.write(
        event(
            json.dumps(
                {"route": "runRequest", "args": [message, "/sse", cid, sid]},
                separators=(",", ":"),
            )
        )
    )


class Control(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = json.loads(request.content.read())
        scenario = body["scenario"]
        size = int(body.get("size", 64))
        answer: dict[str, Any] = {"ok": True, "sessions": len(sessions)}
        if scenario == "burst":
            for _ in range(int(body.get("count", 20))):
                data = event(payload_text(size))
                for r in list(sessions.values()):
                    r.write(data)
        elif scenario == "sustained":
            ticks = int(float(body.get("rate", 5)) * float(body.get("duration", 5)))
            sent = [0]

            def tick() -> None:
                data = event(payload_text(size))
                for r in list(sessions.values()):
                    r.write(data)
                sent[0] += 1
                if sent[0] >= ticks:
                    loop.stop()

            loop = LoopingCall(tick)
            loop.start(1.0 / float(body.get("rate", 5)), now=True)
        elif scenario == "targeted":
            for sid in list(sessions):
                r = sessions.get(sid)
                if r is not None:
                    r.write(event(payload_text(size)))
        elif scenario == "calls_s2c":
            state["calling"] = True
            state["calls"] = 0
            for sid in list(sessions):
                call(sid)
        elif scenario == "stop":
            state["calling"] = False
            answer["calls"] = state["calls"]
        else:
            request.setResponseCode(400)
            answer = {"ok": False}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


def main() -> None:
    args = arguments()
    twisted_quiet()
    root = Resource()
    root.putChild(b"sse", Stream())
    root.putChild(b"control", Control())
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port,
        twisted_site(root, args.nodelay),
        backlog=args.backlog,
        interface=args.host,
    )
    ready(port.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
