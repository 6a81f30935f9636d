# -*- test-case-name: tests.test_shutdown_tls -*-
"""
How a stopping process lets its streams go: a last event to each, with a
C{retry:} that spreads their reconnects out, then the connection, once its
bytes are written or a drain time has passed; and how chosen streams are
let go on demand (L{disconnect}: the server API's C{/api/disconnect}).

This module owns the order of that ending (close the stream, let the HTTP
channel drop the connection so that TLS can send its close alert, cut what
is still connected at the deadline).  It knows sessions only as things that
close with a final payload, and transports only as things that are
connected or abort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import HTTPChannel

from ._encoder import encode_event, encode_retry

__all__ = ["DISCONNECTED_EVENT", "close_for_shutdown", "disconnect", "drained"]

#: The last event of a stream the server ended on demand.
DISCONNECTED_EVENT = encode_event(
    '{"route":"disconnected","args":null}', "disconnected"
)


class _Request(Protocol):
    channel: Any


class _Closing(Protocol):
    close_reason: str | None
    principal: Any

    @property
    def http_request(self) -> Any: ...

    def close(self, final: bytes | None = None) -> None: ...


def close_for_shutdown(
    sessions: Iterable[_Closing],
    final: bytes,
    retry: int,
    spread: float,
    random: Callable[[], float],
) -> list[Any]:
    """
    Close each session after C{final}, and have its connection dropped once
    its bytes are written.

    Each session is told a C{retry:} before C{final}: C{retry} milliseconds
    and a C{random()} share of C{spread} seconds, so that the clients of a
    stopping process reconnect spread out over that window rather than all
    at once.

    @return: the transports of those connections, to wait for.
    """
    window = int(spread * 1000)
    transports = []
    for session in sessions:
        session.close_reason = "server shutting down"
        channel = session.http_request.channel
        session.close(encode_retry(retry + int(random() * window)) + final)
        transport = getattr(channel, "transport", None)
        if isinstance(channel, HTTPChannel) and transport is not None:
            # loseConnection writes what is buffered, then closes.  The
            # channel's own unregisters it as the transport's producer
            # first: TLS will not send its close alert while one is
            # registered, so the transport's alone waits out the drain.
            channel.loseConnection()
            transports.append(transport)
    return transports


def drained(clock: IReactorTime, transports: list[Any], limit: float) -> Deferred[None]:
    """
    Fire when none of C{transports} is connected, or after C{limit} seconds,
    when those still connected are cut.
    """
    done: Deferred[None] = Deferred()
    deadline = clock.seconds() + limit

    def check() -> None:
        transports[:] = [t for t in transports if getattr(t, "connected", False)]
        if not transports or clock.seconds() >= deadline:
            for transport in transports:
                abort = getattr(transport, "abortConnection", None)
                if abort is not None:
                    abort()
            done.callback(None)
            return
        clock.callLater(0.02, check)

    check()
    return done


def disconnect(
    sessions: Mapping[str, _Closing],
    session_id: str | None,
    subject: str | None,
    retry: int,
) -> int:
    """
    End the stream of session C{session_id} of C{sessions}, or of every one
    whose principal's subject is C{subject}, each after a C{retry:} of
    C{retry} milliseconds and L{DISCONNECTED_EVENT}.

    @return: how many ended.
    """
    if session_id is not None:
        found = sessions.get(session_id)
        chosen = [] if found is None else [found]
    elif subject is not None:
        chosen = [
            s
            for s in sessions.values()
            if getattr(s.principal, "subject", None) == subject
        ]
    else:
        chosen = []
    final = encode_retry(retry) + DISCONNECTED_EVENT
    for session in chosen:
        session.close_reason = "disconnected by the server"
        session.close(final)
    return len(chosen)
