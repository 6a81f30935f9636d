# -*- test-case-name: tests.test_client -*-
"""
The Python client of txgraphsse: L{EventSource}, a browser-like
C{text/event-stream} reader, and L{GraphSSEClient}, the graphscript client
side (its C{EventSourceInfo}) with calls both ways; and L{ServerAPI}, the
server API (publish, call, presence, history, disconnect) for backends.

This module is the client's public face; the work is done in the private
package C{txgraphsse._client} (its C{__init__} says which module owns
what).  The client shares only the wire modules with the server (the
parser, the envelopes, the encoder and the route rule) and never imports
the server's modules, so it can be used against any txgraphsse (or
graphscript) server.  For example::

    from txgraphsse.client import GraphSSEClient

    client = GraphSSEClient()

    @client.route()
    def add(a, b):
        return a + b

    connection = await client.connect("http://127.0.0.1:8080/sse")
    assert await connection.run("ping") == "pong"
    await client.terminate()
"""

from __future__ import annotations

from ._client._api import ServerAPI
from ._client._connection import Connection
from ._client._graph import GraphSSEClient, Handler
from ._client._http import RemoteError, ResponseTooLarge
from ._client._routes import UnknownRoute
from ._client._source import (
    ClientClosed,
    EventHandler,
    EventSource,
    IdleTimeout,
    ReadyState,
)
from ._parser import ServerSentEvent

__all__ = [
    "ClientClosed",
    "Connection",
    "EventHandler",
    "EventSource",
    "GraphSSEClient",
    "Handler",
    "IdleTimeout",
    "ReadyState",
    "RemoteError",
    "ResponseTooLarge",
    "ServerAPI",
    "ServerSentEvent",
    "UnknownRoute",
]
