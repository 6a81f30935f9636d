# -*- test-case-name: tests.test_authorization -*-
"""
How long a stream's credentials last.

A principal that says when it expires (an C{expires} attribute, POSIX
seconds, as a L{txgraphsse.JWTPrincipal} has from its token's C{exp}) holds
its stream until then: at that moment the stream gets an C{expired} event
and ends, unless the client has refreshed its credentials on the back
channel (C{refreshToken}, PROTOCOL.md section 2) and the same stream carries
on under the new ones.  A refresh re-checks the session's channels against
the new principal: a channel it may no longer join is left, with a C{left}
event.

L{Lifetimes} owns one timer per such session and the swap of its principal;
it reaches the session only to close it or take it out of a channel, and
sends events through the endpoint's C{send}.  It knows nothing of HTTP or
of tokens: the authorizer read the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from . import _messages as messages
from ._auth import IAuthorizer
from ._encoder import encode_event

__all__ = ["EXPIRED_EVENT", "Lifetimes", "expires_of"]

#: The last event of a stream whose credentials expired.
EXPIRED_EVENT = encode_event(
    messages.dumps({"route": "expired", "args": "the token has expired"}), "expired"
)


def expires_of(principal: Any) -> float | None:
    """
    When C{principal}'s credentials expire (POSIX seconds), if it says.
    """
    expires = getattr(principal, "expires", None)
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        return float(expires)
    return None


class _Channel(Protocol):
    def deregister(self, session: Any) -> None: ...


class _Session(Protocol):
    id: str
    principal: Any
    channels: tuple[str, ...]
    close_reason: str | None

    @property
    def is_connected(self) -> bool: ...

    def close(self, final: bytes | None = None) -> None: ...


class Lifetimes:
    """
    The expiry timers of one endpoint's sessions.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        authorizer: IAuthorizer,
        channels: Mapping[str, _Channel],
        send: Callable[..., int],
        default_channel: str,
    ) -> None:
        """
        @param channels: the endpoint's channels, by name.
        @param send: the endpoint's C{send(message, event, session_id=...)}.
        @param default_channel: the name of the channel every session is in,
            which no refresh takes it out of.
        """
        self._clock = clock
        self._authorizer = authorizer
        self._channels = channels
        self._send = send
        self._default = default_channel
        self._timers: dict[str, IDelayedCall] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def watch(self, session: _Session) -> None:
        """
        End C{session} when its principal's credentials expire, if they do.
        """
        expires = expires_of(session.principal)
        if expires is None:
            return
        delay = max(0.0, expires - self._clock.seconds())
        self._timers[session.id] = self._clock.callLater(delay, self._expire, session)

    def forget(self, session_id: str) -> None:
        """
        The session has ended: drop its timer.
        """
        timer = self._timers.pop(session_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def refresh(self, session: _Session, principal: Any) -> float | None:
        """
        Carry C{session} on under C{principal}, the same client's renewed
        credentials: its timer moves to their expiry, and it leaves the
        channels they may not join, each with a C{left} event.

        @return: when the new credentials expire, if they do.
        """
        self.forget(session.id)
        session.principal = principal
        for name in session.channels:
            if name == self._default or self._authorizer.can_join(principal, name):
                continue
            channel = self._channels.get(name)
            if channel is not None:
                channel.deregister(session)
            self._send({"route": "left", "args": name}, "left", session_id=session.id)
            self._log.info(
                "Session {session} left {channel}: its refreshed token does not"
                " allow it",
                session=session.id[:8],
                channel=name,
            )
        self.watch(session)
        return expires_of(principal)

    def _expire(self, session: _Session) -> None:
        self._timers.pop(session.id, None)
        if not session.is_connected:
            return
        self._log.info(
            "Session {session} ended: its token expired", session=session.id[:8]
        )
        session.close_reason = "token expired"
        session.close(EXPIRED_EVENT)
