"""
Tests for L{txgraphsse._internals}: the one seam with Twisted's private
attributes.

Each attribute the direct write path relies on is named here, so that a
Twisted release that renames or retypes one fails these tests loudly rather
than leaving every plain-TCP stream without events.  The stream tests of
C{tests.test_integration} run again with the fast path off, to show that the
fall-back delivers events as well.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import abstract, tcp
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import SSEClient, _internals
from txgraphsse._logging import QuickLogger

from . import test_integration as integration
from .test_integration import RawHTTP, _reactor, dechunk

#: The private attributes of Twisted's file descriptors that the direct write
#: path reads or writes: written out here, not taken from the module under
#: test.
RELIED_UPON = [
    "dataBuffer",
    "_tempDataBuffer",
    "_tempDataLen",
    "_writeDisconnected",
    "_writeDisconnecting",
    "producerPaused",
]


class ProbeTests(SynchronousTestCase):
    """
    L{_internals.probe} against the installed Twisted, and against one that
    differs.
    """

    def test_attributes_named(self) -> None:
        """
        The module relies on exactly the attributes this test names.
        """
        self.assertEqual(sorted(_internals.TRANSPORT_ATTRIBUTES), sorted(RELIED_UPON))

    def test_installed_twisted_keeps_them(self) -> None:
        """
        A fresh file descriptor of the installed Twisted has every attribute,
        of its type, and the fast path is on.  If this fails after a Twisted
        upgrade, the direct write path must be brought up to date.
        """
        fd = abstract.FileDescriptor(reactor=MemoryReactor())
        found = {name: type(getattr(fd, name, None)) for name in RELIED_UPON}
        self.assertEqual(found, _internals.TRANSPORT_ATTRIBUTES)
        self.assertEqual(_internals.probe(), "")
        self.assertTrue(_internals.FAST_PATH)

    def test_missing_attribute(self) -> None:
        """
        A Twisted without one of the attributes fails the probe, which names
        it.
        """
        for name in RELIED_UPON:
            if name in vars(abstract.FileDescriptor):
                saved = vars(abstract.FileDescriptor)[name]
                delattr(abstract.FileDescriptor, name)
                self.addCleanup(setattr, abstract.FileDescriptor, name, saved)
                break
        else:
            self.fail("no relied-upon attribute is a class attribute")
        self.assertIn(name, _internals.probe())

    def test_own_write(self) -> None:
        """
        A transport class whose C{write} does not queue as Twisted's does
        fails the probe.
        """

        class Other(tcp.Connection):
            def write(self, data: bytes) -> None:
                pass

        self.assertIn("Other.write", _internals.probe(Other))

    def test_failed_probe_is_logged_once(self) -> None:
        """
        When the probe fails, the fast path is off and one warning says why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.patch(_internals, "probe", lambda: "FileDescriptor has no dataBuffer")
        self.assertFalse(_internals._fast_path_holds())
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["why"], "FileDescriptor has no dataBuffer")

    def test_direct_transport(self) -> None:
        """
        Only plain TCP connections take the direct path, and none while the
        fast path is off.
        """
        connection = tcp.Connection.__new__(tcp.Connection)
        self.assertIs(_internals.direct_transport(connection), connection)
        self.assertIsNone(_internals.direct_transport(object()))
        # One that started TLS must encrypt what it writes.
        connection.TLS = True
        self.assertIsNone(_internals.direct_transport(connection))
        connection.TLS = False
        self.patch(_internals, "FAST_PATH", False)
        self.assertIsNone(_internals.direct_transport(connection))


class QuickLoggerTests(SynchronousTestCase):
    """
    L{QuickLogger} emits what Twisted's L{Logger} emits.
    """

    def _emitted(self, logger: Logger, level: Any, **fields: Any) -> list[Any]:
        events: list[Any] = []
        bound = type(logger)("ns", source="src", observer=events.append)
        bound.emit(level, "{a} and {b}", **fields)
        return events

    def test_same_events(self) -> None:
        """
        At every level, the same keys and values, but for the time and the
        logger itself, which is a L{QuickLogger}.
        """
        for level in LogLevel.iterconstants():
            (ours,) = self._emitted(QuickLogger(), level, a=1, b="two")
            (theirs,) = self._emitted(Logger(), level, a=1, b="two")
            for event in (ours, theirs):
                self.assertIsInstance(event.pop("log_time"), float)
            self.assertIsInstance(ours.pop("log_logger"), QuickLogger)
            theirs.pop("log_logger")
            self.assertEqual(ours, theirs)
            self.assertEqual(ours["log_level"], level)

    def test_bad_level(self) -> None:
        """
        A level that is not a L{LogLevel} is reported as Twisted reports
        it: a critical failure, not the event.
        """
        (ours,) = self._emitted(QuickLogger(), "loud", a=1, b=2)
        (theirs,) = self._emitted(Logger(), "loud", a=1, b=2)
        self.assertEqual(ours["log_level"], LogLevel.critical)
        self.assertEqual(ours["log_format"], theirs["log_format"])
        self.assertEqual(
            type(ours["log_failure"].value), type(theirs["log_failure"].value)
        )

    def test_bound_as_a_descriptor(self) -> None:
        """
        As a class attribute it binds as L{Logger} does, and stays quick.
        """

        class Holder:
            log = QuickLogger()

        bound = Holder().log
        self.assertIsInstance(bound, QuickLogger)
        self.assertIsInstance(bound.source, Holder)


class TLSContextTests(SynchronousTestCase):
    """
    L{_internals.rebuild_tls_context}: the TLS endpoint's context factory.
    """

    def test_rebuilt(self) -> None:
        """
        An C{SSL4ServerEndpoint} gets the factory made of its own.
        """
        endpoint = SSL4ServerEndpoint(MemoryReactor(), 0, "old")  # type: ignore[arg-type]
        self.assertTrue(
            _internals.rebuild_tls_context(endpoint, lambda old: ("new", old))
        )
        self.assertEqual(endpoint._sslContextFactory, ("new", "old"))

    def test_missing(self) -> None:
        """
        An endpoint without the attribute is left as it is, and that is
        logged once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.patch(_internals, "_warned", set())
        endpoint = TCP4ServerEndpoint(MemoryReactor(), 0)
        for _ in range(2):
            self.assertFalse(
                _internals.rebuild_tls_context(endpoint, lambda old: "new")
            )
        self.assertEqual(len(events), 1)
        self.assertFalse(hasattr(endpoint, "_sslContextFactory"))


class DirectWriteTests(integration._RealSocketCase):
    """
    How a stream's bytes leave on the direct path, over real sockets.
    """

    async def test_live_transport_has_the_attributes(self) -> None:
        """
        The transport of a real stream is a plain TCP connection with every
        attribute the direct path touches, and the session uses it.
        """
        found: list[Any] = []

        def opened(client: SSEClient, *_: object) -> None:
            transport = client.http_request.channel.transport
            found.append(transport)
            found.append(client._tcp)

        await self.open_raw(on_connection=opened)
        transport, used = found
        self.assertIsInstance(transport, tcp.Connection)
        self.assertIs(used, transport)
        found = {name: type(getattr(transport, name, None)) for name in RELIED_UPON}
        self.assertEqual(found, _internals.TRANSPORT_ATTRIBUTES)

    async def test_open_needs_no_write_turn(self) -> None:
        """
        The response head and the preamble leave in the turn the stream
        opens: by C{on_connection}, the transport holds nothing and does not
        wait to write.
        """
        held: list[tuple[int, bool]] = []

        def opened(client: SSEClient, *_: object) -> None:
            transport = client.http_request.channel.transport
            assert isinstance(transport, tcp.Connection)
            held.append((transport._tempDataLen, transport in _reactor().getWriters()))

        _, _, raw = await self.open_raw(on_connection=opened)
        self.assertEqual(held, [(0, False)])
        status, headers, _ = raw.head()
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])

    async def _queued_then_pushed(
        self, queued: bytes, disconnect: bool, half_close: bool = False
    ) -> tuple[RawHTTP, tcp.Connection]:
        """
        Leave C{queued} (one framed comment) in the transport's buffer, as
        a write by someone else in this turn would, then push an event.
        """
        endpoint, session, raw = await self.open_raw()
        transport = session.http_request.channel.transport
        assert isinstance(transport, tcp.Connection)
        transport.write(b"%x\r\n%s\r\n" % (len(queued), queued))
        self.assertGreater(transport._tempDataLen, len(queued))
        if disconnect:
            transport.loseConnection()
        if half_close:
            transport.loseWriteConnection()
        session.push("after")
        endpoint._flush()
        return raw, transport

    async def test_queued_bytes_go_first(self) -> None:
        """
        Bytes the transport took and has not sent go out before the next
        event, joined into one send at once, and the transport then waits
        for nothing.
        """
        comment = b": queued\n\n"
        raw, transport = await self._queued_then_pushed(comment, disconnect=False)
        self.assertEqual(transport._tempDataLen, 0)
        self.assertNotIn(transport, _reactor().getWriters())
        await raw.until(lambda: b"after" in dechunk(raw.head()[2])[0])
        payload = dechunk(raw.head()[2])[0]
        self.assertTrue(payload.endswith(comment + b"data: after\n\n"), payload)

    async def test_large_queue_keeps_its_order(self) -> None:
        """
        More than a transport buffer's worth of queued bytes pauses the
        stream; the queue stays with the transport, and the event follows
        it.
        """
        comment = b": " + b"x" * 200_000 + b"\n\n"
        raw, _ = await self._queued_then_pushed(comment, disconnect=False)
        await raw.until(lambda: b"after" in dechunk(raw.head()[2])[0])
        payload = dechunk(raw.head()[2])[0]
        self.assertTrue(payload.endswith(comment + b"data: after\n\n"))

    async def test_closing_transport_still_closes(self) -> None:
        """
        A transport asked to close with bytes queued sends them and closes:
        an event pushed meanwhile does not take its queue away from it.
        """
        comment = b": queued\n\n"
        raw, _ = await self._queued_then_pushed(comment, disconnect=True)
        await raw.until_lost()
        self.assertIn(comment, dechunk(raw.head()[2])[0])

    async def test_half_closing_transport_still_half_closes(self) -> None:
        """
        The same for a transport asked to close only its writing side: the
        client gets the queued bytes, then the end of the stream.
        """
        comment = b": queued\n\n"
        raw, _ = await self._queued_then_pushed(
            comment, disconnect=False, half_close=True
        )
        await raw.until_lost()
        self.assertIn(comment, dechunk(raw.head()[2])[0])


class _FastPathOff:
    """
    Run a test case's tests with the direct write path off, as on a Twisted
    whose internals the probe did not recognise.
    """

    def setUp(self) -> None:
        self.patch(_internals, "FAST_PATH", False)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


class FallbackStreamTests(_FastPathOff, integration.StreamTests):
    """
    The stream and back-channel tests, through C{transport.write} only.
    """


class FallbackLeanStreamTests(_FastPathOff, integration.LeanStreamTests):
    """
    The lean stream tests, through C{transport.write} only.
    """

    async def test_fallback_is_used(self) -> None:
        """
        With the fast path off, sessions take the public path, and events
        still reach the client.
        """
        endpoint, session, raw = await self.open_raw()
        self.assertIsNone(session._tcp)
        endpoint.send("through write", session_id=session.id)
        await raw.until(lambda: b"through write" in dechunk(raw.head()[2])[0])
