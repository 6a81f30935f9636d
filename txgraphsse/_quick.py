# -*- test-case-name: tests.test_quick -*-
"""
The quick way in: a back-channel C{POST} read whole from a connection's
bytes, answered without Twisted's general request machinery.

A call is the thing this server does most that costs most: through
C{twisted.web} every one builds a full C{Request}, parses its headers into
C{Headers}, its content type, its path twice, formats a C{Date} and a
C{Server} header, and walks the resource tree.  For the plainest and
commonest request, a keep-alive C{POST} of a JSON message with a
C{Content-Length} to a resource that says it takes them this way
(L{quick_resource}), the channel instead hands its head and body to
L{QuickRequest}, which offers the resource the part of C{Request} its
C{POST} path reads and writes, and writes the answer in one send.

Anything else, or anything unusual about it (chunked, C{Expect}, a
repeated or folded header, HTTP/1.0, a query, an escaped path, a resource
that does not take quick requests), goes the ordinary way, untouched: a
quick request is never a different answer, only a cheaper one.  This module
knows HTTP/1.1 heads and resources by their C{children}; never endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from io import BytesIO
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

__all__ = ["Head", "QuickRequest", "parse_head", "quick_resource"]

_POST = b"POST"
_HTTP11 = b"HTTP/1.1"
#: Headers whose presence sends a request the ordinary way.
_ORDINARY = (b"transfer-encoding", b"expect", b"upgrade")


class Head:
    """
    The parts of a request's head that a quick request needs.

    @ivar path: the request's path, which has no query and no escapes.
    @ivar headers: its headers, by lower-case name; none is repeated.
    @ivar length: its C{Content-Length}.
    """

    __slots__ = ("headers", "length", "path")

    def __init__(self, path: bytes, headers: dict[bytes, bytes], length: int) -> None:
        self.path = path
        self.headers = headers
        self.length = length


def parse_head(head: bytes) -> Head | None:
    """
    The L{Head} of C{head} (a request's bytes up to, not with, the blank
    line) if it is a quick request's, else L{None}.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != _POST or parts[2] != _HTTP11:
        return None
    path = parts[1]
    if not path.startswith(b"/") or b"?" in path or b"%" in path:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[0] in b" \t":
            return None
        key = name.lower()
        if key in headers:
            return None
        headers[key] = value.strip()
    length = headers.get(b"content-length")
    if length is None or not length.isdigit() or b"host" not in headers:
        return None
    if any(name in headers for name in _ORDINARY):
        return None
    return Head(path, headers, int(length))


def quick_resource(root: Any, path: bytes) -> Any:
    """
    The resource at C{path} below C{root} if it takes quick requests (its
    C{quick_post} is true) and the way there is plain C{putChild}
    children, each found as C{Resource.getChildWithDefault} would;
    else L{None}.
    """
    node = root
    for segment in path[1:].split(b"/"):
        if (
            not isinstance(node, Resource)
            or node.isLeaf
            or type(node).getChildWithDefault is not Resource.getChildWithDefault
        ):
            return None
        node = node.children.get(segment)
        if node is None:
            return None
    return node if getattr(node, "quick_post", False) else None


class _Clock:
    """
    An RFC 9110 C{Date}, formatted once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = formatdate(now, usegmt=True).encode("ascii")
        return self._text


_clock = _Clock()


class QuickRequest:
    """
    A C{POST} read whole, as its resource sees it: the part of
    C{twisted.web.server.Request} that a resource's C{POST} path uses.

    @ivar code: the status of the answer.
    @ivar finished: whether the answer has been written.
    """

    method = _POST
    clientproto = _HTTP11
    postpath: list[bytes] = []
    prepath: list[bytes] = []
    args: dict[bytes, list[bytes]] = {}

    def __init__(
        self,
        head: Head,
        body: bytes,
        channel: Any,
        done: Callable[[QuickRequest], None],
    ) -> None:
        self.uri = self.path = head.path
        self._head = head.headers
        self.content = BytesIO(body)
        self.channel = channel
        self.code = 200
        self.sentLength = 0
        self.finished = False
        self._out: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._done = done
        self._finish_waiters: list[Deferred[None]] | None = None
        self._requestHeaders: Headers | None = None

    # What the resource reads

    def getHeader(self, name: bytes) -> bytes | None:
        return self._head.get(name.lower())

    @property
    def requestHeaders(self) -> Headers:
        if self._requestHeaders is None:
            self._requestHeaders = Headers(
                {name: [value] for name, value in self._head.items()}
            )
        return self._requestHeaders

    def getClientAddress(self) -> IPv4Address | IPv6Address:
        peer: IPv4Address | IPv6Address = self.channel.transport.getPeer()
        return peer

    def isSecure(self) -> bool:
        return ISSLTransport.providedBy(self.channel.transport)

    # What it writes

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self._out[name.lower()] = value

    def write(self, data: bytes) -> None:
        self._body.append(data)

    def notifyFinish(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self._finish_waiters is None:
            self._finish_waiters = []
        self._finish_waiters.append(waiter)
        return waiter

    def render(self, resource: Any) -> None:
        """
        Have C{resource} answer: at once, or later through L{finish}.
        """
        body = resource.render(self)
        if body is not NOT_DONE_YET:
            self.write(body)
            self.finish()

    def finish(self) -> None:
        """
        Write the answer in one send: the status line, the headers set, a
        C{Content-Length} and a C{Date}, and the body.
        """
        if self.finished:
            return
        self.finished = True
        body = b"".join(self._body)
        self.sentLength = len(body)
        head = [
            b"HTTP/1.1 %d %s" % (self.code, RESPONSES.get(self.code, b"Unknown")),
            b"date: " + _clock.date(),
        ]
        self._out[b"content-length"] = b"%d" % len(body)
        head.extend(name + b": " + value for name, value in self._out.items())
        close = self.getHeader(b"connection") == b"close"
        if close:
            head.append(b"connection: close")
        transport = self.channel.transport
        if transport is not None:
            transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self._notify(None)
        self._done(self)
        if close:
            # The channel's own: it lets go of the transport as its
            # producer first, which TLS waits for before it closes.
            self.channel.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        """
        The connection went before the answer: what waits is told.
        """
        if not self.finished:
            self.finished = True
            self._notify(reason)

    def _notify(self, reason: Any) -> None:
        waiters, self._finish_waiters = self._finish_waiters or [], None
        for waiter in waiters:
            if reason is None:
                waiter.callback(None)
            else:
                waiter.errback(reason)
