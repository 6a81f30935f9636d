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
from ._encoder import encode_event

__all__ = ["encode_replay", "set_stream_headers", "slim"]


def set_stream_headers(request: Request) -> None:
    """
    Set the response headers of an event stream (a C{HEAD} gets them too).
    """
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache, no-transform")
    request.setHeader(b"x-accel-buffering", b"no")


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
