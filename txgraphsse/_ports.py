# -*- test-case-name: tests.test_workers -*-
"""
The TCP ports that C{twistd graphsse --workers N} shares among its workers.

In the parent: which C{--port} descriptions can be shared (L{parse_tcp}),
and the listening sockets bound for them (L{bind_all}).  Where the kernel has
C{SO_REUSEPORT} (Linux), the parent binds one socket per worker slot, all on
the same port, so that the kernel spreads connections evenly over the
workers; a slot's socket outlives its worker, so connections that arrive
while a worker restarts wait in its backlog instead of being refused.
Elsewhere every worker accepts on one shared socket.

In a worker: L{AdoptedPort}, the service that serves a socket inherited from
the parent.

This module owns sockets only: it never starts a process, never reads the
command line beyond a port's description, and never imports the tap or
anything that serves a request.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.protocol import ServerFactory

__all__ = ["REUSE_PORT", "AdoptedPort", "TCPPort", "bind_all", "parse_tcp"]

#: Whether each worker slot can have its own socket on a shared port.
REUSE_PORT = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


@frozen
class TCPPort:
    """
    A listening TCP port, from a C{tcp:} strports description.

    @ivar port: the port number (0: any free one, the same for every slot).
    @ivar interface: the address to bind (empty: every IPv4 address).
    @ivar backlog: the listen queue's length.
    """

    port: int
    interface: str = ""
    backlog: int = 50

    @property
    def family(self) -> socket.AddressFamily:
        """
        IPv6 for an interface with a colon in it, else IPv4.
        """
        return socket.AF_INET6 if ":" in self.interface else socket.AF_INET


def _split(description: str) -> list[str]:
    # strports: fields separated by ":", with "\:" an escaped colon.
    parts = [""]
    escaped = False
    for char in description:
        if escaped:
            parts[-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("")
        else:
            parts[-1] += char
    return parts


def parse_tcp(description: str) -> TCPPort:
    """
    The L{TCPPort} of a C{tcp:PORT[:interface=ADDRESS][:backlog=N]} strports
    description (a bare number is a TCP port too).

    @raise ValueError: for any other kind of port.
    """
    if description.isdigit():
        description = f"tcp:{description}"
    kind, *fields = _split(description)
    if kind != "tcp":
        raise ValueError(
            f"workers share TCP ports only (tcp:PORT[:interface=...]),"
            f" not {description!r}"
        )
    values: dict[str, str] = {}
    positional = ["port"]
    for item in fields:
        name, equals, value = item.partition("=")
        if not equals:
            if not positional:
                raise ValueError(f"too many fields in {description!r}")
            name, value = positional.pop(0), item
        elif name in positional:
            positional.remove(name)
        if name not in ("port", "interface", "backlog") or name in values:
            raise ValueError(f"bad field {name!r} in {description!r}")
        values[name] = value
    try:
        port = int(values["port"])
        backlog = int(values.get("backlog", "50"))
    except (KeyError, ValueError):
        raise ValueError(f"bad port or backlog in {description!r}") from None
    if not 0 <= port <= 65535 or backlog < 1:
        raise ValueError(f"bad port or backlog in {description!r}")
    return TCPPort(port, values.get("interface", ""), backlog)


def _bind(spec: TCPPort, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        default = "::" if spec.family == socket.AF_INET6 else ""
        sock.bind((spec.interface or default, port))
        sock.listen(spec.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_all(
    specs: Sequence[TCPPort], count: int, reuse_port: bool
) -> list[list[socket.socket]]:
    """
    Bind every port of C{specs}, listening and non-blocking: with
    C{reuse_port}, C{count} sockets per port (one per worker slot, all on
    the port the first got), else one.  If any bind fails, those already
    bound are closed.

    @return: per port, its sockets.
    """
    bound: list[list[socket.socket]] = []
    try:
        for spec in specs:
            first = _bind(spec, spec.port, reuse_port)
            socks = [first]
            if reuse_port:
                port = first.getsockname()[1]
                socks.extend(_bind(spec, port, True) for _ in range(1, count))
            bound.append(socks)
    except BaseException:
        for socks in bound:
            for sock in socks:
                sock.close()
        raise
    return bound


class AdoptedPort(Service):
    """
    A listening socket inherited from the parent, served by C{factory} once
    C{ready} fires: until then, connections wait in the socket's backlog.
    """

    def __init__(
        self,
        reactor: IReactorSocket,
        fd: int,
        family: int,
        factory: ServerFactory[Any],
        ready: Deferred[None],
    ) -> None:
        self._reactor = reactor
        self._fd: int | None = fd
        self._family = socket.AddressFamily(family)
        self._factory = factory
        self._ready = ready
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._ready.addCallback(self._adopt)

    def _adopt(self, _: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None or not self.running:
            return
        self.port = self._reactor.adoptStreamPort(fd, self._family, self._factory)
        # The reactor keeps a duplicate; the inherited one is not needed.
        os.close(fd)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)
