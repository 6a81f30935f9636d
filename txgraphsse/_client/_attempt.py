# -*- test-case-name: tests.test_client -*-
"""
One connection attempt of an L{EventSource}: the C{GET}, and what its
answer turns out to be.

This module owns how a stream is asked for (L{StreamRequest}: the request's
headers, through an L{IAgent}, a treq client or connections of its own) and
how one answer is read (L{Attempt}): a C{text/event-stream} body handed to
its source as the bytes arrive, a refusal read for its error and its
C{Retry-After}, or a failure, with the connection let go of in every case.
What an outcome means (reconnect, or stop for good), the parse's ids, the
handlers and the timers are the source's: this module never decides them.
It knows nothing of graphscript messages, nothing of the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from attrs import Factory, define, field
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as BodyProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import RedirectAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS, IResponse

from .._parser import EventStreamParser
from ._http import BodyReader, Connections, RemoteError, remote_error, set_header
from ._http import retry_after as parse_retry_after

__all__ = ["Attempt", "StreamRequest"]

#: Bytes of a refusal's body that are read for its error message.
_REFUSAL_LIMIT = 64 * 1024


class _Source(Protocol):
    """
    What an attempt tells its source (the L{EventSource}).
    """

    def _is_current(self, attempt: Attempt) -> bool:
        """
        Whether C{attempt} is the one the source waits on.
        """

    def _opened(self) -> None:
        """
        The current attempt's stream is open; its bytes follow.
        """

    def _received(self, attempt: Attempt, data: bytes) -> None:
        """
        Bytes of C{attempt}'s stream.
        """

    def _ended(self, attempt: Attempt, reason: Failure) -> None:
        """
        C{attempt}'s stream ended.
        """

    def _failed(self, attempt: Attempt, reason: Failure) -> None:
        """
        C{attempt} got no answer, or lost it while reading a refusal.
        """

    def _unavailable(self, reason: Failure, retry_after: float | None) -> None:
        """
        The current attempt was answered C{503}: try again, after
        C{retry_after} seconds if the server said so.
        """

    def _refused(self, reason: Failure) -> None:
        """
        The current attempt was refused for good.
        """


class StreamRequest:
    """
    How a source asks for its stream: a C{GET} of one URL with the headers
    it always carries, through an L{IAgent} or a treq client, or else
    through connections of its own that L{close} closes.
    """

    def __init__(
        self,
        url: str,
        uri: bytes,
        reactor: IReactorTime,
        *,
        headers: Mapping[str, str],
        http_client: HTTPClient | None,
        agent: IAgent | None,
        tls_policy: IPolicyForHTTPS | None,
    ) -> None:
        """
        @param url: the stream's URL, for a treq client.
        @param uri: the same, encoded, for an agent.
        @param reactor: the reactor the requests and connections use.
        @param headers: extra request headers.
        @param http_client: a treq client to ask with.
        @param agent: or an agent; with neither, connections of its own
            (redirects followed).
        @param tls_policy: TLS settings of its own connections.
        """
        self._url = url
        self._uri = uri
        self._reactor = reactor
        self._headers = dict(headers)
        self._http_client = http_client
        self._own: Connections | None = None
        if agent is None and http_client is None:
            self._own = Connections(reactor, tls_policy)
            agent = RedirectAgent(self._own.agent)
        self._agent = agent

    def set_header(self, name: str, value: str) -> None:
        """
        Send C{name: value} with the next attempts, in place of any header
        of that name.
        """
        set_header(self._headers, name, value)

    def _request_headers(self, last_event_id: str) -> Headers:
        headers = Headers()
        for name, value in self._headers.items():
            headers.addRawHeader(name, value)
        headers.setRawHeaders(b"accept", [b"text/event-stream, application/json"])
        headers.setRawHeaders(b"cache-control", [b"no-cache"])
        if self._http_client is None:
            headers.setRawHeaders(b"accept-encoding", [b"identity"])
        if last_event_id:
            headers.setRawHeaders(b"last-event-id", [last_event_id.encode("utf-8")])
        return headers

    def send(self, last_event_id: str) -> Deferred[IResponse]:
        """
        Ask for the stream, after C{last_event_id} if there is one.

        @return: a L{Deferred} firing with the response, unbuffered.
        """
        headers = self._request_headers(last_event_id)
        try:
            if self._agent is not None:
                return self._agent.request(b"GET", self._uri, headers, None)
            assert self._http_client is not None
            return cast(
                "Deferred[IResponse]",
                self._http_client.request(
                    "GET",
                    self._url,
                    headers=headers,
                    unbuffered=True,
                    reactor=cast(Any, self._reactor),
                ),
            )
        except Exception:
            return fail()

    def close(self) -> Deferred[None] | None:
        """
        Close its own connections, if it made them.

        @return: a L{Deferred} that fires once they are all gone, or L{None}
            if it has none.
        """
        return self._own.close() if self._own is not None else None


def _media_type(headers: Headers) -> bytes:
    values = headers.getRawHeaders(b"content-type") or [b""]
    return values[-1].split(b";")[0].strip().lower()


@define(eq=False)
class Attempt:
    """
    One connection attempt, from the C{GET} to the end of its body.

    @ivar source: whom it tells what became of it.
    @ivar clock: what C{Retry-After} is counted from.
    @ivar parser: this stream's parser.
    @ivar pending: the request or the refusal's body read, while waited on.
    @ivar transport: the open stream's, to drop it.
    @ivar delivered: whether a body protocol got the response (then L{lost}
        fires from its C{connectionLost}).
    @ivar first: whether no byte of the stream arrived yet.
    @ivar lost: fires when this attempt holds no connection any more.
    """

    source: _Source = field(repr=False)
    clock: IReactorTime = field(repr=False)
    parser: EventStreamParser = Factory(EventStreamParser)
    pending: Deferred[Any] | None = None
    transport: IPushProducer | None = None
    delivered: bool = False
    first: bool = True
    lost: Deferred[None] = Factory(Deferred)

    def gone(self) -> None:
        if not self.lost.called:
            self.lost.callback(None)

    def start(self, requested: Deferred[IResponse]) -> None:
        """
        Wait for the answer to C{requested}, the C{GET}.
        """
        if not requested.called:
            self.pending = requested
        requested.addCallbacks(self._responded, self._request_failed)

    def _responded(self, response: IResponse) -> None:
        self.pending = None
        if not self.source._is_current(self):
            self.delivered = True
            response.deliverBody(_Discard(self))
            return
        code = response.code
        if code == 200 and _media_type(response.headers) == b"text/event-stream":
            # Open first: deliverBody hands over what already arrived at once.
            self.source._opened()
            self.delivered = True
            if self.source._is_current(self):
                response.deliverBody(_StreamProtocol(self.source, self))
            else:
                response.deliverBody(_Discard(self))
            return
        self.delivered = True
        reader = BodyReader(_REFUSAL_LIMIT, truncate=True)
        reader.lost.addBoth(lambda _: self.gone())
        response.deliverBody(reader)
        if not reader.done.called:
            self.pending = reader.done
        reader.done.addCallbacks(
            self._refused, self._request_failed, callbackArgs=(response,)
        )

    def _refused(self, body: bytes, response: IResponse) -> None:
        self.pending = None
        if not self.source._is_current(self):
            return
        code = response.code
        if code == 200:
            error = RemoteError(
                200,
                "bad_content_type",
                "the answer is not text/event-stream: "
                + _media_type(response.headers).decode("latin-1"),
            )
        else:
            error = remote_error(code, body)
        if code == 503:
            delay = parse_retry_after(response.headers, self.clock.seconds())
            self.source._unavailable(Failure(error), delay)
            return
        self.source._refused(Failure(error))

    def _request_failed(self, reason: Failure) -> None:
        self.pending = None
        if not self.delivered:
            self.gone()
        self.source._failed(self, reason)

    def drop(self) -> None:
        """
        Let go: cancel what it waits for, or end its stream.
        """
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.cancel()
        transport = self.transport
        if transport is not None:
            transport.stopProducing()
        if not self.delivered:
            self.gone()


class _StreamProtocol(BodyProtocol):
    def __init__(self, source: _Source, attempt: Attempt) -> None:
        self._source = source
        self._attempt = attempt

    def connectionMade(self) -> None:
        self._attempt.transport = cast(IPushProducer, self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._source._received(self._attempt, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._attempt.transport = None
        try:
            self._source._ended(self._attempt, reason)
        finally:
            self._attempt.gone()


class _Discard(BodyProtocol):
    """
    Drops the body of a response nobody wants any more.
    """

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt

    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._attempt.gone()
