"""
Python server and Python client calling each other over SSE and POST.

Run: C{python examples/python_calls.py}

It starts a server on a free port of 127.0.0.1 and a Python client in the
same process; they call each other's routes, subscribe to each other's
outputs, print what they get, and exit.  Nothing here is in-memory: the two
talk over a real socket, as two machines would.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.task import deferLater, react
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgraphsse import SSEBackend
from txgraphsse.client import GraphSSEClient


def say(*parts: Any) -> None:
    print(*parts, flush=True)


async def main(reactor: Any) -> None:
    # The server: two routes of its own.
    backend = SSEBackend(reactor)
    backend.add_route("add", lambda a, b: a + b)
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return ticks[0]

    backend.add_route("tick", tick)
    endpoint = backend.setup_sse("/sse")
    root = Resource()
    root.putChild(b"sse", endpoint.resource)
    site = Site(root)
    site.log = lambda request: None  # type: ignore[method-assign]
    tcp: IReactorTCP = reactor
    port = tcp.listenTCP(0, site, interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/sse"  # type: ignore[attr-defined]
    say("server listening at", url)

    # The client: routes the server may call.
    counted = [0]

    def count() -> int:
        counted[0] += 1
        return counted[0]

    client = GraphSSEClient(reactor, routes={"double": lambda x: 2 * x, "count": count})
    conn = await client.connect(url)
    say("client session", conn.session_id[:8] if conn.session_id else None)

    # Client calls server.
    say("client: add(2, 3) ->", await conn.run("add", [2, 3]))
    # Server calls client.
    answer = endpoint.run("double", [21], session_id=conn.session_id)
    assert isinstance(answer, Deferred)
    say("server: double(21) ->", await answer)

    # Client subscribes to a server route: every run of it reaches the client.
    tick_updates: list[Any] = []
    await conn.subscribe("tick", tick_updates.append)
    for _ in range(3):
        await backend.call("tick")
    # Server subscribes to a client route: every run of it reaches the server.
    count_updates: list[Any] = []
    subscribed = endpoint.subscribe(
        "count", count_updates.append, session_id=conn.session_id
    )
    assert isinstance(subscribed, Deferred)
    await subscribed
    for _ in range(3):
        await client.call_local("count")

    clock: IReactorTime = reactor
    for _ in range(200):
        if len(tick_updates) == 3 and len(count_updates) == 3:
            break
        await deferLater(clock, 0.01, lambda: None)
    say("client got tick updates:", tick_updates)
    say("server got count updates:", count_updates)

    await client.terminate()
    await endpoint.shutdown()
    await port.stopListening()
    if tick_updates != [1, 2, 3] or count_updates != [1, 2, 3]:
        raise SystemExit("subscriptions did not deliver every update")
    say("done")


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor)))
