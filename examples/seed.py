"""
The seed's C{setupSSE} example (graphscript's SSEbackend docs), in Python.

Run: C{python examples/seed.py} then C{curl -N localhost:8080/sse?channels=test}
"""

from __future__ import annotations

import sys

from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txgraphsse import SSEBackend, SSEClient, SSEEndpoint


def on_connection(
    client: SSEClient, endpoint: SSEEndpoint, session_id: str, request: Request
) -> None:
    print("pushing sse!")
    client.push("Hello from SSE!")
    host = request.getRequestHostname().decode()
    for name in ("test",):
        endpoint.channels[name].broadcast(
            f"SSE connection at {host}{request.uri.decode()}"
        )


def make_site(sse: SSEBackend) -> tuple[SSEEndpoint, Site]:
    endpoint = sse.setup_sse(
        path="/sse",
        channels=["test"],  # the default channel is "message"
        on_connection=on_connection,
    )
    root = Resource()
    root.putChild(b"sse", endpoint.resource)
    return endpoint, Site(root)


def main(reactor: IReactorTCP, port: str = "8080") -> object:
    from twisted.internet.defer import Deferred

    _, site = make_site(SSEBackend(reactor))  # type: ignore[arg-type]
    reactor.listenTCP(int(port), site)
    print(f"listening on http://localhost:{port}/sse")
    return Deferred()  # serve until interrupted


if __name__ == "__main__":
    react(main, sys.argv[1:])
