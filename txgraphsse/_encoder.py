# -*- test-case-name: tests.test_encoder -*-
"""
The WHATWG C{text/event-stream} encoder.

This module owns the bytes of one event: the C{event}, C{data}, C{id} and
C{retry} fields, comments, and HTTP/1.1 chunk framing of an already encoded
payload.  It knows nothing of sessions, channels or HTTP requests, and it is
called once per event, whatever the number of receivers: the bytes it returns
are shared by every stream that gets the event.
"""

from __future__ import annotations

import re

__all__ = [
    "KEEPALIVE",
    "chunk",
    "encode_comment",
    "encode_event",
    "encode_retry",
]

_LINE_BREAK = re.compile("\r\n|\r|\n")

#: A comment line and the blank line that ends it: proxies see traffic, the
#: client sees nothing.
KEEPALIVE = b":\n\n"


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} must not contain a line break: {value!r}")


def encode_event(
    data: str,
    event: str | None = None,
    id: str | None = None,
) -> bytes:
    """
    Encode one event.

    @param data: the payload.  Every line break in it (C{\\n}, C{\\r\\n} or a
        lone C{\\r}) starts a new C{data:} line, so a client reads the text
        back with every line break as C{\\n}.
    @param event: the event name, or L{None} for the client's default
        (C{message}).
    @param id: the event id, or L{None} for none.
    @raise ValueError: if C{event} or C{id} contains a line break, or C{id}
        contains NUL; nothing is encoded then.
    @return: the event's bytes, ending with the blank line that dispatches it.
    """
    if "\n" in data or "\r" in data:
        body = "".join(["data: " + line + "\n" for line in _LINE_BREAK.split(data)])
    else:
        body = "data: " + data + "\n"
    if event is not None:
        _check_field("event name", event)
        body = "event: " + event + "\n" + body
    if id is not None:
        _check_field("id", id)
        if "\0" in id:
            raise ValueError(f"an SSE id must not contain NUL: {id!r}")
        body = "id: " + id + "\n" + body
    return (body + "\n").encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """
    Encode a comment: one C{:} line per line of C{text}, then a blank line.
    """
    lines = _LINE_BREAK.split(text)
    return ("".join([":" + line + "\n" for line in lines]) + "\n").encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    """
    Encode a C{retry:} field, which tells the client how long to wait before
    reconnecting.

    @raise ValueError: for a negative or non-integer value: the field is only
        ASCII digits.
    """
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int):
        raise ValueError(f"retry must be an int of milliseconds: {milliseconds!r}")
    if milliseconds < 0:
        raise ValueError(f"retry must not be negative: {milliseconds!r}")
    return b"retry: %d\n\n" % (milliseconds,)


def chunk(payload: bytes) -> bytes:
    """
    Frame C{payload} as one HTTP/1.1 chunk, so that bytes shared by many
    streams are framed once instead of once per stream.
    """
    return b"%x\r\n%b\r\n" % (len(payload), payload)
