"""
A chat room server on txgraphsse, in a Klein app.

Run it::

    python examples/chat/app.py --port 8080

then open http://127.0.0.1:8080/ in two windows (or
http://127.0.0.1:8080/?room=python&name=Ada to pick a room and a name).

  - Rooms are channels of the endpoint (L{ROOMS}); a page joins one with
    C{openSSE({channels: [room]})}, and a message said in a room is
    broadcast on its channel only.
  - History on join: a page that opens a stream without C{Last-Event-ID}
    (a newcomer) is pushed the room's last L{RECENT} messages as one
    C{history} event; a page whose stream reconnects sends the browser's
    C{Last-Event-ID} and gets what it missed from the channel's history.
  - Names per session: the route C{set_name} stores the name in the
    session's C{state} through the C{caller} keyword parameter, and C{say}
    signs each message with it.

The page is C{static/index.html} with C{static/chat.js}, which loads the
client from C{/sse/client.js}.  C{--interface 0.0.0.0} listens on every
interface.  Ctrl-C sends every stream a last C{shutdown} event.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTCP
from twisted.internet.task import react
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from twisted.web.static import File

from txgraphsse import Caller, ProtocolError, SSEBackend, SSEClient, SSEEndpoint

__all__ = ["RECENT", "ROOMS", "ChatApp", "main"]

#: The rooms: one channel each.
ROOMS = ("lobby", "python", "twisted")
#: Messages a room keeps for newcomers (and for replay on reconnection).
RECENT = 50
#: The longest name and message, in characters.
MAX_NAME = 32
MAX_TEXT = 500

STATIC = Path(__file__).resolve().parent / "static"


class ChatApp:
    """
    The chat: a Klein app with the page at C{/}, its files at C{/static/},
    and the endpoint at C{/sse}.

    @ivar endpoint: the SSE endpoint; its channels are the rooms.
    @ivar recent: each room's last messages, oldest first.
    """

    app = Klein()

    def __init__(self, backend: SSEBackend, recent: int = RECENT) -> None:
        self.endpoint: SSEEndpoint = backend.setup_sse(
            "/sse",
            channels=ROOMS,
            history=recent,
            on_connection=self.joined,
        )
        self.recent: dict[str, deque[dict[str, Any]]] = {
            room: deque(maxlen=recent) for room in ROOMS
        }
        backend.add_route("set_name", self.set_name)
        backend.add_route("say", self.say)
        backend.add_route("rooms", self.rooms)

    # Pages

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """
        The chat page.
        """
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (STATIC / "index.html").read_bytes()

    @app.route("/static/", branch=True, methods=["GET"])
    def static(self, request: IRequest) -> IResource:
        """
        The page's script and style.
        """
        return File(str(STATIC))

    @app.route("/sse", branch=True)
    def sse(self, request: IRequest) -> IResource:
        """
        The stream (C{GET}), calls (C{POST}) and the browser client
        (C{/sse/client.js}).
        """
        return self.endpoint.resource

    # The endpoint's callback

    def joined(
        self,
        client: SSEClient,
        endpoint: SSEEndpoint,
        session_id: str,
        request: Request,
    ) -> None:
        """
        A stream opened: a newcomer gets its rooms' recent messages.  A
        stream that reconnects (it sent C{Last-Event-ID}) gets what it missed
        from the channels' history instead, before any live message.
        """
        if client.last_event_id is not None:
            return
        for room in _rooms_of(client):
            client.push({"room": room, "messages": list(self.recent[room])}, "history")

    # Routes

    def set_name(self, name: str, *, caller: Caller) -> str:
        """
        Name the calling session: its messages are signed with the name.

        @return: the name as it is kept (trimmed, at most L{MAX_NAME}).
        """
        session = _session(caller)
        name = " ".join(str(name).split())[:MAX_NAME]
        if not name:
            raise ProtocolError(400, "bad_message", "a name cannot be empty")
        session.state["name"] = name
        return name

    def say(self, room: str, text: str, *, caller: Caller) -> dict[str, Any]:
        """
        Say C{text} in C{room}, which the calling session must have joined.

        @return: the message as it was broadcast.
        """
        session = _session(caller)
        if room not in _rooms_of(session):
            raise ProtocolError(403, "forbidden", f"join #{room} to talk there")
        text = str(text).strip()[:MAX_TEXT]
        if not text:
            raise ProtocolError(400, "bad_message", "say something")
        message = {
            "room": room,
            "name": session.state.get("name") or f"guest-{session.id[:4]}",
            "text": text,
            "at": int(time.time() * 1000),
        }
        self.recent[room].append(message)
        self.endpoint.channels[room].broadcast(message)
        return message

    def rooms(self) -> list[dict[str, Any]]:
        """
        The rooms and how many streams are in each.
        """
        return [
            {"room": room, "members": self.endpoint.channels[room].session_count}
            for room in ROOMS
        ]


def _session(caller: Caller) -> SSEClient:
    session = caller.session
    if session is None:
        raise ProtocolError(403, "forbidden", "open a stream first")
    return cast(SSEClient, session)


def _rooms_of(client: SSEClient) -> list[str]:
    return [room for room in ROOMS if room in client.channels]


def main(reactor: IReactorTCP, argv: Sequence[str]) -> Deferred[None]:
    """
    Serve the chat until the reactor stops.
    """
    parser = argparse.ArgumentParser(description="txgraphsse chat (Klein)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="address")
    args = parser.parse_args(list(argv))
    backend = SSEBackend()
    chat = ChatApp(backend)
    port = reactor.listenTCP(
        args.port, Site(chat.app.resource()), interface=args.interface
    )
    core = cast(IReactorCore, reactor)
    # Ctrl-C or SIGTERM: every stream gets a last `shutdown` event.
    core.addSystemEventTrigger("before", "shutdown", backend.shutdown)
    host = port.getHost()
    print(f"chat on http://{host.host}:{host.port}/ (Ctrl-C to stop)", flush=True)  # type: ignore[attr-defined]
    return Deferred()


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
