# -*- test-case-name: tests.test_encoder -*-
"""
The incremental C{text/event-stream} parser, exactly as WHATWG HTML specifies
it ("Server-sent events", "Interpreting an event stream").

It owns the reading side of the encoder's bytes and is shared by the Python
client and by the tests.  Bytes may arrive split anywhere, even inside a UTF-8
sequence or between the CR and LF of one line break.  It imports nothing of
the project.
"""

from __future__ import annotations

import codecs

from attrs import frozen

__all__ = ["EventStreamParser", "ServerSentEvent"]


@frozen
class ServerSentEvent:
    """
    One dispatched event.

    @ivar type: the event name (C{message} if the stream named none).
    @ivar data: the payload, with every line break as C{\\n}.
    @ivar last_event_id: the stream's last event id when this was dispatched.
    """

    type: str
    data: str
    last_event_id: str


class EventStreamParser:
    """
    Feed bytes in with L{feed}; get back the events they complete.

    @ivar last_event_id: the last event id buffer's committed value.
    @ivar retry: the last valid C{retry:} value in milliseconds, or L{None}.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._first = True
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """
        Parse C{data}, the next bytes of the stream.

        @return: the events that these bytes complete, in order.
        """
        text = self._decoder.decode(data)
        if self._first and text:
            self._first = False
            if text[0] == "\ufeff":
                text = text[1:]
        if self._after_cr and text:
            # The CR that ended the previous chunk was a whole line break; an
            # LF right after it belongs to that break.
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
        text = self._pending + text
        events: list[ServerSentEvent] = []
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < length:
                end = cr
                nxt = cr + 2 if text[cr + 1] == "\n" else cr + 1
            else:
                end, nxt = cr, cr + 1
                self._after_cr = True
            self._line(text[start:end], events)
            start = nxt
        self._pending = text[start:]
        return events

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return
        colon = line.find(":")
        if colon == -1:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        self.last_event_id = self._id_buffer
        data, event = self._data, self._event
        self._data = []
        self._event = ""
        if not data:
            return
        events.append(
            ServerSentEvent(
                type=event or "message",
                data="\n".join(data),
                last_event_id=self.last_event_id,
            )
        )
