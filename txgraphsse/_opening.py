# -*- test-case-name: tests.test_session,tests.test_integration -*-
"""
The bytes and headers of a stream as it opens: the response headers of an
event stream, the replay of what a reconnecting client missed, and what an
open stream's request lets go of.

These are the parts of opening a stream that need no endpoint state; the
endpoint does the bookkeeping (sessions, channels, counts) around them.
This module knows the request and the encoder, never sessions or channels
beyond an event name.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.http_headers import Headers
from twisted.web.server import Request

from . import _messages as messages
from ._broker import Replay
from ._encoder import encode_event, encode_retry
from ._quick import QuickRequest

__all__ = [
    "encode_refusal",
    "encode_replay",
    "set_stream_headers",
    "slim",
    "wants_stream_refusal",
]


def set_stream_headers(request: Request) -> None:
    """
    Set the response headers of an event stream (a C{HEAD} gets them too).
    """
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache, no-transform")
    request.setHeader(b"x-accel-buffering", b"no")


def wants_stream_refusal(request: Request) -> bool:
    """
    Whether a refused C{GET} should be told so as an event stream: its client
    accepts C{text/event-stream} and not JSON, as C{EventSource} does.

    By WHATWG, any answer but C{200 text/event-stream} makes an
    C{EventSource} fail for good; this project's own clients accept JSON as
    well, and read the C{503} and its C{Retry-After} instead.
    """
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"text/event-stream" in accept and b"application/json" not in accept


def encode_refusal(retry: int, body: bytes) -> bytes:
    """
    The whole of a refused stream: a C{retry:} of C{retry} milliseconds,
    then an C{unavailable} event whose data is PROTOCOL.md's error C{body}.
    """
    return encode_retry(retry) + encode_event(body.decode("utf-8"), event="unavailable")


def encode_replay(
    replay: Replay,
    last_event_id: str | None,
    event_of: Callable[[str], str | None],
) -> bytes:
    """
    The events of C{replay}, after a C{reset} event if some of what the
    client missed is no longer kept.

    @param event_of: the event name of a channel's events, by channel name.
    """
    parts = []
    if replay.reset:
        parts.append(
            encode_event(
                messages.dumps(
                    {"route": "reset", "args": {"lastEventId": last_event_id}}
                ),
                "reset",
            )
        )
    for stored in replay.events:
        name = stored.event or event_of(stored.channel)
        parts.append(encode_event(stored.data, name, stored.id))
    return b"".join(parts)


def slim(request: Request, keep: tuple[bytes, ...] | None) -> None:
    """
    Let go of what an open stream's request no longer needs: its response
    headers (on the wire already), its empty body, and the request headers
    other than C{keep} (L{Headers} matches names in any case; L{None} keeps
    all).  Held by ten thousand idle streams, these were a fifth of what
    each one cost.
    """
    if not request.startedWriting:
        return
    if isinstance(request, QuickRequest):
        request.responseHeaders.clear()
        request.content = None
        if keep is not None:
            request.keep_headers(keep)
        return
    request.responseHeaders = Headers()
    content = request.content
    if content is not None:
        content.close()
        request.content = None
    if keep is not None:
        received = request.requestHeaders
        kept = Headers()
        for name in keep:
            values = received.getRawHeaders(name)
            if values is not None:
                kept.setRawHeaders(name, values)
        request.requestHeaders = kept
