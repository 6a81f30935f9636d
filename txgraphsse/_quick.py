# -*- test-case-name: tests.test_quick -*-
"""
The quick way in: a back-channel C{POST} read whole from a connection's
bytes, or a stream's C{GET}, answered without Twisted's general request
machinery.

A call is the thing this server does most that costs most: through
C{twisted.web} every one builds a full C{Request}, parses its headers into
C{Headers}, its content type, its path twice, formats a C{Date} and a
C{Server} header, and walks the resource tree; so does every stream that
opens.  For the plainest and commonest requests, a keep-alive C{POST} of a
JSON message with a C{Content-Length}, or a C{GET} without a body, to a
resource that says it takes them this way (L{quick_resource}), the channel
instead hands its head and body to L{QuickRequest}, which offers the
resource the part of C{Request} its C{POST} and C{GET} paths read and
write.  A C{POST}'s answer goes in one send; a C{GET}'s (a stream) goes as
Twisted's would, its head at the first write and the rest chunk-framed.

Anything else, or anything unusual about it (chunked, C{Expect}, a
repeated or folded header, HTTP/1.0, a query on a C{POST}, an escaped path,
a resource that does not take quick requests), goes the ordinary way,
untouched: a quick request is never a different answer, only a cheaper
one.  This module knows HTTP/1.1 heads and resources by their C{children};
never endpoints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import formatdate
from io import BytesIO
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.web.http import RESPONSES, parse_qs
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ._internals import direct_transport, write_direct

__all__ = ["Head", "QuickRequest", "parse_head", "quick_resource"]

_POST = b"POST"
_GET = b"GET"
_HTTP11 = b"HTTP/1.1"
#: The attribute by which a resource says it takes a method's quick requests.
_TAKES = {_POST: "quick_post", _GET: "quick_get"}

#: The header lines of a quick request's head, each after its CRLF: a
#: token (RFC 9110's tchar), a colon right after it, then a value without
#: control characters other than tab.  Anything else (a space before the
#: colon, a folded line) goes the ordinary way, to be judged there.
_HEADER_LINES = re.compile(
    rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*"
)


class Head:
    """
    The parts of a request's head that a quick request needs.

    @ivar method: C{POST} or C{GET}.
    @ivar uri: the request's target as it came.
    @ivar path: its path, which has no escapes.
    @ivar query: its query (a C{GET}'s only), without the C{?}.
    @ivar headers: its headers, by lower-case name; none is repeated.
    @ivar length: its C{Content-Length} (a C{GET}'s is 0).
    """

    __slots__ = ("headers", "length", "method", "path", "query", "uri")

    def __init__(
        self,
        path: bytes,
        headers: dict[bytes, bytes],
        length: int,
        method: bytes = _POST,
        query: bytes = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.uri = path + b"?" + query if query else path
        self.headers = headers
        self.length = length


def parse_head(head: bytes) -> Head | None:
    """
    The L{Head} of C{head} (a request's bytes up to, not with, the blank
    line) if it is a quick request's, else L{None}.
    """
    first = head.find(b"\r\n")
    if first < 0:
        first = len(head)
    parts = head[:first].split(b" ")
    if len(parts) != 3 or parts[0] not in _TAKES or parts[2] != _HTTP11:
        return None
    method = parts[0]
    path, _, query = parts[1].partition(b"?")
    if (
        not path.startswith(b"/")
        or b"%" in path
        or (method == _POST and parts[1] != path)
        or _HEADER_LINES.fullmatch(head, first) is None
    ):
        return None
    # Every line has its colon (the pattern says so); one seen twice makes
    # fewer names than lines, and goes the ordinary way.
    lines = head[first + 2 :].split(b"\r\n") if first < len(head) else []
    headers = {
        name.lower(): value.strip()
        for name, value in (line.split(b":", 1) for line in lines)
    }
    if len(headers) != len(lines):
        return None
    length = headers.get(b"content-length")
    if method == _GET:
        # A stream's request has no body.
        if length not in (None, b"0"):
            return None
        length = b"0"
    if length is None or not length.isdigit() or b"host" not in headers:
        return None
    if b"transfer-encoding" in headers or b"expect" in headers or b"upgrade" in headers:
        # Framing or handshakes the quick path does not do.
        return None
    return Head(path, headers, int(length), method, query)


def quick_resource(
    root: Any, path: bytes, method: bytes = _POST
) -> tuple[Any, list[bytes]] | None:
    """
    The resource at C{path} below C{root} and the segments left for it
    (its C{postpath}), if it takes quick requests of C{method} (its
    C{quick_post} or C{quick_get} is true) and the way there is plain
    C{putChild} children, each found as C{Resource.getChildWithDefault}
    would; else L{None}.  Segments are left only for a leaf that says it
    takes them (its C{quick_below} is true): any other must be at the end.
    """
    node = root
    segments = path[1:].split(b"/")
    for index, segment in enumerate(segments):
        if (
            not isinstance(node, Resource)
            or node.isLeaf
            or type(node).getChildWithDefault is not Resource.getChildWithDefault
        ):
            if index and getattr(node, "quick_below", False):
                rest = segments[index:]
                return (node, rest) if getattr(node, _TAKES[method], False) else None
            return None
        node = node.children.get(segment)
        if node is None:
            return None
    return (node, []) if getattr(node, _TAKES[method], False) else None


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


class _ResponseHeaders(dict[bytes, bytes]):
    """
    The headers of a quick request's answer, by lower-case name.
    """

    def hasHeader(self, name: bytes) -> bool:
        return name.lower() in self


class QuickRequest:
    """
    A C{POST} read whole, or a C{GET}, as its resource sees it: the part of
    C{twisted.web.server.Request} that a resource's C{POST} and C{GET}
    paths use.

    A C{POST}'s answer is kept until L{finish}, then written in one send.
    A C{GET}'s goes as Twisted's does: its head at the first L{write} (with
    C{Transfer-Encoding: chunked}), what follows chunk-framed; a body the
    resource returns from C{render} is still sent whole, with its length.

    @ivar code: the status of the answer.
    @ivar finished: whether the answer has been written.
    @ivar chunked: whether the answer is going out chunk-framed.
    @ivar startedWriting: whether its head has gone out.
    """

    clientproto = _HTTP11
    postpath: list[bytes] = []
    prepath: list[bytes] = []

    def __init__(
        self,
        head: Head,
        body: bytes,
        channel: Any,
        done: Callable[[QuickRequest], None],
        streaming: Callable[[], None] | None = None,
        postpath: list[bytes] | None = None,
    ) -> None:
        if postpath:
            self.postpath = postpath
        self.method = head.method
        self.uri = head.uri
        self.path = head.path
        self._query = head.query
        self._args: dict[bytes, list[bytes]] | None = None
        self._head = head.headers
        self.content: BytesIO | None = BytesIO(body)
        self.channel = channel
        self.code = 200
        self.sentLength = 0
        self.finished = False
        self.chunked = False
        self.startedWriting = False
        self.responseHeaders: Any = _ResponseHeaders()
        self._close = self._head.get(b"connection") == b"close"
        if self._close:
            self.responseHeaders[b"connection"] = b"close"
        self._body: list[bytes] = []
        self._done = done
        self._streaming = streaming
        self._finish_waiters: list[Deferred[None]] | None = None
        self._requestHeaders: Headers | None = None

    # What the resource reads

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        """
        The query's arguments, as C{Request.args} has them.
        """
        if self._args is None:
            self._args = parse_qs(self._query, 1) if self._query else {}
        return self._args

    def getHeader(self, name: bytes) -> bytes | None:
        return self._head.get(name.lower())

    @property
    def requestHeaders(self) -> Headers:
        if self._requestHeaders is None:
            self._requestHeaders = Headers(
                {name: [value] for name, value in self._head.items()}
            )
        return self._requestHeaders

    def keep_headers(self, names: tuple[bytes, ...]) -> None:
        """
        Let go of the request's headers other than C{names}.
        """
        kept = {name.lower() for name in names}
        self._head = {k: v for k, v in self._head.items() if k in kept}
        self._requestHeaders = None

    def getClientAddress(self) -> IPv4Address | IPv6Address:
        peer: IPv4Address | IPv6Address = self.channel.peer()
        return peer

    def isSecure(self) -> bool:
        return ISSLTransport.providedBy(self.channel.transport)

    # What it writes

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders[name.lower()] = value

    def write(self, data: bytes) -> None:
        if self.method != _GET:
            # A POST's answer: sent whole.
            self._body.append(data)
            return
        if not self.startedWriting:
            self._start_stream()
        if data:
            self.sentLength += len(data)
            self.channel.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _start_stream(self) -> None:
        self.startedWriting = True
        self.chunked = True
        self.responseHeaders[b"transfer-encoding"] = b"chunked"
        self.channel.write(self._head_bytes())
        if self._streaming is not None:
            self._streaming()

    def _head_bytes(self) -> bytes:
        head = [
            b"HTTP/1.1 %d %s" % (self.code, RESPONSES.get(self.code, b"Unknown")),
            b"date: " + _clock.date(),
        ]
        head.extend(
            name + b": " + value for name, value in self.responseHeaders.items()
        )
        return b"\r\n".join(head) + b"\r\n\r\n"

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.channel.unregisterProducer()

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
            # What render returns goes whole, with its length, unless the
            # head has gone out already.
            if self.startedWriting:
                self.write(body)
            else:
                self._body.append(body)
            self.finish()

    def finish(self) -> None:
        """
        End the answer: a streamed one with its last chunk; else, in one
        send, the status line, the headers set, a C{Content-Length} and a
        C{Date}, and the body.
        """
        if self.finished:
            return
        self.finished = True
        transport = self.channel.transport
        if self.startedWriting:
            if transport is not None:
                transport.write(b"0\r\n\r\n")
        else:
            body = b"".join(self._body)
            self._body = []
            self.sentLength = len(body)
            self.responseHeaders[b"content-length"] = b"%d" % len(body)
            if transport is not None:
                data = self._head_bytes() + body
                # As a stream's events do: straight to a plain TCP socket
                # that holds nothing back, rather than a write turn later.
                direct = direct_transport(transport)
                if direct is not None:
                    data = write_direct(direct, data)
                if data:
                    transport.write(data)
        self._notify(None)
        self._done(self)
        if self._close:
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
