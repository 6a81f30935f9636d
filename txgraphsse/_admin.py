# -*- test-case-name: tests.test_admin -*-
"""
Admin surfaces behind credentials: who may read C{/metrics}.

This module owns L{AdminGuard}, a resource that wraps another (the metrics)
and serves it only to a request that shows an admin's credentials: a
metrics key (C{Authorization: Bearer KEY} or C{Authorization: apikey KEY},
compared in constant time), or a token that the endpoint's authorizer
accepts and whose principal is an admin (L{is_admin}: a JWT whose claims
hold C{"graphsse": {"admin": true}}).  It also says which authorizer a
backend's admin surfaces answer to (L{authorizer_of}).

It reads requests and writes only its refusals, PROTOCOL.md's JSON errors
(C{401 unauthorized}, C{403 forbidden}); what the wrapped resource serves is
that resource's business.  It never touches an endpoint, a session, or the
authorizer's own rules.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from copy import copy
from hashlib import sha256
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ._auth import AccessDenied, AllowAll, IAuthorizer, Unauthorized
from ._backend import SSEBackend
from ._limits import request_ended
from ._messages import error_body

__all__ = [
    "ADMIN_CLAIM",
    "AdminGuard",
    "KeyRing",
    "authorizer_of",
    "has_claim",
    "is_admin",
]

#: Where a token's claims say that its holder is an admin:
#: C{{"graphsse": {"admin": true}}}.
ADMIN_CLAIM = ("graphsse", "admin")

#: The C{Authorization} schemes a metrics key may come in.
_KEY_SCHEMES = ("bearer", "apikey")


def has_claim(principal: Any, name: str) -> bool:
    """
    Whether C{principal}'s C{claims} (as a L{txgraphsse.JWTPrincipal}'s)
    hold C{"graphsse": {name: true}}: the JSON C{true} itself, not merely a
    truthy value.
    """
    node: Any = getattr(principal, "claims", None)
    for part in (ADMIN_CLAIM[0], name):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node is True


def is_admin(principal: Any) -> bool:
    """
    Whether C{principal} is an admin: its claims hold
    C{"graphsse": {"admin": true}} (L{has_claim}).
    """
    return has_claim(principal, ADMIN_CLAIM[1])


def authorizer_of(backend: SSEBackend) -> IAuthorizer | None:
    """
    The authorizer that a backend's admin surfaces answer to: the first of
    its endpoints' that is not the default L{AllowAll}, or L{None} when
    every endpoint lets anyone in (then nothing asks for credentials).
    """
    for endpoint in backend.endpoints.values():
        if not isinstance(endpoint.authorizer, AllowAll):
            return endpoint.authorizer
    return None


def _digest(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return sha256(raw).digest()


class KeyRing:
    """
    Keys that let their holder in: whether a request's C{Authorization}
    header (C{Bearer} or C{apikey}) carries one.  Every key is compared,
    each in constant time, over digests, so that neither which key nor its
    length shows in the time taken.
    """

    def __init__(self, keys: Iterable[str | bytes]) -> None:
        """
        @raise ValueError: for an empty key.
        """
        given = list(keys)
        if not all(given):
            raise ValueError("a key must not be empty")
        self._digests = tuple(_digest(key) for key in given)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def admits(self, request: Request) -> bool:
        """
        Whether C{request} shows one of the keys.
        """
        if not self._digests:
            return False
        header = request.getHeader(b"authorization")
        if header is None:
            return False
        scheme, _, credential = header.strip().partition(b" ")
        credential = credential.strip()
        if scheme.lower().decode("latin-1") not in _KEY_SCHEMES or not credential:
            return False
        given = _digest(credential)
        found = False
        for digest in self._digests:
            found = hmac.compare_digest(given, digest) or found
        return found


class AdminGuard(Resource):
    """
    Serves C{resource} (and its children) only to an admin: a request whose
    C{Authorization} header carries one of C{keys}, or whose credentials
    C{authorizer} turns into a principal that C{admin} accepts.

    Anything else is refused before C{resource} sees it: no credentials, a
    wrong key or a token the authorizer refuses with C{401 unauthorized},
    a valid token that is not an admin's with C{403 forbidden}.  What it
    serves is marked C{Cache-Control: no-store}.
    """

    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        authorizer: IAuthorizer | None = None,
        keys: Iterable[str | bytes] = (),
        admin: Callable[[Any], bool] = is_admin,
    ) -> None:
        """
        @param resource: what admins see (a L{txgraphsse.metrics.MetricsResource}).
        @param authorizer: who the client is, from its token (an endpoint's
            authorizer, usually a L{txgraphsse.JWTAuthorizer}); L{None}: only
            the keys let anyone in.
        @param keys: the keys that let their holder in, whoever it is; none
            may be empty.
        @param admin: whether the authorizer's principal is an admin.
        @raise ValueError: with neither an authorizer nor a key, which
            would refuse everyone, or with an empty key.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        try:
            self._keys = KeyRing(keys)
        except ValueError:
            raise ValueError("a metrics key must not be empty") from None
        if authorizer is None and not self._keys:
            raise ValueError("an admin guard needs an authorizer or a key")
        self._resource = resource
        self._authorizer = authorizer
        self._admin = admin
        self.isLeaf = resource.isLeaf

    # Below: the wrapped resource's children, guarded as well

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        child = self._resource.getChildWithDefault(path, request)
        guard = copy(self)
        guard._resource = child
        guard.isLeaf = child.isLeaf
        return guard

    # The check

    def render(self, request: Request) -> bytes | int:
        if self._keys.admits(request):
            return self._serve(request)
        if self._authorizer is None:
            return self._refuse(
                request, 401, "unauthorized", "the metrics key is required"
            )
        try:
            principal = self._authorizer.authorize(request)
        except Exception as error:
            return self._refusal(request, Failure(error))
        if not isinstance(principal, Deferred):
            return self._judge(request, principal)
        ended = request_ended(request)

        def decided(value: Any) -> None:
            if not ended():
                self._answer(request, self._judge(request, value))

        def failed(failure: Failure) -> None:
            if not ended():
                self._answer(request, self._refusal(request, failure))

        def crashed(failure: Failure) -> None:
            self._log.failure("An admin request failed", failure=failure)
            if not ended():
                self._answer(
                    request,
                    self._refuse(request, 500, "internal_error", "internal error"),
                )

        principal.addCallbacks(decided, failed).addErrback(crashed)
        return NOT_DONE_YET

    def _judge(self, request: Request, principal: Any) -> bytes | int:
        if principal is None:
            return self._refuse(
                request,
                401,
                "unauthorized",
                "an admin's token or the metrics key is required",
            )
        if not self._admin(principal):
            return self._refuse(request, 403, "forbidden", "you are not an admin")
        return self._serve(request)

    def _serve(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        body: bytes | int = self._resource.render(request)
        return body

    def _answer(self, request: Request, body: bytes | int) -> None:
        if body is not NOT_DONE_YET:
            assert isinstance(body, bytes)
            request.write(body)
            request.finish()

    # Refusals

    def _refusal(self, request: Request, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, Unauthorized):
            return self._refuse(
                request, 401, "unauthorized", str(error) or "who are you?"
            )
        if isinstance(error, AccessDenied):
            return self._refuse(request, 403, "forbidden", str(error) or "no access")
        self._log.failure("The authorizer failed", failure=failure)
        return self._refuse(request, 500, "internal_error", "the authorizer failed")

    def _refuse(self, request: Request, status: int, code: str, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if status == 401:
            request.setHeader(b"www-authenticate", b"Bearer")
        peer = request.getClientAddress()
        self._log.info(
            "Refused {method} {path} from {peer}: {status} {code}",
            method=request.method,
            path=request.path,
            peer=getattr(peer, "host", peer),
            status=status,
            code=code,
        )
        return error_body(code, message)
