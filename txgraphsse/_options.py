# -*- test-case-name: tests.test_exports,tests.test_session -*-
"""
What an endpoint can be told: every option of C{setup_sse}, with its
default, in one place.

L{EndpointOptions} is the one source of the endpoint's options: the
endpoint reads them from it, and C{SSEBackend.setup_sse} builds it from its
keyword arguments, which a test holds to these fields name for name and
default for default.  A new option is a field here and a parameter there.
This module knows the value types of the lower layers (limits, CORS,
history, authorizers), never an endpoint, a session or a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from attrs import fields, frozen

from ._auth import IAuthorizer
from ._broker import HistoryPolicy
from ._channel import ChannelSpec
from ._cors import CORSPolicy
from ._limits import Limits
from ._session import OverflowPolicy

__all__ = ["KEPT_REQUEST_HEADERS", "EndpointOptions"]

#: The request headers an open stream keeps by default: those that
#: C{twisted.web}'s combined access log writes when the stream ends.
KEPT_REQUEST_HEADERS: tuple[bytes, ...] = (b"user-agent", b"referer")


@frozen
class EndpointOptions:
    """
    How one endpoint behaves.  Each field is the C{setup_sse} parameter of
    the same name, documented there.

    @ivar channels: named channels besides the default one.
    @ivar on_connection: C{(client, endpoint, session_id, request)}, when a
        stream opens.
    @ivar on_close: C{(endpoint)}, when the endpoint terminates.
    @ivar on_connection_close: as C{on_connection}, when a stream ends.
    @ivar keepalive: seconds between keep-alive comments (0: none).
    @ivar retry: the C{retry:} the client is told, in milliseconds.
    @ivar history: events each channel keeps for replay.
    @ivar dynamic_channels: whether clients may join channels not configured.
    @ivar request_timeout: default seconds a server-to-client call waits.
    @ivar max_backlog: bytes a paused stream may hold back.
    @ivar overflow: what happens past C{max_backlog}.
    @ivar write_timeout: seconds a paused stream may make no progress
        before it is dropped (L{None}: no limit).
    @ivar authorizer: who may connect, call and join (L{None}: anyone).
    @ivar limits: body size, rates, sessions, calls (L{None}: the defaults).
    @ivar cors: which other origins may use the endpoint (L{None}: none).
    @ivar keep_request_headers: the request headers an open stream keeps;
        L{None} keeps all.
    @ivar expose_errors: whether a failing route's answer says what failed.
    @ivar log_streams: whether each stream's opening and end are logged.
    """

    channels: Iterable[str | ChannelSpec] = ()
    on_connection: Callable[..., object] | None = None
    on_close: Callable[..., object] | None = None
    on_connection_close: Callable[..., object] | None = None
    keepalive: float = 15.0
    retry: int = 2000
    history: int | HistoryPolicy = 0
    dynamic_channels: bool = False
    request_timeout: float | None = 30.0
    max_backlog: int = 1 << 20
    overflow: OverflowPolicy = "disconnect"
    authorizer: IAuthorizer | None = None
    limits: Limits | None = None
    cors: CORSPolicy | None = None
    keep_request_headers: Iterable[bytes] | None = KEPT_REQUEST_HEADERS
    expose_errors: bool = False
    write_timeout: float | None = 60.0
    log_streams: bool = True

    def history_policy(self) -> HistoryPolicy:
        """
        C{history} as a L{HistoryPolicy}.
        """
        history = self.history
        return history if isinstance(history, HistoryPolicy) else HistoryPolicy(history)

    def kept_headers(self) -> tuple[bytes, ...] | None:
        """
        C{keep_request_headers} as a tuple (or L{None}: all).
        """
        keep = self.keep_request_headers
        return None if keep is None else tuple(keep)

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> EndpointOptions:
        """
        The options named in C{arguments} (a call's keyword arguments, with
        others beside them): every field must be there.
        """
        return cls(**{field.name: arguments[field.name] for field in fields(cls)})
