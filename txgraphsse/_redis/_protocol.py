# -*- test-case-name: tests.test_redis -*-
"""
The one seam with txredisapi's private hooks: the two connections to Redis,
and the faster reading and writing they use when txredisapi allows it.

L{_Faster} overrides hooks that txredisapi keeps to itself: the names in
L{TXREDISAPI_ATTRIBUTES}.  No other module of the broker names them.  At
import, L{probe} checks that txredisapi's protocols still have those hooks
with the signatures L{_Faster} expects; where they do not (a txredisapi
release changed them), both connections are txredisapi's plain protocols,
and that is logged once: Redis is still spoken, just more slowly.
C{tests/test_redis.py} names every hook, so that an upgrade which changes
them fails there loudly, and runs a broker with the fast path off.

It knows the connections and what they hand on (a message on a channel, a
lost connection) to L{_LinkOwner}; never keys, scripts, sessions or events.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import RedisProtocol, SubscriberProtocol

from .._internals import probed

__all__ = [
    "FASTER_OWN_ATTRIBUTES",
    "FAST_PATH",
    "TXREDISAPI_ATTRIBUTES",
    "Command",
    "Subscriber",
    "command_protocol",
    "probe",
    "subscriber_protocol",
]

_log = Logger()

#: What L{_Faster} relies on, in each txredisapi protocol (and the classes
#: they inherit from): the hooks it overrides or reads, and for a method the
#: parameters it must (still) take.
TXREDISAPI_ATTRIBUTES: dict[str, tuple[str, ...] | None] = {
    # Called with the rest of the data and unpause=True one reactor turn
    # after a bulk string; _Faster's loop replaces that turn.
    "dataReceived": ("data", "unpause"),
    # Called by the reply parser with the data after a bulk string.
    "setLineMode": ("extra",),
    # The flag the line reader loops on; setLineMode sets it.
    "line_mode": None,
    # How execute_command frames a command.
    "_build_command": ("args", "kwargs"),
}

#: What L{_Faster} adds, which txredisapi's protocols must not have already.
FASTER_OWN_ATTRIBUTES = ("_extra",)


class _LinkOwner(Protocol):
    """
    What a connection tells whoever opened it (the link).
    """

    def received(self, channel: str, message: Any) -> None: ...

    def lost(self, proto: object) -> None: ...


def _parameters(cls: type, name: str) -> list[str] | None:
    try:
        return list(inspect.signature(getattr(cls, name)).parameters)
    except (TypeError, ValueError):
        return None


def _line_reader(cls: type) -> type | None:
    """
    The class in C{cls}'s MRO whose C{setLineMode} L{_Faster} overrides.
    """
    for base in cls.__mro__:
        if "setLineMode" in vars(base):
            return base
    return None


def probe(*protocols: type) -> str:
    """
    Check that each of C{protocols} (by default txredisapi's C{RedisProtocol}
    and C{SubscriberProtocol}) has the hooks L{_Faster} relies on, with the
    parameters it passes, and none of the attributes it adds
    (L{FASTER_OWN_ATTRIBUTES}), and that they are wired as it expects: the
    line reader loops on C{line_mode}, and C{execute_command} frames
    commands with C{_build_command}.

    @return: C{""} if they do, else what differs (for the log).
    """
    for cls in protocols or (RedisProtocol, SubscriberProtocol):
        for name, wanted in TXREDISAPI_ATTRIBUTES.items():
            if not hasattr(cls, name):
                return f"{cls.__name__} has no {name}"
            if wanted is None:
                continue
            found = _parameters(cls, name)
            if found is None:
                return f"{cls.__name__}.{name} is not a method"
            if [p for p in found if p != "self"] != list(wanted):
                return f"{cls.__name__}.{name} takes ({', '.join(found)})"
        for name in FASTER_OWN_ATTRIBUTES:
            if hasattr(cls, name):
                return f"{cls.__name__} has a {name} of its own"
        reader = _line_reader(cls)
        received = getattr(reader, "dataReceived", None)
        code = getattr(received, "__code__", None)
        if code is None or "line_mode" not in code.co_names:
            return f"{cls.__name__}'s line reader no longer loops on line_mode"
        execute = getattr(getattr(cls, "execute_command", None), "__code__", None)
        if execute is None or "_build_command" not in execute.co_names:
            return f"{cls.__name__}.execute_command no longer calls _build_command"
    return ""


#: What is logged, once, when L{probe} finds txredisapi changed.
_FAST_PATH_OFF = (
    "txredisapi differs from what the faster Redis protocol expects"
    " ({why}): the fast path is off, and Redis is spoken through"
    " txredisapi's plain protocols"
)


def _fast_path_holds() -> bool:
    """
    Run L{probe} (once: this runs at import), and log why the fast path is
    off if it fails (see L{probed}).
    """
    return probed(probe, _log, _FAST_PATH_OFF)


#: Whether the connections use L{_Faster}.  Read each time a connection is
#: made, so that a test may turn it off.
FAST_PATH = _fast_path_holds()


class _Faster:
    """
    Two changes to txredisapi's pure-Python protocol, for throughput.

    Reading: after each bulk string, txredisapi pauses the transport and
    parses the rest of the data one reactor turn later (to bound its
    recursion), which costs two system calls and a turn per element of
    every reply and message.  Here the rest is parsed in a loop at once.
    (With hiredis installed, parsing is hiredis's and this changes nothing.)

    Writing: commands are framed with one C{join}.
    """

    _extra: bytes | None = None

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        chunk: bytes | None = data
        while chunk:
            self._extra = None
            super().dataReceived(chunk)  # type: ignore[misc]
            chunk = self._extra

    def setLineMode(self, extra: bytes = b"") -> None:
        self.line_mode = 1
        if extra:
            self._extra = extra

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode("utf-8")
            else:
                data = str(arg).encode("ascii")
            parts.append(b"$%d\r\n" % len(data))
            parts.append(data)
            parts.append(b"\r\n")
        return b"".join(parts)


class Command(RedisProtocol):  # type: ignore[misc]
    """
    The connection that sends every command, in order.
    """

    def __init__(self, owner: _LinkOwner) -> None:
        RedisProtocol.__init__(self, charset="utf-8", convertNumbers=False)
        self.owner = owner

    def connectionLost(self, why: Failure) -> None:
        RedisProtocol.connectionLost(self, why)
        self.owner.lost(self)


class Subscriber(SubscriberProtocol):  # type: ignore[misc]
    """
    The connection that receives the bus and this node's messages.
    """

    def __init__(self, owner: _LinkOwner) -> None:
        SubscriberProtocol.__init__(self, charset="utf-8", convertNumbers=False)
        self.owner = owner

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.owner.received(str(channel), message)

    def connectionLost(self, why: Failure) -> None:
        SubscriberProtocol.connectionLost(self, why)
        self.owner.lost(self)


class _FastCommand(_Faster, Command):
    """
    L{Command}, reading and writing as L{_Faster} does.
    """


class _FastSubscriber(_Faster, Subscriber):
    """
    L{Subscriber}, reading and writing as L{_Faster} does.
    """


def command_protocol(owner: _LinkOwner) -> Command:
    """
    A new command connection for C{owner}: a faster one while L{FAST_PATH}
    holds.
    """
    return (_FastCommand if FAST_PATH else Command)(owner)


def subscriber_protocol(owner: _LinkOwner) -> Subscriber:
    """
    A new subscriber connection for C{owner}: a faster one while
    L{FAST_PATH} holds.
    """
    return (_FastSubscriber if FAST_PATH else Subscriber)(owner)
