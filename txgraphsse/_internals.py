# -*- test-case-name: tests.test_internals -*-
"""
The one seam with Twisted's private attributes.

Sending an event straight to a plain TCP socket, instead of through
C{transport.write} (which buffers, registers for writability and sends on a
later reactor turn), is most of what makes fan-out cheap.  Doing so reads
and writes attributes that Twisted keeps private to
C{twisted.internet.abstract.FileDescriptor}: the names in
L{TRANSPORT_ATTRIBUTES}.  They are touched here and nowhere else in the
package.

At import, L{probe} checks that a file descriptor still has those
attributes and that C{write} still queues into them as this module
expects.  Where it does not (a Twisted release renamed one, say), every
stream falls back to the public C{transport.write} path, and the fall-back
is logged once: events are still delivered, just with a write turn each.
C{tests/test_internals.py} names every attribute, so that an upgrade which
changes them fails there loudly, and runs the stream tests with the fast
path off.

This module also holds the other Twisted private names the package relies
on: the TLS context factory of a TLS server endpoint, which
L{rebuild_tls_context} changes for the tap, and the wrapper that lets a
site's HTTP/1.1 channel hand over to HTTP/2 when TLS negotiates it, which
L{negotiating_channel} puts around the endpoint's own channel.

It knows transports and ports, never sessions, requests or events.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http

import twisted

__all__ = [
    "FAST_PATH",
    "TRANSPORT_ATTRIBUTES",
    "direct_transport",
    "negotiating_channel",
    "probe",
    "probed",
    "rebuild_tls_context",
    "write_cut",
    "write_direct",
]

_log = Logger()

#: The private attributes of Twisted's C{FileDescriptor} that the fast path
#: reads or writes, with the type each must have on a fresh one.
TRANSPORT_ATTRIBUTES: dict[str, type] = {
    "dataBuffer": bytes,
    "_tempDataBuffer": list,
    "_tempDataLen": int,
    "_writeDisconnected": bool,
    "_writeDisconnecting": bool,
    "producerPaused": bool,
}


class _ProbeReactor:
    """
    Just enough of a reactor for a file descriptor to register for writing.
    """

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


def probe(descriptor_type: type[tcp.Connection] = tcp.Connection) -> str:
    """
    Check that a C{descriptor_type} (over one end of a socket pair) keeps
    the attributes the fast path relies on, and that its C{write} queues
    into them.

    @return: C{""} if it does, else what differs (for the log).
    """
    ours, theirs = socket.socketpair()
    try:
        fd = descriptor_type(ours, None, _ProbeReactor())  # type: ignore[arg-type]
        for name, kind in TRANSPORT_ATTRIBUTES.items():
            if not hasattr(fd, name):
                return f"{descriptor_type.__name__} has no {name}"
            if type(getattr(fd, name)) is not kind:
                return f"{descriptor_type.__name__}.{name} is not a {kind.__name__}"
        fd.connected = 1
        fd.write(b"probe")
        if fd._tempDataBuffer != [b"probe"] or fd._tempDataLen != 5:
            return (
                f"{descriptor_type.__name__}.write no longer queues into"
                " _tempDataBuffer"
            )
        return ""
    finally:
        ours.close()
        theirs.close()


def probed(
    probe: Callable[[], str], log: Logger, message: str, **fields: object
) -> bool:
    """
    Run C{probe} (once, at import: an empty answer means the internals are
    as expected); if it reports a difference, log C{message} (a
    C{twisted.logger} format, with C{fields}) with the difference as
    C{{why}}, once.

    @return: whether the fast path that relies on the internals may be used.
    """
    differs = probe()
    if differs:
        log.warn(message, why=differs, **fields)
    return not differs


def _fast_path_holds() -> bool:
    return probed(
        probe,
        _log,
        "Twisted {version} differs from what the direct write path expects"
        " ({why}): streams write through transport.write instead",
        version=twisted.__version__,
    )


#: Whether streams may write straight to plain TCP sockets.
FAST_PATH = _fast_path_holds()


def direct_transport(transport: object) -> tcp.Connection | None:
    """
    C{transport}, if L{write_direct} may send to its socket: a plain TCP
    connection (not one that started TLS, whose writes must be encrypted),
    while L{FAST_PATH} holds; else L{None}.
    """
    if (
        FAST_PATH
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
    ):
        return transport
    return None


def write_direct(transport: tcp.Connection, data: bytes) -> bytes:
    """
    Send C{data} straight to C{transport}'s socket, if the transport holds
    nothing back.

    Bytes the transport took this turn and has not tried to send (as a
    stream opens, its response headers) go first, in the same send, so that
    an idle stream's transport never needs a write turn (which would also
    grow its attribute dict by half a kilobyte for the stream's life).  A
    transport that must close (or half-close) once its buffer drains, or has
    paused its producer, keeps its queue.  (A queue past the transport's
    buffer size has paused it: the HTTP channel is always its streaming
    producer.)

    @return: what is left to write through the public C{write} path, in
        order: C{b""} when the socket took everything, C{data} itself when
        the transport was not in a state to bypass.
    """
    if transport.dataBuffer or not transport.connected or transport._writeDisconnected:
        return data
    if transport._tempDataLen:
        if (
            transport.disconnecting
            or transport._writeDisconnecting
            or transport.producerPaused
        ):
            return data
        queued = transport._tempDataBuffer
        queued.append(data)
        data = b"".join(queued)
        queued.clear()
        transport._tempDataLen = 0
        transport.stopWriting()
    try:
        sent = transport.socket.send(data)
    except OSError:
        # BlockingIOError, or an error the transport will meet and close on
        # as it does.
        sent = 0
    return data[sent:] if sent else data


def write_cut(transport: tcp.Connection, parts: list[bytes]) -> int | None:
    """
    Send C{parts} (each a whole event, framed) straight to C{transport}'s
    socket, in one send; if the socket does not take them all, hand the
    transport only the rest of the part it stopped in, and have the
    transport's producer paused until that has gone (as the transport does
    when its buffer passes its size), so that what is left is held back
    by the producer, not copied into the transport.

    @return: L{None} when every part went (or the transport takes what is
        left: nothing to hold back); else the index of the part the send
        stopped in, whose rest the transport has: the later ones are the
        caller's to hold.
    """
    queued = transport._tempDataLen or transport.dataBuffer
    producer = transport.producer
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if queued or producer is None or not transport.streamingProducer:
        left = write_direct(transport, data)
        if left:
            transport.write(left)
        return None
    left = write_direct(transport, data)
    if not left:
        return None
    sent = len(data) - len(left)
    index, end = 0, len(parts[0])
    while end <= sent:
        index += 1
        end += len(parts[index])
    part = parts[index]
    transport.write(part[len(part) - (end - sent) :])
    if not transport.producerPaused:
        transport.producerPaused = True
        cast(IPushProducer, producer).pauseProducing()
    return index


def rebuild_tls_context(endpoint: object, rebuild: Callable[[Any], object]) -> bool:
    """
    Give a TLS server endpoint (C{SSL4ServerEndpoint}, before it listens)
    the context factory C{rebuild(old)} makes of the one it has.  Twisted
    offers no public way to change it once the C{ssl:} strports parser has
    built it.

    @return: whether it could; where the endpoint keeps its factory
        elsewhere (a Twisted that changed), it is left as it is, and that
        is logged once.
    """
    old = getattr(endpoint, "_sslContextFactory", None)
    if old is None:
        _warn_once(
            "tls",
            "{endpoint} keeps no _sslContextFactory: its TLS context is"
            " left as the strports parser made it",
            endpoint=type(endpoint).__name__,
        )
        return False
    endpoint._sslContextFactory = rebuild(old)  # type: ignore[attr-defined]
    return True


#: What L{_warn_once} has warned of.
_warned: set[str] = set()


def _warn_once(what: str, message: str, **fields: object) -> None:
    if what not in _warned:
        _warned.add(what)
        _log.warn(message, **fields)


def negotiating_channel(channel: Any) -> Any:
    """
    C{channel} (an C{HTTPChannel}) inside the wrapper that C{Site} puts
    around its own, which switches to HTTP/2 when TLS negotiates C{h2}.

    Twisted builds that wrapper only around a plain C{HTTPChannel}
    (C{http._genericHTTPChannelProtocolFactory}); the class is private.
    Where it is gone, C{channel} is used bare (HTTP/1.1 only), and that is
    logged once.
    """
    if _GENERIC_CHANNEL is None:
        _warn_once(
            "h2",
            "twisted.web.http has no _GenericHTTPChannelProtocol: the"
            " endpoint's site speaks HTTP/1.1 only",
        )
        return channel
    return _GENERIC_CHANNEL(channel)


#: Twisted's private HTTP/1.1-or-HTTP/2 wrapper, looked up once.
_GENERIC_CHANNEL: Any = getattr(http, "_GenericHTTPChannelProtocol", None)
