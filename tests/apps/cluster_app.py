"""
The routes the worker and cluster tests drive real nodes with: who serves a
request (C{pid}, C{node}), broadcasts and targeted pushes, server-to-client
calls and subscriptions, all started by a client's C{POST} that lands on
whichever node the load balancer picks.

Load it with C{twistd -n graphsse --app tests.apps.cluster_app:setup}.
"""

from __future__ import annotations

import os
from typing import Any

from txgraphsse import Caller, SSEBackend, SSEEndpoint

__all__ = ["setup"]


def _endpoint(caller: Caller) -> SSEEndpoint:
    endpoint = caller.endpoint
    assert isinstance(endpoint, SSEEndpoint)
    return endpoint


def setup(backend: SSEBackend) -> None:
    """
    Add the test routes to C{backend}.
    """
    #: Updates of client routes that this node subscribed to, by session.
    updates: dict[str, list[Any]] = {}

    @backend.route("pid")
    def pid() -> int:
        """
        The PID of the process that ran this route (with a C{sessionId}: the
        process holding that session, since the call is forwarded there).
        """
        return os.getpid()

    @backend.route("node")
    def node() -> str:
        """
        This process's broker node id.
        """
        return str(backend.broker.node_id)

    @backend.route("linked")
    def linked() -> bool:
        """
        Whether this process's broker is linked to its peers (always true
        for a broker that has none).
        """
        return bool(getattr(backend.broker, "connected", True))

    @backend.route("broadcast")
    async def broadcast(data: Any, *, caller: Caller) -> dict[str, Any]:
        """
        Send C{data} to every session of the endpoint, on every node; answer
        with this process's PID and the sessions it reached here, once the
        event has its place in the cluster's order (so a broadcast sent after
        this answer comes after it everywhere).
        """
        endpoint = _endpoint(caller)
        reached = endpoint.send(data)
        await endpoint.flushed()
        return {"pid": os.getpid(), "value": reached}

    @backend.route("push")
    def push(session_id: str, data: Any, *, caller: Caller) -> dict[str, Any]:
        """
        Send C{data} to one session, wherever it is held; answer with this
        process's PID and whether the session is open somewhere.
        """
        sent = _endpoint(caller).send(data, session_id=session_id)
        return {"pid": os.getpid(), "value": sent}

    @backend.route("ask")
    async def ask(
        session_id: str, route: str, args: Any, *, caller: Caller
    ) -> dict[str, Any]:
        """
        Run client route C{route} on session C{session_id} from this node;
        answer with this process's PID and what the client answered.
        """
        answer = await _endpoint(caller).run(route, args, session_id=session_id)
        return {"pid": os.getpid(), "value": answer}

    @backend.route("counter")
    def counter(value: Any) -> Any:
        """
        A route clients subscribe to: its output is its argument.
        """
        return value

    @backend.route("watch")
    def watch(route: str, *, caller: Caller) -> Any:
        """
        Subscribe this node to client route C{route} of the caller's session
        (a POST that names its session is forwarded to the node holding it).
        """
        session = caller.session
        assert session is not None, "watch needs a sessionId"
        sid = session.id
        seen = updates.setdefault(sid, [])
        return _endpoint(caller).subscribe(route, seen.append, session_id=sid)

    @backend.route("updates")
    def updates_of(*, caller: Caller) -> list[Any]:
        """
        The updates of the caller's session's watched routes, so far.
        """
        session = caller.session
        assert session is not None, "updates needs a sessionId"
        return updates.get(session.id, [])
