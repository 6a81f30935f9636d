# -*- test-case-name: tests.test_security -*-
"""
Who a client is, and what it may join.

This module owns the authorizer seam (L{IAuthorizer}: C{authorize(request)}
gives a principal or refuses; C{can_join(principal, channel)}) and a ready
JWT authorizer (L{JWTAuthorizer}) whose claims list the channels a client may
join, as Mercure's C{subscribe} claim does.  It reads requests but never
writes responses: the resource turns L{Unauthorized} and L{AccessDenied} into
the JSON errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from zope.interface import Interface, implementer

__all__ = [
    "AccessDenied",
    "AllowAll",
    "CallableAuthorizer",
    "IAuthorizer",
    "JWTAuthorizer",
    "JWTPrincipal",
    "Unauthorized",
    "principal_key",
    "same_principal",
]


class Unauthorized(Exception):
    """
    The client did not say who it is, or not convincingly (C{401}).
    """


class AccessDenied(Exception):
    """
    The client is known and may not do this (C{403}).
    """


def same_principal(a: Any, b: Any) -> bool:
    """
    Whether two principals are the same client: by L{principal_key} (a
    renewed token is the same client).
    """
    return bool(principal_key(a) == principal_key(b))


def principal_key(principal: Any) -> Any:
    """
    What identifies C{principal}, here and to another node: a
    L{JWTPrincipal}'s L{key<JWTPrincipal.key>}, else its C{subject} where it
    has one, else the principal itself (L{None} for anonymous clients, who
    are bound to their session id alone).
    """
    if isinstance(principal, JWTPrincipal):
        if principal.key:
            return principal.key
        if principal.subject is not None:
            return "sub:" + principal.subject
        return principal
    return getattr(principal, "subject", principal)


class IAuthorizer(Interface):
    """
    Decides who a request comes from, and which channels it may join.
    """

    def authorize(request: IRequest) -> Any:
        """
        The principal behind C{request} (any value; L{None} for anonymous),
        or a L{Deferred} of it.

        @raise Unauthorized: no (valid) credentials.
        @raise AccessDenied: credentials valid, access refused.
        """

    def can_join(principal: Any, channel: str) -> bool:
        """
        Whether C{principal} may receive the events of C{channel}.
        """

    # An authorizer may also have C{can_subscribe(principal, route) -> bool}:
    # whether C{principal}'s subscription to a server route that is not
    # C{subscribable} sees the outputs of everyone's calls, not only its own
    # (the endpoint looks for it; without it, the answer is no).


@implementer(IAuthorizer)
class AllowAll:
    """
    Everyone is anonymous and may join every channel: the default.
    """

    def authorize(self, request: IRequest) -> Any:
        return None

    def can_join(self, principal: Any, channel: str) -> bool:
        return True


@implementer(IAuthorizer)
class CallableAuthorizer:
    """
    An authorizer made of two plain functions.
    """

    def __init__(
        self,
        authorize: Callable[[IRequest], Any] | None = None,
        can_join: Callable[[Any, str], bool] | None = None,
        can_subscribe: Callable[[Any, str], bool] | None = None,
    ) -> None:
        self._authorize = authorize
        self._can_join = can_join
        self._can_subscribe = can_subscribe

    def authorize(self, request: IRequest) -> Any | Deferred[Any]:
        return None if self._authorize is None else self._authorize(request)

    def can_join(self, principal: Any, channel: str) -> bool:
        return (
            True if self._can_join is None else bool(self._can_join(principal, channel))
        )

    def can_subscribe(self, principal: Any, route: str) -> bool:
        """
        Whether C{principal} sees everyone's outputs of C{route} (by default,
        only its own).
        """
        can = self._can_subscribe
        return False if can is None else bool(can(principal, route))


@frozen
class JWTPrincipal:
    """
    A client that showed a valid token.

    @ivar subject: the token's C{sub} claim, if any.
    @ivar channels: the channels its claims let it join (C{"*"}: all).
    @ivar claims: every claim of the token.
    @ivar key: what makes it one client (L{principal_key}): C{"sub:"} and
        its subject; a token without a subject is a client of its own,
        C{"jti:"} and the token's C{jti}, else C{"token:"} and a digest of
        the verified token, so that two subject-less tokens never act for
        each other.
    """

    subject: str | None
    channels: frozenset[str]
    claims: dict[str, Any]
    key: str = ""

    @property
    def expires(self) -> float | None:
        """
        When the token expires (its C{exp}, POSIX seconds), if it says.
        """
        exp = self.claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return float(exp)
        return None


def token_key(subject: str | None, claims: dict[str, Any], token: str) -> str:
    """
    The L{JWTPrincipal.key} of a verified C{token} with C{claims}.
    """
    if subject is not None:
        return "sub:" + subject
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        return "jti:" + jti
    return "token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def _bearer(request: IRequest) -> str | None:
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    text: str = header.decode("latin-1")
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@implementer(IAuthorizer)
class JWTAuthorizer:
    """
    Clients show a JSON Web Token (PyJWT: HS256 with a shared secret, RS256
    with a public key) in C{Authorization: Bearer}, in a cookie, or in the
    query (C{?token=}, for the browser's EventSource, which cannot send
    headers).

    @param key: the HS256 secret, or the RS256 public key (PEM).
    @param algorithms: the algorithms accepted; never C{none}.
    @param claim: where the list of joinable channels is, a dotted path into
        the claims (C{"subscribe"}, or C{"mercure.subscribe"} for Mercure's
        tokens).
    @param required: whether a request without a token is refused (C{401});
        if not, it is anonymous and may join only C{anonymous_channels}.
    """

    def __init__(
        self,
        key: str | bytes,
        algorithms: Sequence[str] = ("HS256",),
        *,
        audience: str | None = None,
        issuer: str | None = None,
        claim: str = "subscribe",
        cookie: str | None = "token",
        query: str | None = "token",
        required: bool = True,
        anonymous_channels: Iterable[str] = (),
        leeway: float = 0.0,
    ) -> None:
        import jwt  # the "jwt" extra: pip install txgraphsse[jwt]

        if any(a.lower() == "none" for a in algorithms):
            raise ValueError("the 'none' algorithm is never accepted")
        self._jwt = jwt
        self._key = key
        self._algorithms = list(algorithms)
        self._audience = audience
        self._issuer = issuer
        self._claim = claim.split(".")
        self._cookie = cookie.encode("ascii") if cookie else None
        self._query = query.encode("ascii") if query else None
        self._required = required
        self._anonymous = frozenset(anonymous_channels)
        self._leeway = leeway

    def _token(self, request: IRequest) -> str | None:
        token = _bearer(request)
        if token is None and self._cookie is not None:
            cookie = request.getCookie(self._cookie)
            if cookie:
                token = str(cookie.decode("latin-1"))
        if token is None and self._query is not None:
            values = (request.args or {}).get(self._query)
            if values:
                token = values[0].decode("latin-1")
        return token

    def authorize(self, request: IRequest) -> JWTPrincipal | None:
        token = self._token(request)
        if token is None:
            if self._required:
                raise Unauthorized("a token is required")
            return None
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidTokenError as error:
            raise Unauthorized(f"the token is not valid: {error}") from None
        channels: Any = claims
        for part in self._claim:
            channels = channels.get(part) if isinstance(channels, dict) else None
        if isinstance(channels, str):
            channels = [channels]
        if not isinstance(channels, list):
            channels = []
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        return JWTPrincipal(
            subject=subject,
            channels=frozenset(c for c in channels if isinstance(c, str)),
            claims=claims,
            key=token_key(subject, claims, token),
        )

    def can_join(self, principal: Any, channel: str) -> bool:
        if isinstance(principal, JWTPrincipal):
            return "*" in principal.channels or channel in principal.channels
        return channel in self._anonymous
