# -*- test-case-name: tests.test_inbound -*-
"""
The way in: a site whose HTTP/1.1 channel bounds every request as its
bytes arrive, before any resource sees it.

Twisted's own C{HTTPChannel} reads a whole request before dispatching it:
it spools a large body to a temporary file, resets its idle timer on every
byte however slowly they trickle, answers an over-long line by dropping the
connection, and lets one address open as many connections as it likes.
L{SSESite} serves its resources through L{GuardedChannel} and
L{GuardedRequest} instead, which apply an endpoint's L{Limits} where the
bytes arrive:

  - a request line over C{max_uri} is refused with C{414}, header lines
    over C{max_header_bytes} with C{431};
  - a declared C{Content-Length} over C{max_body} is refused with C{413}
    before one body byte is read, and a chunked body as soon as it passes
    the limit; bodies are kept in memory, never in a temporary file, and
    never parsed as forms;
  - a request's head must be whole within C{header_timeout} of its first
    byte, its body within C{body_timeout} of the head's end, whatever the
    trickle (C{408});
  - connections that are not streams are counted per client address and in
    all (C{max_connecting_per_address}, C{max_connecting}); one past either
    is refused as it opens, cheaply (C{503}, with C{Retry-After}).

A connection whose response is an event stream is no longer counted, and
no deadline touches it.  Every refusal is PROTOCOL.md's JSON error, written
on the connection before it closes.  This module knows HTTP/1.1 framing
and the limits, never endpoints, sessions or routes.
"""

from __future__ import annotations

import inspect
from io import BytesIO
from typing import Any, cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ._internals import negotiating_channel
from ._limits import Limits
from ._messages import error_body
from ._quick import QuickRequest, parse_head, quick_resource

__all__ = ["ConnectionGate", "GuardedChannel", "GuardedRequest", "SSESite"]

_log = Logger()

#: The reason phrases of the statuses a channel refuses with (RFC 9110).
_REASONS = {
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}

#: Whether Twisted's request takes C{parsePOSTFormSubmission} (newer
#: releases); older ones always parse form bodies.
_CAN_SKIP_FORMS = "parsePOSTFormSubmission" in inspect.signature(Request).parameters


class ConnectionGate:
    """
    How many connections of a site are not streams: per client address and
    in all.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._by_address: dict[str, int] = {}
        self.total = 0

    def admit(self, address: str) -> str | None:
        """
        Count one more connection from C{address}.

        @return: L{None} if it is admitted, else why it is not.
        """
        limits = self._limits
        if limits.max_connecting is not None and self.total >= limits.max_connecting:
            return "too many connections; retry later"
        trusted = limits.trusts(address)
        per_address = limits.max_connecting_per_address
        count = self._by_address.get(address, 0)
        if not trusted and per_address is not None and count >= per_address:
            return "too many connections from your address"
        self.total += 1
        self._by_address[address] = count + 1
        return None

    def leave(self, address: str) -> None:
        """
        One connection from C{address} is no longer counted.
        """
        self.total -= 1
        left = self._by_address.get(address, 0) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)

    def count(self, address: str) -> int:
        """
        How many connections from C{address} are counted.
        """
        return self._by_address.get(address, 0)


class GuardedRequest(Request):
    """
    A request whose body stays in memory and is counted as it arrives.
    """

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        if _CAN_SKIP_FORMS:
            kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(channel, *args, **kwargs)  # type: ignore[no-untyped-call]
        self._body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        # Twisted spools bodies of unknown or large length to a temporary
        # file; the channel refuses those over the limit as they come.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if isinstance(channel, GuardedChannel):
            if channel.refused:
                return
            self._body_bytes += len(data)
            if self._body_bytes > channel.limits.max_body:
                channel.refuse(
                    413,
                    "too_large",
                    f"the body is over {channel.limits.max_body} bytes",
                )
                return
        assert self.content is not None
        self.content.write(data)


class GuardedChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that applies its site's L{Limits} as bytes arrive.

    @ivar refused: whether the channel has refused a request and is closing.
    """

    _log = Logger()

    site: Site | None = None
    refused = False
    _address = ""
    _counted = False
    _streaming = False
    _awaiting_head = True
    _request_line = True
    _head_bytes = 0
    _head_timer: IDelayedCall | None = None
    _body_timer: IDelayedCall | None = None
    #: Whether this connection's requests may still be quick ones (see
    #: L{txgraphsse._quick}): until one is not, when the rest of the
    #: connection goes the ordinary way.
    _quick = True
    _quick_pending = b""
    _quick_request: QuickRequest | None = None
    _quick_reading = False
    _quick_paused = False
    _quick_timeout: float | None = None
    _peer: Any = None

    @property
    def limits(self) -> Limits:
        site = self.site
        return site.limits if isinstance(site, SSESite) else Limits()

    def _gate(self) -> ConnectionGate | None:
        site = self.site
        return site.gate if isinstance(site, SSESite) else None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        limits = self.limits
        # A line longer than either limit is refused before it is whole.
        self.MAX_LENGTH = max(limits.max_uri, limits.max_header_bytes) + 2
        # Twisted's own bound on a head (a 400 without a body) comes after
        # ours.
        self.totalHeadersSize = limits.max_uri + limits.max_header_bytes + 2
        # Plain TCP is counted as it opens, so that idle connections count
        # too.  Over TLS, the first bytes say whether the connection stays
        # HTTP/1.1 or becomes HTTP/2 (which this channel then never hears
        # from again): it is counted when they come.
        if not ISSLTransport.providedBy(self.transport):
            self._count()

    def _count(self) -> bool:
        """
        Count this connection with the site's gate, or refuse it.
        """
        gate = self._gate()
        if gate is None:
            return True
        peer = self.peer()
        self._address = str(getattr(peer, "host", peer))
        why = gate.admit(self._address)
        if why is not None:
            self.refuse(503, "unavailable", why)
            return False
        self._counted = True
        return True

    def peer(self) -> Any:
        """
        The transport's C{getPeer()}, asked once: a TCP transport makes a
        new address each time, and the quick requests of one connection
        each ask.
        """
        peer = self._peer
        if peer is None and self.transport is not None:
            peer = self._peer = self.transport.getPeer()
        return peer

    def _uncount(self) -> None:
        gate = self._gate()
        if self._counted and gate is not None:
            self._counted = False
            gate.leave(self._address)

    # Receiving

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        if self._awaiting_head and not self._counted and not self._count():
            return
        if self._quick:
            self._take_quick(data)
            return
        if self._awaiting_head:
            self._start_timer("_head_timer", self.limits.header_timeout, "head")
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    # Quick requests

    def _take_quick(self, data: bytes) -> None:
        """
        Answer the quick requests at the start of what has come, and keep a
        part of one until it is whole; from the first request that is not
        quick on, everything goes the ordinary way.
        """
        pending = self._quick_pending + data if self._quick_pending else data
        self._quick_pending = b""
        self._quick_reading = True
        try:
            while pending:
                if self._quick_request is not None:
                    # Answering: what comes next waits its turn, and past a
                    # request's worth the connection is not read.
                    self._quick_pending = pending
                    transport = self.transport
                    if len(pending) > self._quick_room() and transport is not None:
                        self._quick_paused = True
                        cast(IPushProducer, transport).pauseProducing()
                    return
                rest = self._one_quick(pending)
                if rest is None:
                    return
                pending = rest
        finally:
            self._quick_reading = False

    def _one_quick(self, pending: bytes) -> bytes | None:
        """
        Answer the quick request that C{pending} starts with.

        @return: what is left after it, or L{None} once C{pending} is kept
            (a request not whole yet) or handed the ordinary way.
        """
        self.resetTimeout()  # type: ignore[no-untyped-call]
        limits = self.limits
        end = pending.find(b"\r\n\r\n")
        if end < 0:
            line = pending.find(b"\r\n")
            if len(pending) > self._quick_room() or (
                line >= 0 and not pending.startswith((b"POST ", b"GET "))
            ):
                self._ordinary(pending)
                return None
            self._quick_pending = pending
            self._start_timer("_head_timer", limits.header_timeout, "head")
            return None
        head = parse_head(pending[:end])
        site = self.site
        found = (
            None
            if head is None or site is None
            else quick_resource(site.resource, head.path, head.method)
        )
        if (
            head is None
            or found is None
            or head.length > limits.max_body
            or end > limits.max_uri + limits.max_header_bytes
        ):
            self._ordinary(pending)
            return None
        whole = end + 4 + head.length
        if len(pending) < whole:
            self._quick_pending = pending
            self._cancel("_head_timer")
            self._start_timer("_body_timer", limits.body_timeout, "body")
            return None
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        resource, postpath = found
        request = QuickRequest(
            head,
            pending[end + 4 : whole],
            self,
            self._quick_done,
            self._quick_stream,
            postpath,
        )
        self._quick_request = request
        request.render(resource)
        return pending[whole:]

    def _quick_room(self) -> int:
        limits = self.limits
        return limits.max_uri + limits.max_header_bytes + limits.max_body + 4

    def _start_timer(self, name: str, seconds: float, part: str) -> None:
        if getattr(self, name) is None:
            setattr(
                self,
                name,
                self.callLater(seconds, lambda: self._late(part)),  # type: ignore[no-untyped-call]
            )

    def _ordinary(self, pending: bytes) -> None:
        """
        Hand C{pending}, and all that follows, to the ordinary path.
        """
        self._quick = False
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        self.dataReceived(pending)

    def _quick_stream(self) -> None:
        """
        The quick request's answer is a stream: no longer a connection that
        is still coming in, and not idle while it streams.
        """
        self._streaming = True
        self._uncount()
        self._quick_timeout = self.setTimeout(None)  # type: ignore[no-untyped-call]

    def _quick_done(self, request: QuickRequest) -> None:
        if self._quick_request is request:
            self._quick_request = None
        if self._streaming:
            self._streaming = False
            if self._quick_timeout:
                self.setTimeout(self._quick_timeout)  # type: ignore[no-untyped-call]
        site = self.site
        if site is not None:
            site.log(request)  # type: ignore[arg-type]
        if self._quick_paused and self.transport is not None:
            self._quick_paused = False
            cast(IPushProducer, self.transport).resumeProducing()
        if not self._quick_reading:
            self.dataReceived(b"")

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        limits = self.limits
        if self._request_line:
            if line:
                self._request_line = False
                if len(line) > limits.max_uri:
                    self._refuse_line()
                    return
        else:
            self._head_bytes += len(line) + 2
            if self._head_bytes > limits.max_header_bytes:
                self._refuse_line()
                return
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse_line()

    def _refuse_line(self) -> None:
        if self._request_line:
            self.refuse(
                414, "uri_too_long", f"the URI is over {self.limits.max_uri} bytes"
            )
        else:
            self.refuse(
                431,
                "headers_too_large",
                f"the headers are over {self.limits.max_header_bytes} bytes",
            )

    def allHeadersReceived(self) -> None:
        self._cancel("_head_timer")
        self._awaiting_head = False
        limits = self.limits
        length = self.length
        if length is not None and length > limits.max_body:
            self.refuse(413, "too_large", f"the body is over {limits.max_body} bytes")
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if length != 0:
            self._start_timer("_body_timer", limits.body_timeout, "body")

    def allContentReceived(self) -> None:
        self._cancel("_body_timer")
        if self.refused:
            return
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def _late(self, part: str) -> None:
        setattr(self, f"_{part}_timer", None)
        limit = (
            self.limits.header_timeout if part == "head" else self.limits.body_timeout
        )
        self.refuse(408, "timeout", f"the request's {part} took over {limit:g} s")

    # Responding

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        if (
            code == b"200"
            and any(
                value.startswith(b"text/event-stream")
                for value in headers.getRawHeaders(b"content-type", [])
            )
            and not headers.hasHeader(b"content-length")
        ):
            # A stream: no longer a connection that is still coming in.  (A
            # refused one has a length, and its connection still counts.)
            self._streaming = True
            self._uncount()
        super().writeHeaders(version, code, reason, headers)  # type: ignore[no-untyped-call]

    def requestDone(self, request: HTTPRequest) -> None:
        self._streaming = False
        self._awaiting_head = True
        self._request_line = True
        self._head_bytes = 0
        self._cancel("_body_timer")
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def refuse(self, status: int, code: str, message: str) -> None:
        """
        Answer with PROTOCOL.md's JSON error for C{status} and close the
        connection; nothing more it sends is read.
        """
        if self.refused:
            return
        self.refused = True
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        body = error_body(code, message)
        head = [
            b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
            b"content-type: application/json; charset=utf-8",
            b"content-length: %d" % len(body),
            b"cache-control: no-store",
            b"connection: close",
        ]
        if status == 503:
            head.append(b"retry-after: %d" % self.limits.retry_after)
        self._log.info(
            "Refused a connection from {peer}: {status} {code}",
            peer=self._address or "?",
            status=status,
            code=code,
        )
        if self.transport is not None:
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.loseConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        request, self._quick_request = self._quick_request, None
        if request is not None:
            request.connectionLost(reason)
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        self._uncount()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _cancel(self, name: str) -> None:
        timer: IDelayedCall | None = getattr(self, name)
        if timer is not None:
            setattr(self, name, None)
            if timer.active():
                timer.cancel()


def _guarded_protocol(factory: Any) -> Any:
    return negotiating_channel(GuardedChannel())  # type: ignore[no-untyped-call]


class SSESite(Site):
    """
    A C{Site} whose requests are bounded as their bytes arrive, by
    C{limits} (see the module's docstring).  Mount endpoints in it as in any
    C{Site}; each endpoint still applies its own limits as well.

    @ivar limits: what its connections and requests may do.
    @ivar gate: its connections that are not streams, counted.
    """

    protocol = _guarded_protocol

    def __init__(
        self,
        resource: IResource,
        limits: Limits | None = None,
        reactor: IReactorTime | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("requestFactory", GuardedRequest)
        if reactor is not None:
            kwargs["reactor"] = reactor
        super().__init__(resource, **kwargs)  # type: ignore[no-untyped-call]
        self.limits = limits if limits is not None else Limits()
        self.gate = ConnectionGate(self.limits)
