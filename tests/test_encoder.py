"""
Tests for L{txgraphsse._encoder} and L{txgraphsse._parser}: the bytes of one
event, exactly as WHATWG HTML's "Server-sent events" reads them, and the
incremental parser that reads them back whatever way the stream is split.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import (
    EventStreamParser,
    ServerSentEvent,
    encode_comment,
    encode_event,
    encode_retry,
)
from txgraphsse._encoder import KEEPALIVE, chunk

_BREAK = re.compile("\r\n|\r|\n")

#: Text an C{event} or C{id} field may carry: no line break.
_field_text = st.text().map(lambda s: s.replace("\r", "").replace("\n", ""))
#: Text an C{id} may carry: no line break and no NUL.
_id_text = _field_text.map(lambda s: s.replace("\0", ""))


def _normalized(data: str) -> str:
    """
    C{data} as a client reads it back: every line break as C{\\n}.
    """
    return _BREAK.sub("\n", data)


def _parse(*chunks: bytes) -> list[ServerSentEvent]:
    """
    Feed C{chunks} to a new parser, in order, and return every event.
    """
    parser = EventStreamParser()
    events: list[ServerSentEvent] = []
    for piece in chunks:
        events.extend(parser.feed(piece))
    return events


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{stream} cut at the positions C{cuts} (in any order, repeats allowed).
    """
    points = sorted({min(max(cut, 0), len(stream)) for cut in cuts})
    pieces = []
    start = 0
    for point in points:
        pieces.append(stream[start:point])
        start = point
    pieces.append(stream[start:])
    return pieces


class EncodeEventTests(SynchronousTestCase):
    """
    L{encode_event} writes the fields of one event, WHATWG-exact.
    """

    def test_data_only(self) -> None:
        """
        A payload alone is one C{data:} line and the blank line that
        dispatches it.
        """
        self.assertEqual(encode_event("hello"), b"data: hello\n\n")

    def test_all_fields(self) -> None:
        """
        C{id} and C{event} are written as their own fields, before the data
        and the blank line.
        """
        self.assertEqual(
            encode_event("hello", event="update", id="7"),
            b"id: 7\nevent: update\ndata: hello\n\n",
        )

    def test_empty_data(self) -> None:
        """
        An empty payload is still one (empty) C{data:} line, so the client
        dispatches an event whose data is the empty string.
        """
        self.assertEqual(encode_event(""), b"data: \n\n")
        self.assertEqual(_parse(encode_event("")), [ServerSentEvent("message", "", "")])

    def test_utf8(self) -> None:
        """
        Text is encoded as UTF-8.
        """
        self.assertEqual(
            encode_event("h\xe9llo \u2603 \U0001f600", event="\xe9v"),
            "event: \xe9v\ndata: h\xe9llo \u2603 \U0001f600\n\n".encode(),
        )

    def test_lf_splits_data(self) -> None:
        """
        Every C{\\n} in the payload starts a new C{data:} line.
        """
        self.assertEqual(encode_event("a\nb\nc"), b"data: a\ndata: b\ndata: c\n\n")

    def test_crlf_splits_data(self) -> None:
        """
        A C{\\r\\n} is one line break, not two.
        """
        self.assertEqual(encode_event("a\r\nb"), b"data: a\ndata: b\n\n")

    def test_lone_cr_splits_data(self) -> None:
        """
        A lone C{\\r} is a line break too: written raw, a client would read
        it as the end of the line anyway.
        """
        self.assertEqual(encode_event("a\rb"), b"data: a\ndata: b\n\n")

    def test_mixed_breaks(self) -> None:
        """
        C{\\r}, C{\\r\\n} and C{\\n} in a row are three line breaks, and a
        trailing line break gives a last empty C{data:} line, so nothing is
        lost.
        """
        self.assertEqual(
            encode_event("a\r\r\n\nb\n"),
            b"data: a\ndata: \ndata: \ndata: b\ndata: \n\n",
        )
        self.assertEqual(_parse(encode_event("a\r\r\n\nb\n"))[0].data, "a\n\n\nb\n")

    def test_only_cr_and_lf_are_breaks(self) -> None:
        """
        Unicode line separators that SSE does not treat as line breaks
        (NEL, LS, PS, VT, FF) stay inside one C{data:} line.
        """
        text = "a\x85b\u2028c\u2029d\x0be\x0cf"
        self.assertEqual(encode_event(text), ("data: " + text + "\n\n").encode())
        self.assertEqual(_parse(encode_event(text))[0].data, text)

    def test_leading_space_survives(self) -> None:
        """
        A line's own leading space survives, since the encoder writes
        C{data: } and the client strips exactly one space.
        """
        self.assertEqual(encode_event(" x\n  y"), b"data:  x\ndata:   y\n\n")
        self.assertEqual(_parse(encode_event(" x\n  y"))[0].data, " x\n  y")

    def test_event_with_line_break_refused(self) -> None:
        """
        An event name with any line break raises L{ValueError}.
        """
        for name in ("a\nb", "a\rb", "a\r\nb", "\n", "x\r"):
            with self.subTest(name=name):
                self.assertRaises(ValueError, encode_event, "data", event=name)

    def test_id_with_line_break_refused(self) -> None:
        """
        An id with any line break raises L{ValueError}.
        """
        for value in ("1\n2", "1\r2", "1\r\n2", "\r", "3\n"):
            with self.subTest(id=value):
                self.assertRaises(ValueError, encode_event, "data", id=value)

    def test_id_with_nul_refused(self) -> None:
        """
        An id with NUL raises L{ValueError}: a client would ignore it.
        """
        self.assertRaises(ValueError, encode_event, "data", id="a\0b")
        self.assertRaises(ValueError, encode_event, "data", event="e", id="\0")

    def test_empty_event_and_id(self) -> None:
        """
        An empty event name reads back as C{message}; an empty id resets the
        client's last event id.
        """
        encoded = encode_event("x", event="", id="")
        self.assertEqual(encoded, b"id: \nevent: \ndata: x\n\n")
        parser = EventStreamParser()
        parser.feed(encode_event("a", id="5"))
        self.assertEqual(parser.feed(encoded), [ServerSentEvent("message", "x", "")])
        self.assertEqual(parser.last_event_id, "")


class EncodeCommentRetryChunkTests(SynchronousTestCase):
    """
    Comments, C{retry:} and chunk framing.
    """

    def test_keepalive(self) -> None:
        """
        The keep-alive is a bare comment line and a blank line, which a
        client reads as no event.
        """
        self.assertEqual(KEEPALIVE, b":\n\n")
        self.assertEqual(_parse(KEEPALIVE * 3), [])

    def test_comment(self) -> None:
        """
        A comment is one C{:} line per line of its text, then a blank line.
        """
        self.assertEqual(encode_comment(), b":\n\n")
        self.assertEqual(encode_comment("ping"), b":ping\n\n")
        self.assertEqual(encode_comment("a\nb\r\nc\rd"), b":a\n:b\n:c\n:d\n\n")

    def test_comment_is_no_event(self) -> None:
        """
        A comment, whatever its text, dispatches no event and leaves the
        stream's state alone.
        """
        parser = EventStreamParser()
        parser.feed(encode_event("x", id="9"))
        self.assertEqual(parser.feed(encode_comment("data: no\nid: 3\nretry: 1")), [])
        self.assertEqual(parser.last_event_id, "9")
        self.assertIsNone(parser.retry)

    def test_retry(self) -> None:
        """
        C{retry:} carries ASCII digits only, and the parser reads it.
        """
        self.assertEqual(encode_retry(2000), b"retry: 2000\n\n")
        self.assertEqual(encode_retry(0), b"retry: 0\n\n")
        parser = EventStreamParser()
        self.assertEqual(parser.feed(encode_retry(1234)), [])
        self.assertEqual(parser.retry, 1234)

    def test_retry_refuses_non_digits(self) -> None:
        """
        A negative, fractional, boolean or non-number value raises
        L{ValueError}: its field would not be only digits.
        """
        for value in (-1, 1.5, True, "100", None):
            with self.subTest(value=value):
                self.assertRaises(ValueError, encode_retry, value)

    def test_chunk(self) -> None:
        """
        L{chunk} frames a payload as one HTTP/1.1 chunk: size in hex, CRLF,
        the bytes, CRLF.
        """
        self.assertEqual(chunk(b"abc"), b"3\r\nabc\r\n")
        self.assertEqual(chunk(b"x" * 255), b"ff\r\n" + b"x" * 255 + b"\r\n")
        self.assertEqual(chunk(b"x" * 4096)[:5], b"1000\r")

    @given(st.binary(min_size=1))
    def test_chunk_roundtrip(self, payload: bytes) -> None:
        """
        The size line of any non-empty payload's chunk is its length in hex.
        """
        framed = chunk(payload)
        size, _, rest = framed.partition(b"\r\n")
        self.assertEqual(int(size, 16), len(payload))
        self.assertEqual(rest, payload + b"\r\n")


class ParserTests(SynchronousTestCase):
    """
    L{EventStreamParser} follows "Interpreting an event stream".
    """

    def test_bom_stripped(self) -> None:
        """
        One leading UTF-8 BOM is stripped, even when it arrives split.
        """
        self.assertEqual(
            _parse(b"\xef\xbb\xbfdata: x\n\n"), [ServerSentEvent("message", "x", "")]
        )
        self.assertEqual(
            _parse(b"\xef", b"\xbb", b"\xbf", b"data: x\n\n"),
            [ServerSentEvent("message", "x", "")],
        )

    def test_only_one_bom_stripped(self) -> None:
        """
        A second BOM is part of the field name, which is then unknown.
        """
        self.assertEqual(_parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"), [])

    def test_bom_only_at_start(self) -> None:
        """
        A BOM after the first line is not stripped.
        """
        self.assertEqual(
            _parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n"),
            [ServerSentEvent("message", "a", "")],
        )

    def test_comments_ignored(self) -> None:
        """
        Lines that start with a colon are ignored, between fields too.
        """
        self.assertEqual(
            _parse(b": hi\ndata: a\n:data: b\ndata: c\n\n:\n\n"),
            [ServerSentEvent("message", "a\nc", "")],
        )

    def test_field_without_colon(self) -> None:
        """
        A line without a colon is a field with an empty value: C{data} alone
        adds an empty line to the data.
        """
        self.assertEqual(_parse(b"data\n\n"), [ServerSentEvent("message", "", "")])
        self.assertEqual(
            _parse(b"data\ndata\n\n"), [ServerSentEvent("message", "\n", "")]
        )

    def test_one_leading_space_removed(self) -> None:
        """
        Exactly one space after the colon is removed; none need be there.
        """
        self.assertEqual(
            _parse(b"data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\n"),
            [
                ServerSentEvent("message", "x", ""),
                ServerSentEvent("message", "x", ""),
                ServerSentEvent("message", " x", ""),
                ServerSentEvent("message", "\tx", ""),
            ],
        )

    def test_colon_in_value(self) -> None:
        """
        Only the first colon separates field and value.
        """
        self.assertEqual(
            _parse(b"data: a: b:c\n\n"), [ServerSentEvent("message", "a: b:c", "")]
        )

    def test_event_type(self) -> None:
        """
        C{event} names the next event only; then the type is C{message}
        again.
        """
        self.assertEqual(
            _parse(b"event: ping\ndata: 1\n\ndata: 2\n\n"),
            [ServerSentEvent("ping", "1", ""), ServerSentEvent("message", "2", "")],
        )

    def test_last_event_id(self) -> None:
        """
        An id is remembered for later events until another replaces it,
        and an id line without data still sets it.
        """
        parser = EventStreamParser()
        self.assertEqual(
            parser.feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\n"),
            [
                ServerSentEvent("message", "a", "1"),
                ServerSentEvent("message", "b", "1"),
                ServerSentEvent("message", "c", "2"),
            ],
        )
        self.assertEqual(parser.last_event_id, "2")

    def test_id_with_nul_ignored(self) -> None:
        """
        An id field whose value contains NUL is ignored.
        """
        parser = EventStreamParser()
        events = parser.feed(b"id: ok\ndata: a\n\nid: b\x00d\ndata: b\n\n")
        self.assertEqual(
            events,
            [
                ServerSentEvent("message", "a", "ok"),
                ServerSentEvent("message", "b", "ok"),
            ],
        )
        self.assertEqual(parser.last_event_id, "ok")

    def test_empty_data_buffer_not_dispatched(self) -> None:
        """
        A blank line with no C{data} dispatches nothing and forgets the
        event type.
        """
        self.assertEqual(_parse(b"event: foo\n\n"), [])
        self.assertEqual(
            _parse(b"event: foo\n\ndata: x\n\n"), [ServerSentEvent("message", "x", "")]
        )
        self.assertEqual(_parse(b"\n\n\n"), [])

    def test_retry(self) -> None:
        """
        A C{retry} of ASCII digits sets the reconnection time; anything else
        is ignored.
        """
        parser = EventStreamParser()
        parser.feed(b"retry: 1500\n\n")
        self.assertEqual(parser.retry, 1500)
        for bad in (
            b"retry: 15a0\n",
            b"retry: -1\n",
            b"retry: \n",
            b"retry: 1.5\n",
            b"retry:  7\n",
            "retry: \u0661\u0662\n".encode(),
        ):
            with self.subTest(line=bad):
                parser.feed(bad)
                self.assertEqual(parser.retry, 1500)
        parser.feed(b"retry:0\n")
        self.assertEqual(parser.retry, 0)

    def test_unknown_field_ignored(self) -> None:
        """
        Fields the spec does not name are ignored.
        """
        self.assertEqual(
            _parse(b"foo: bar\nDATA: no\ndata: x\n\n"),
            [ServerSentEvent("message", "x", "")],
        )

    def test_incomplete_final_event(self) -> None:
        """
        An event without its blank line is not dispatched, even once its
        last line is complete.
        """
        self.assertEqual(_parse(b"data: x"), [])
        self.assertEqual(_parse(b"data: x\n"), [])
        self.assertEqual(_parse(b"data: x\ndata: y\r\n"), [])

    def test_line_endings(self) -> None:
        """
        CRLF, a lone CR and a lone LF all end a line.
        """
        self.assertEqual(
            _parse(b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r"),
            [
                ServerSentEvent("message", "a\nb\nc", ""),
                ServerSentEvent("message", "d", ""),
            ],
        )

    def test_cr_lf_split(self) -> None:
        """
        A CRLF split between two feeds is one line break, not two: the LF
        does not end an event on its own.
        """
        parser = EventStreamParser()
        self.assertEqual(parser.feed(b"data: a\r"), [])
        self.assertEqual(parser.feed(b"\ndata: b\r"), [])
        self.assertEqual(parser.feed(b""), [])
        self.assertEqual(
            parser.feed(b"\n\r\n"), [ServerSentEvent("message", "a\nb", "")]
        )

    def test_partial_utf8_then_cr_lf_split(self) -> None:
        """
        A UTF-8 sequence split just before a CR, and that CR's LF in the next
        feed: the character is whole and the CRLF is one line break.
        """
        parser = EventStreamParser()
        self.assertEqual(parser.feed(b"data: \xc3"), [])
        self.assertEqual(parser.feed(b"\xa9\r"), [])
        self.assertEqual(parser.feed(b"\ndata: b\r"), [])
        self.assertEqual(
            parser.feed(b"\n\r\n"), [ServerSentEvent("message", "\xe9\nb", "")]
        )

    def test_utf8_split(self) -> None:
        """
        A UTF-8 sequence split between feeds is decoded whole.
        """
        encoded = encode_event("\U0001f600\u2603")
        self.assertEqual(
            _parse(*[encoded[i : i + 1] for i in range(len(encoded))]),
            [ServerSentEvent("message", "\U0001f600\u2603", "")],
        )

    def test_invalid_utf8_replaced(self) -> None:
        """
        Invalid UTF-8 is decoded with U+FFFD, as browsers do.
        """
        self.assertEqual(
            _parse(b"data: a\xffb\n\n"), [ServerSentEvent("message", "a\ufffdb", "")]
        )


class RoundTripTests(SynchronousTestCase):
    """
    Whatever the encoder writes, the parser reads back, however the bytes
    are split.
    """

    @given(data=st.text(), event=st.none() | _field_text, id=st.none() | _id_text)
    def test_roundtrip(self, data: str, event: str | None, id: str | None) -> None:
        """
        One encoded event reads back as its data with line breaks as
        C{\\n}, its name (C{message} if none or empty), and its id.
        """
        self.assertEqual(
            _parse(encode_event(data, event, id)),
            [ServerSentEvent(event or "message", _normalized(data), id or "")],
        )

    @given(
        data=st.text(),
        event=st.none() | _field_text,
        id=st.none() | _id_text,
        cuts=st.lists(st.integers(min_value=0, max_value=10_000)),
    )
    def test_roundtrip_split(
        self, data: str, event: str | None, id: str | None, cuts: list[int]
    ) -> None:
        """
        Split anywhere (inside UTF-8 sequences, between CR and LF), one
        encoded event still reads back exactly.
        """
        encoded = encode_event(data, event, id)
        # Aim the cuts inside the event, whatever its length.
        pieces = _split(encoded, [cut % (len(encoded) + 1) for cut in cuts])
        self.assertEqual(
            _parse(*pieces),
            [ServerSentEvent(event or "message", _normalized(data), id or "")],
        )

    def test_roundtrip_every_split(self) -> None:
        """
        An event full of multi-byte characters and CRLFs reads back the same
        when split at each single position.
        """
        data = "\xe9\r\n\U0001f600\r\r\n\u2603\n\r"
        encoded = encode_event(data, event="\u00e9v\U0001f600", id="\u2603")
        expected = [ServerSentEvent("\u00e9v\U0001f600", _normalized(data), "\u2603")]
        for cut in range(len(encoded) + 1):
            with self.subTest(cut=cut):
                self.assertEqual(_parse(encoded[:cut], encoded[cut:]), expected)

    @given(
        events=st.lists(
            st.tuples(st.text(), st.none() | _field_text, st.none() | _id_text),
            max_size=20,
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=10_000)),
        retry=st.none() | st.integers(min_value=0, max_value=10**12),
        comments=st.booleans(),
    )
    def test_many_events_split(
        self,
        events: list[tuple[str, str | None, str | None]],
        cuts: list[int],
        retry: int | None,
        comments: bool,
    ) -> None:
        """
        Many encoded events (with keep-alives between them and a C{retry:}
        first), concatenated and split anywhere, read back in order, each
        with the last id sent so far.
        """
        parts = [] if retry is None else [encode_retry(retry)]
        expected = []
        last_id = ""
        for data, event, id in events:
            parts.append(encode_event(data, event, id))
            if comments:
                parts.append(KEEPALIVE)
            if id is not None:
                last_id = id
            expected.append(
                ServerSentEvent(event or "message", _normalized(data), last_id)
            )
        stream = b"".join(parts)
        parser = EventStreamParser()
        got: list[ServerSentEvent] = []
        for piece in _split(stream, [cut % (len(stream) + 1) for cut in cuts]):
            got.extend(parser.feed(piece))
        self.assertEqual(got, expected)
        self.assertEqual(parser.last_event_id, last_id)
        self.assertEqual(parser.retry, retry)

    @given(data=st.text(), event=st.none() | st.text(), id=st.none() | st.text())
    def test_refuses_exactly_what_cannot_be_sent(
        self, data: str, event: str | None, id: str | None
    ) -> None:
        """
        L{encode_event} raises L{ValueError} exactly when the event name or
        id has a line break or the id has NUL; otherwise it encodes.
        """
        bad = (event is not None and ("\n" in event or "\r" in event)) or (
            id is not None and ("\n" in id or "\r" in id or "\0" in id)
        )
        if bad:
            self.assertRaises(ValueError, encode_event, data, event, id)
        else:
            self.assertIsInstance(encode_event(data, event, id), bytes)


class ParserRobustnessTests(SynchronousTestCase):
    """
    The parser survives any bytes, fed in any pieces.
    """

    @given(
        stream=st.binary(max_size=400)
        | st.lists(
            st.sampled_from(
                [
                    b"data",
                    b"data:",
                    b"data: x",
                    b"event: e",
                    b"id: 1",
                    b"id: \x00",
                    b"retry: 12",
                    b":",
                    b" ",
                    b"\r",
                    b"\n",
                    b"\r\n",
                    b"\xef\xbb\xbf",
                    b"\xc3",
                    b"\xa9",
                    b"\xf0\x9f\x98",
                    b"\x80",
                    b"\xff",
                ]
            ),
            max_size=60,
        ).map(b"".join),
        cuts=st.lists(st.integers(min_value=0, max_value=10_000)),
    )
    def test_split_same_as_whole(self, stream: bytes, cuts: list[int]) -> None:
        """
        Arbitrary bytes never crash the parser, and split anywhere they give
        the same events, last id and retry as fed whole.
        """
        whole = EventStreamParser()
        expected = whole.feed(stream)
        split = EventStreamParser()
        got: list[ServerSentEvent] = []
        for piece in _split(stream, [cut % (len(stream) + 1) for cut in cuts]):
            got.extend(split.feed(piece))
        self.assertEqual(got, expected)
        self.assertEqual(split.last_event_id, whole.last_event_id)
        self.assertEqual(split.retry, whole.retry)
        for event in got:
            self.assertNotIn("\r", event.data)
            self.assertNotIn("\r", event.type)
            self.assertNotIn("\n", event.type)
            self.assertNotIn("\0", event.last_event_id)

    @given(st.binary(max_size=200))
    def test_byte_by_byte_same_as_whole(self, stream: bytes) -> None:
        """
        Fed one byte at a time, any stream gives the same events as fed
        whole.
        """
        self.assertEqual(
            _parse(*[stream[i : i + 1] for i in range(len(stream))]), _parse(stream)
        )
