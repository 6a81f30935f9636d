# -*- test-case-name: tests.test_client -*-
"""
The HTTP plumbing of the Python client: connections it can account for,
bodies read so that a read can be cancelled, JSON errors turned into
exceptions, and C{Retry-After}.

This module owns the client's sockets: every connection made through
L{Connections} is remembered until it is gone, so that closing a client
waits for the last one and leaves nothing behind.  It knows nothing of SSE or
of graphscript messages, and nothing of the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConsumer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from ._waiters import Waiters

__all__ = [
    "STATUS_OF",
    "BodyReader",
    "BytesProducer",
    "Connections",
    "RemoteError",
    "ResponseTooLarge",
    "entry_error",
    "remote_error",
    "retry_after",
    "set_header",
]


class RemoteError(Exception):
    """
    The server refused a request: its HTTP status and, when it answered with
    C{{"error":{"code","message"}}}, its machine word and its message.

    @ivar status: the HTTP status.
    @ivar code: the server's machine word (C{no_route}, C{forbidden}, ...),
        or C{http_error} when the answer carried none (C{closed} for a
        C{204} on the stream, C{bad_content_type} for a stream that is not
        C{text/event-stream}).
    @ivar message: one line for a person.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ResponseTooLarge(Exception):
    """
    An answer's body was longer than the client accepts.
    """


#: The HTTP status of each error code of PROTOCOL.md's table, for an error
#: that comes without one of its own: an entry of a batch's answer.
STATUS_OF = {
    "bad_json": 400,
    "bad_message": 400,
    "bad_channel": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "no_route": 404,
    "no_session": 404,
    "method_not_allowed": 405,
    "not_pending": 409,
    "too_large": 413,
    "bad_content_type": 415,
    "rate_limited": 429,
    "route_failed": 500,
    "unavailable": 503,
}


def remote_error(status: int, body: bytes) -> RemoteError:
    """
    The L{RemoteError} for a refusal with C{status} and C{body}: the server's
    JSON error when the body is one, else a generic one.
    """
    code = "closed" if status == 204 else "http_error"
    message = (
        "the server asked the client not to reconnect"
        if status == 204
        else f"HTTP {status}"
    )
    try:
        value = json.loads(body) if body.strip() else None
    except ValueError:
        value = None
    return _error_in(value, status, code, message)


def entry_error(value: Any) -> RemoteError | None:
    """
    The L{RemoteError} that an entry of a batch's answer stands for, with
    the status its code has in PROTOCOL.md's table; L{None} for an entry
    that is an answer.
    """
    if not isinstance(value, dict) or not isinstance(value.get("error"), dict):
        return None
    code = value["error"].get("code")
    status = STATUS_OF.get(code, 500) if isinstance(code, str) else 500
    return _error_in(value, status, "http_error", f"HTTP {status}")


def _error_in(value: Any, status: int, code: str, message: str) -> RemoteError:
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, dict):
        if isinstance(error.get("code"), str):
            code = error["code"]
        if isinstance(error.get("message"), str):
            message = error["message"]
    return RemoteError(status, code, message)


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """
    Put C{name: value} in C{headers}, in place of any header of that name
    (in any case).
    """
    for key in [key for key in headers if key.lower() == name.lower()]:
        del headers[key]
    headers[name] = value


def retry_after(headers: Headers, now: float) -> float | None:
    """
    The seconds a C{Retry-After} header asks for (delay-seconds or an HTTP
    date), or L{None} if there is none that makes sense.

    @param now: the current time, in seconds since the epoch.
    """
    values = headers.getRawHeaders(b"retry-after")
    if not values:
        return None
    text = values[-1].decode("latin-1").strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


@implementer(IBodyProducer)
class BytesProducer:
    """
    A request body that is already in memory, written in one go (treq's own
    producer for bytes goes through the global cooperator).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BodyReader(Protocol):
    """
    Reads a whole response body into memory.

    @ivar done: fires with the body once it has all arrived; fails with the
        reason the connection ended, or with L{ResponseTooLarge}.  Cancelling
        it drops the connection.
    @ivar lost: fires when the body's connection is done with, however it
        ended.
    """

    def __init__(self, limit: int, truncate: bool = False) -> None:
        """
        @param limit: the most bytes to accept.
        @param truncate: past C{limit}, fire with the first C{limit} bytes
            (and drop the rest) instead of failing.
        """
        self._limit = limit
        self._truncate = truncate
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self.lost: Deferred[None] = Deferred()

    @classmethod
    def read(
        cls, response: IResponse, limit: int, truncate: bool = False
    ) -> BodyReader:
        """
        Start reading C{response}'s body.
        """
        reader = cls(limit, truncate)
        response.deliverBody(reader)
        return reader

    def _cancel(self, _: Deferred[bytes]) -> None:
        self._stop()

    def _stop(self) -> None:
        transport = self.transport
        if transport is not None:
            cast(IPushProducer, transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        room = self._limit - self._size
        if len(data) > room:
            self._parts.append(data[: max(room, 0)])
            self._size = self._limit
            if self._truncate:
                self.done.callback(b"".join(self._parts))
            else:
                self.done.errback(
                    ResponseTooLarge(f"the answer is over {self._limit} bytes")
                )
            self._stop()
            return
        self._parts.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            if reason.check(ResponseDone, PotentialDataLoss):
                self.done.callback(b"".join(self._parts))
            else:
                self.done.errback(reason)
        if not self.lost.called:
            self.lost.callback(None)


class _TrackedProtocol(ProtocolWrapper):
    """
    Sits between a connection's transport and its HTTP protocol, and tells
    its L{Connections} when the connection is made and when it is gone.
    """

    factory: _TrackingFactory

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)  # type: ignore[no-untyped-call]
        self.factory.owner._made(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
        finally:
            self.factory.owner._lost(self)


class _TrackingFactory(WrappingFactory):
    protocol = _TrackedProtocol

    def __init__(self, wrapped: IProtocolFactory, owner: Connections) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.owner = owner


@implementer(IStreamClientEndpoint)
class _TrackingEndpoint:
    def __init__(self, inner: IStreamClientEndpoint, owner: Connections) -> None:
        self._inner = inner
        self._owner = owner

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        connected = self._inner.connect(_TrackingFactory(protocolFactory, self._owner))

        def unwrap(wrapper: IProtocol) -> IProtocol:
            assert isinstance(wrapper, _TrackedProtocol)
            return wrapper.wrappedProtocol

        return connected.addCallback(unwrap)


@implementer(IAgentEndpointFactory)
class Connections:
    """
    A connection pool and an L{Agent} on it whose every connection is
    remembered until it closes, so that L{close} can end them all and wait.

    @ivar pool: the persistent connection pool.
    @ivar agent: a plain agent on that pool: no C{gzip}, no cookies, no
        redirects (wrap it if you want them).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        tls_policy: IPolicyForHTTPS | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._tls = (
            tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
        )
        self._connect_timeout = connect_timeout
        self._live: set[_TrackedProtocol] = set()
        self._waiting: Waiters[None] = Waiters()
        self._closed = False
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent: IAgent = Agent.usingEndpointFactory(reactor, self, pool=self.pool)

    def __len__(self) -> int:
        return len(self._live)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host, uri.port, timeout=self._connect_timeout
        )
        if uri.scheme == b"https":
            creator = self._tls.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        elif uri.scheme != b"http":
            raise ValueError(f"not an http or https URL: {uri.toBytes()!r}")
        return _TrackingEndpoint(endpoint, self)

    def _made(self, protocol: _TrackedProtocol) -> None:
        self._live.add(protocol)
        if self._closed:
            _abort(protocol)

    def _lost(self, protocol: _TrackedProtocol) -> None:
        self._live.discard(protocol)
        if not self._live:
            self._waiting.fire(None)

    def close(self) -> Deferred[None]:
        """
        Close every connection, idle or busy, and forget the pool's timers.

        @return: a L{Deferred} that fires once the last one is gone.
        """
        self._closed = True
        cached = self.pool.closeCachedConnections()
        for protocol in list(self._live):
            _abort(protocol)
        gone = self._waiting.wait() if self._live else succeed(None)
        return gatherResults([cached, gone]).addCallback(lambda _: None)


def _abort(protocol: _TrackedProtocol) -> None:
    transport: Any = protocol.transport
    if transport is None:
        return
    abort: Callable[[], object] | None = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()
