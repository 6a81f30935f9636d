# -*- test-case-name: tests.test_authorization -*-
"""
Credentials that stay fresh: a connection's token from the application's
C{get_token}, asked for before the stream opens and again shortly before
each token expires.

L{TokenKeeper} owns when to ask and what to do with the answer: it puts the
token in the connection's C{Authorization} header (for the stream's next
attempt and for every C{POST}) through an C{apply} function, and has the
open session carry on under it through a C{refresh} function (the
connection's C{refreshToken} C{POST}, PROTOCOL.md section 2).  It reads a
token's C{exp} without checking its signature, only to know when to ask
again: the server checks.  A token that is not a JWT with an C{exp} is
asked for again only when the server ends the stream at its expiry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["GetToken", "TokenKeeper", "token_expiry"]

#: The application's source of tokens: a function of no arguments that
#: returns a token (a JWT, say), or a L{Deferred} of one.
GetToken = Callable[[], "str | Deferred[str]"]


def token_expiry(token: str) -> float | None:
    """
    The C{exp} of JWT C{token} (POSIX seconds), unverified; L{None} if it is
    not a JWT or has none.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


class TokenKeeper:
    """
    Asks for a fresh token shortly before the current one expires.

    @ivar token: the current token, once there is one.  A new stream takes
        a new one when the server said this one expired, or it is about to
        (L{fresh}).
    @ivar margin: how long before a token's expiry a new one is asked for:
        this share of its remaining life, within L{least} and L{most}
        seconds.
    """

    _log = Logger()
    margin = 0.1
    least = 1.0
    most = 60.0

    def __init__(
        self,
        reactor: IReactorTime,
        get_token: GetToken,
        apply: Callable[[str], None],
        refresh: Callable[[], Deferred[Any] | None],
    ) -> None:
        """
        @param apply: puts a token in the connection's headers.
        @param refresh: has the open session carry on under the headers'
            token (L{None} when there is no session to refresh).
        """
        self._reactor = reactor
        self._get_token = get_token
        self._apply = apply
        self._refresh = refresh
        self._timer: IDelayedCall | None = None
        self._stopped = False
        self.token: str | None = None
        #: Whether the server said the token expired.
        self.stale = False

    def start(self) -> Deferred[None]:
        """
        Ask for the first token and put it in the headers.
        """
        return self._fetch()

    def renew(self, refresh: bool = True) -> Deferred[None]:
        """
        Ask for a new token now, put it in the headers and, if C{refresh},
        have the open session carry on under it.
        """
        fetched = self._fetch()
        if refresh:
            fetched.addCallback(lambda _: self._refreshed())
        return fetched

    def fresh(self) -> Deferred[None]:
        """
        Before a new stream: ask for a new token if the current one is
        L{stale} or about to expire, else keep it.
        """
        expires = None if self.token is None else token_expiry(self.token)
        if (
            self.stale
            or self.token is None
            or (expires is not None and expires - self._reactor.seconds() <= self.least)
        ):
            return self.renew(refresh=False)
        return succeed(None)

    def stop(self) -> None:
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _fetch(self) -> Deferred[None]:
        if self._stopped:
            return succeed(None)
        return maybeDeferred(self._get_token).addCallback(self._got)

    def _got(self, token: Any) -> None:
        if not isinstance(token, str) or not token:
            raise TypeError(f"get_token gave {type(token).__name__}, not a token")
        if self._stopped:
            return
        self.token = token
        self.stale = False
        self._apply(token)
        self._schedule(token)

    def _schedule(self, token: str) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        expires = token_expiry(token)
        if expires is None:
            return
        left = expires - self._reactor.seconds()
        early = min(self.most, max(self.least, left * self.margin))
        self._timer = self._reactor.callLater(max(0.0, left - early), self._due)

    def _due(self) -> None:
        self._timer = None
        self.renew().addErrback(self._failed)

    def _refreshed(self) -> Deferred[Any] | None:
        refreshed = self._refresh()
        if refreshed is not None:
            refreshed.addErrback(self._failed)
        return refreshed

    def _failed(self, failure: Failure) -> None:
        # The stream carries on until the old token's expiry; then the
        # server ends it, and the reconnect asks for a token again.
        self._log.failure("Could not refresh the token", failure=failure)
