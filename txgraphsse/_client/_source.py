# -*- test-case-name: tests.test_client -*-
"""
L{EventSource}: a C{text/event-stream} reader for Twisted that behaves like
the browser's, and reconnects more carefully than one.

It owns one stream's life: its state, dispatch by event name, the ids it
resumes from, the idle watchdog's verdict, and when and whether to
reconnect (C{retry:}, exponential backoff with jitter, C{Retry-After},
C{204}).  It also names (L{StreamOptions}) the settings of a stream that
a L{GraphSSEClient} takes too and hands to each source it opens.  How one
attempt asks and reads its answer is C{_attempt}'s; the parse is the shared
parser's.  It knows nothing of graphscript messages,
nothing of the server.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, ParamSpec, cast

from attrs import asdict, frozen
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent, IPolicyForHTTPS

from .._parser import ServerSentEvent
from ._attempt import Attempt, StreamRequest
from ._handlers import Handlers, call_logged
from ._waiters import Waiters
from ._watchdog import Watchdog

__all__ = [
    "ClientClosed",
    "EventSource",
    "IdleTimeout",
    "ReadyState",
    "StreamOptions",
]

_UTF8_BOM = b"\xef\xbb\xbf"

EventHandler = Callable[[ServerSentEvent], object]

_P = ParamSpec("_P")


def default_reactor() -> IReactorTime:
    """
    The global reactor, imported only when nobody passed one.
    """
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


class ReadyState(IntEnum):
    """
    The states of an L{EventSource}, numbered as the browser's.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSED = 2


class ClientClosed(Exception):
    """
    The client was closed (or terminated) before this could happen.
    """


class IdleTimeout(Exception):
    """
    No byte arrived, not even a keep-alive comment, for the idle timeout: the
    stream is taken for dead and dropped.
    """


@frozen
class StreamOptions:
    """
    The settings of a stream that L{EventSource} and L{GraphSSEClient} both
    take: each field is the keyword argument of the same name of both, with
    the same default, documented at L{EventSource.__init__}.  A test holds
    the three together, so that a new setting is a field here and an
    argument of both, and reaches every source a client opens.
    """

    headers: Mapping[str, str] | None = None
    http_client: HTTPClient | None = None
    agent: IAgent | None = None
    tls_policy: IPolicyForHTTPS | None = None
    idle_timeout: float | None = 45.0
    max_backoff: float = 30.0
    jitter: float = 0.25

    def keywords(self) -> dict[str, Any]:
        """
        The settings as keyword arguments of L{EventSource}.
        """
        return asdict(self, recurse=False)


class EventSource:
    """
    Reads a C{text/event-stream} at C{url} and reconnects as the browser's
    C{EventSource} does, with the care a long-lived Python process needs.

    It sends C{GET} with C{Accept: text/event-stream} and without asking for
    compression, reads the body as it arrives and hands each event to the
    handlers of its name.  When the stream ends or fails it waits, then
    reconnects with C{Last-Event-ID}: the server's C{retry:} (2 s unless
    told), doubled after each further failure (until a stream sends
    something again), with jitter, capped at C{max_backoff}.  A C{503} is
    retried after its C{Retry-After}; a C{204}, any other status, or a body
    that is not C{text/event-stream} stops it for good, as in a browser.  If
    no byte (not even a keep-alive comment) arrives for C{idle_timeout}
    seconds, it drops the connection and reconnects.

    @ivar url: the stream's URL.
    @ivar ready_state: L{ReadyState.CONNECTING}, C{OPEN} or C{CLOSED}.
    @ivar last_event_id: the last event id seen (sent back on reconnection).
    @ivar retry: milliseconds to wait before reconnecting, as the stream last
        said with C{retry:}.
    @ivar close_reason: why it stopped for good: L{None} after L{close}, a
        L{Failure} of L{RemoteError} after a refusal.
    @ivar on_open: called with no argument each time a stream opens.
    @ivar on_error: called with a L{Failure} each time a stream ends or a
        connection attempt fails (L{IdleTimeout}, L{RemoteError} for a
        C{503}, C{ResponseDone} for a stream the server ended, a network
        error), before it reconnects.
    @ivar on_close: called with L{close_reason} once it stopped for good.
    """

    CONNECTING = ReadyState.CONNECTING
    OPEN = ReadyState.OPEN
    CLOSED = ReadyState.CLOSED

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: IReactorTime | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        http_client: HTTPClient | None = None,
        agent: IAgent | None = None,
        tls_policy: IPolicyForHTTPS | None = None,
        idle_timeout: float | None = 45.0,
        max_backoff: float = 30.0,
        jitter: float = 0.25,
        retry: int = 2000,
        start: bool = True,
    ) -> None:
        """
        @param url: an C{http} or C{https} URL.
        @param reactor: the reactor (L{IReactorTime}, and what an
            L{Agent <twisted.web.client.Agent>} needs to connect); the global
            one by default.
        @param headers: extra request headers, such as C{Authorization}.
        @param last_event_id: resume after this event id.
        @param http_client: a treq client to open the stream with (it asks
            for C{gzip}, which it decodes as the bytes arrive).
        @param agent: or an L{IAgent}, used as it is.  With neither, the
            source makes its own connections (no C{gzip}, redirects
            followed) and L{close} waits until they are all closed.
        @param tls_policy: TLS settings of its own connections.
        @param idle_timeout: seconds without a byte before the stream is
            taken for dead (L{None} or 0: never); keep it above the server's
            keep-alive interval (15 s by default).
        @param max_backoff: the longest wait between two attempts, in
            seconds (C{Retry-After} excepted).
        @param jitter: each wait is stretched by up to this fraction, at
            random, so that clients dropped together do not return together.
        @param retry: milliseconds to wait before reconnecting until the
            stream says otherwise.
        @param start: connect now; else call L{start}.
        """
        link = EncodedURL.from_text(url)
        if link.scheme not in ("http", "https") or not link.host:
            raise ValueError(f"not an http or https URL: {url!r}")
        if last_event_id is not None and _bad_id(last_event_id):
            raise ValueError("a last event id cannot hold CR, LF or NUL")
        self.url = url
        self._reactor = reactor if reactor is not None else default_reactor()
        self._get = StreamRequest(
            url,
            link.to_uri().to_text().encode("ascii"),
            self._reactor,
            headers=headers or {},
            http_client=http_client,
            agent=agent,
            tls_policy=tls_policy,
        )
        self.idle_timeout = idle_timeout
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.retry = retry
        self.last_event_id = last_event_id or ""
        self.ready_state = ReadyState.CONNECTING
        self.close_reason: Failure | None = None
        self.on_open: Callable[[], object] | None = None
        self.on_error: Callable[[Failure], object] | None = None
        self.on_close: Callable[[Failure | None], object] | None = None
        #: Called before each reconnection, which waits for the L{Deferred}
        #: it returns (fresh credentials, say); it must not fail.
        self.before_reconnect: Callable[[], Deferred[None]] | None = None
        self._handlers: Handlers[[ServerSentEvent]] = Handlers(self._log)
        self._attempt: Attempt | None = None
        self._timer: IDelayedCall | None = None
        self._watchdog = Watchdog(self._reactor, self._idle)
        self._failures = 0
        self._started = False
        self._opening: Waiters[None] = Waiters()
        self._random: Callable[[], float] = random.random
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"<EventSource {self.url!r} {self.ready_state.name}>"

    # Handlers

    def set_header(self, name: str, value: str) -> None:
        """
        Send C{name: value} (an C{Authorization}, say) with the next
        attempts, in place of any header of that name.
        """
        self._get.set_header(name, value)

    def add_handler(self, event_type: str, handler: EventHandler) -> None:
        """
        Call C{handler} with every L{ServerSentEvent} named C{event_type}
        (C{"message"} for events that name none).
        """
        self._handlers.add(event_type, handler)

    def remove_handler(self, event_type: str, handler: EventHandler) -> bool:
        """
        Stop calling C{handler} for C{event_type}.

        @return: whether it was there.
        """
        return self._handlers.remove(event_type, handler)

    def when_open(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires when a stream is open (at once if
            one is), or fails with L{ClientClosed} or the refusal's
            L{RemoteError} if the source stops for good first.
        """
        if self.ready_state is ReadyState.OPEN:
            return succeed(None)
        if self.ready_state is ReadyState.CLOSED:
            return fail(self._final_failure())
        return self._opening.wait()

    @property
    def ready(self) -> Deferred[None]:
        """
        L{when_open}: a new L{Deferred} each time it is read.
        """
        return self.when_open()

    # Life

    def start(self) -> None:
        """
        Connect, if not already connecting or connected.

        @raise ClientClosed: it was closed.
        """
        if self.ready_state is ReadyState.CLOSED:
            raise ClientClosed("this EventSource is closed")
        if not self._started:
            self._started = True
            self._connect()

    def close(self) -> Deferred[None]:
        """
        Stop for good: no more events, no reconnection.  Idempotent.

        @return: a L{Deferred} that fires once the stream's connection is
            gone (and, when the source made its own, every one of them), so
            that no timer and no socket is left behind.
        """
        attempt = self._attempt
        self._stop(None)
        waits: list[Deferred[None]] = []
        if attempt is not None:
            waits.append(_observe(attempt.lost))
        own = self._get.close()
        if own is not None:
            waits.append(own)
        if not waits:
            return succeed(None)
        # Once every one has fired, however.
        gone = DeferredList(waits, consumeErrors=True)
        return gone.addCallback(lambda _: None)

    def _stop(self, reason: Failure | None) -> None:
        if self.ready_state is ReadyState.CLOSED:
            return
        self.ready_state = ReadyState.CLOSED
        self.close_reason = reason
        self._cancel_timer()
        self._watchdog.stop()
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.drop()
        self._opening.fail(self._final_failure())
        if reason is not None:
            self._log.warn(
                "Stream {url} stopped for good: {why}",
                url=self.url,
                why=reason.getErrorMessage(),
            )
        self._call_back("on_close of {url} failed", self.on_close, reason)

    def _call_back(
        self,
        failed: str,
        callback: Callable[_P, object] | None,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        """
        Call C{callback} (C{on_open}, C{on_error}, C{on_close}), if there is
        one, logging C{failed}, a format of C{url}, if it raises.
        """
        call_logged(self._log, failed, {"url": self.url}, callback, *args, **kwargs)

    def _final_failure(self) -> Failure:
        if self.close_reason is not None:
            return self.close_reason
        return Failure(ClientClosed(f"the EventSource for {self.url} was closed"))

    # One attempt

    def _connect(self) -> None:
        self._timer = None
        attempt = Attempt(self, self._reactor)
        if self.last_event_id:
            # The new stream starts from the id we hold, as if it had said so
            # itself; an event without an id keeps it.
            attempt.parser.feed(b"id: " + self.last_event_id.encode("utf-8") + b"\n")
        self._attempt = attempt
        self.ready_state = ReadyState.CONNECTING
        self._watchdog.pet(self.idle_timeout)
        attempt.start(self._get.send(self.last_event_id))

    def _is_current(self, attempt: Attempt) -> bool:
        return attempt is self._attempt

    def _unavailable(self, reason: Failure, retry_after: float | None) -> None:
        self._attempt = None
        self._report(reason)
        self._schedule(retry_after)

    def _refused(self, reason: Failure) -> None:
        self._stop(reason)

    def _failed(self, attempt: Attempt, reason: Failure) -> None:
        if attempt is not self._attempt:
            return
        self._attempt = None
        self._report(reason)
        self._schedule()

    def _opened(self) -> None:
        self.ready_state = ReadyState.OPEN
        self._watchdog.pet(self.idle_timeout)
        self._log.debug("Stream {url} open", url=self.url)
        self._call_back("on_open of {url} failed", self.on_open)
        self._opening.fire(None)

    def _received(self, attempt: Attempt, data: bytes) -> None:
        if attempt is not self._attempt:
            return
        self._watchdog.pet(self.idle_timeout)
        if attempt.first:
            # Bytes came: the server is serving.  (A stream that opens and
            # ends without one still counts as a failure, so a broken proxy
            # is not hammered.)
            attempt.first = False
            self._failures = 0
            if data.startswith(_UTF8_BOM):
                data = data[len(_UTF8_BOM) :]
        parser = attempt.parser
        committed = parser.last_event_id
        events = parser.feed(data)
        if parser.retry is not None:
            self.retry = parser.retry
        for event in events:
            if attempt is not self._attempt:
                return
            self.last_event_id = event.last_event_id
            self._handlers.dispatch(event.type, event)
        if attempt is self._attempt and parser.last_event_id != committed:
            self.last_event_id = parser.last_event_id

    def _ended(self, attempt: Attempt, reason: Failure) -> None:
        if attempt is not self._attempt:
            return
        self._attempt = None
        self._log.info(
            "Stream {url} ended: {why}", url=self.url, why=reason.getErrorMessage()
        )
        self._report(reason)
        self._schedule()

    def _report(self, reason: Failure) -> None:
        if self.ready_state is not ReadyState.CLOSED:
            self.ready_state = ReadyState.CONNECTING
        self._call_back("on_error of {url} failed", self.on_error, reason)

    # Waiting

    def backoff(self) -> float:
        """
        Seconds the next reconnection waits, unless the server said
        C{Retry-After}: the stream's C{retry}, doubled for each failure since
        a stream last sent something, stretched by up to C{jitter}, at most
        C{max_backoff}.
        """
        base = (self.retry / 1000.0) * 2.0 ** min(self._failures, 32)
        return min(self.max_backoff, base * (1.0 + self.jitter * self._random()))

    def _schedule(self, retry_after: float | None = None) -> None:
        if self.ready_state is ReadyState.CLOSED or self._attempt is not None:
            return
        self._watchdog.stop()
        if retry_after is not None:
            delay = retry_after * (1.0 + self.jitter * self._random())
        else:
            delay = self.backoff()
        self._failures += 1
        self._log.info(
            "Reconnecting to {url} in {delay:.3f} s", url=self.url, delay=delay
        )
        self._cancel_timer()
        self._timer = self._reactor.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        prepare = self.before_reconnect
        if prepare is None:
            self._connect()
            return
        self._timer = None

        def go(_: object) -> None:
            if self.ready_state is not ReadyState.CLOSED and self._attempt is None:
                self._connect()

        prepare().addBoth(go)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # The idle watchdog

    def _idle(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        self._log.warn(
            "Nothing from {url} for {timeout} s: reconnecting",
            url=self.url,
            timeout=self.idle_timeout,
        )
        attempt.drop()
        self._report(
            Failure(IdleTimeout(f"no byte for {self.idle_timeout} s from {self.url}"))
        )
        self._schedule()


def _observe(deferred: Deferred[None]) -> Deferred[None]:
    """
    A new L{Deferred} that fires when C{deferred} does, leaving its result
    alone.
    """
    observer: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        if not observer.called:
            observer.callback(None)
        return result

    deferred.addBoth(fire)
    return observer


def _bad_id(value: str) -> bool:
    return "\r" in value or "\n" in value or "\0" in value
