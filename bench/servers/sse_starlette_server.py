"""
The sse-starlette bench server: Starlette + sse-starlette's
EventSourceResponse under uvicorn with uvloop and httptools (what
``uvicorn[standard]`` runs), one process.  sse-starlette's documented way to
reach many clients: an asyncio.Queue per client that its event generator
reads; a broadcast puts the event in every queue.

Run: python bench/servers/sse_starlette_server.py [--port 0]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn
from _common import arguments, payload_text, ready
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

queues: dict[int, asyncio.Queue[str]] = {}
_next = [0]


async def stream(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    _next[0] += 1
    key = _next[0]
    queues[key] = queue

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                data = await queue.get()
                yield {"data": data}
        finally:
            queues.pop(key, None)

    return EventSourceResponse(events())


def broadcast(data: str) -> None:
    for queue in list(queues.values()):
        queue.put_nowait(data)


async def control(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    scenario = body["scenario"]
    size = int(body.get("size", 64))
    if scenario == "burst":
        for _ in range(int(body.get("count", 20))):
            broadcast(payload_text(size))
    elif scenario == "sustained":
        rate = float(body.get("rate", 5))
        ticks = int(rate * float(body.get("duration", 5)))

        async def run() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(ticks):
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                broadcast(payload_text(size))

        asyncio.get_running_loop().create_task(run())
    elif scenario == "targeted":
        for key in list(queues):
            queue = queues.get(key)
            if queue is not None:
                queue.put_nowait(payload_text(size))
    else:
        return JSONResponse({"ok": False}, status_code=400)
    return JSONResponse({"ok": True, "sessions": len(queues)})


app = Starlette(
    routes=[
        Route("/sse", stream, methods=["GET"]),
        Route("/control", control, methods=["POST"]),
    ]
)


def main() -> None:
    args = arguments()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(args.backlog)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=args.backlog,
        timeout_keep_alive=3600,
    )
    ready(sock.getsockname()[1])
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
