# -*- test-case-name: tests.test_security -*-
"""
Cross-origin access to an endpoint.

This module owns the allow-list of origins and the CORS headers: a request
from an allowed origin gets them, a preflight C{OPTIONS} is answered, and a
refused origin gets no CORS header at all, so the browser keeps the answer
from the page.  The default allows no other origin (same origin only).
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import field, frozen
from twisted.web.iweb import IRequest

__all__ = ["CORSPolicy"]


def _origins(origins: Iterable[str]) -> frozenset[str]:
    return frozenset(o.rstrip("/") for o in origins)


_ALLOWED_HEADERS = b"content-type, x-graphsse-session, last-event-id, authorization"


@frozen
class CORSPolicy:
    """
    @ivar origins: allowed origins (C{"https://app.example"}), or C{"*"} for
        any origin (never with credentials).
    @ivar credentials: whether cookies and HTTP auth may come along.
    @ivar max_age: seconds a browser may cache a preflight answer.
    """

    origins: frozenset[str] = field(converter=_origins, factory=frozenset)
    credentials: bool = False
    max_age: int = 600

    @classmethod
    def allow(cls, origins: Iterable[str], credentials: bool = False) -> CORSPolicy:
        policy = cls(_origins(origins), credentials)
        if credentials and "*" in policy.origins:
            raise ValueError("CORS credentials cannot go with the origin '*'")
        return policy

    def allows(self, origin: str) -> bool:
        return origin in self.origins or "*" in self.origins

    def apply(self, request: IRequest) -> bool:
        """
        Add the CORS headers for C{request}'s origin if it is allowed.

        @return: whether it was.
        """
        raw = request.getHeader(b"origin")
        if raw is None or not self.origins:
            return False
        origin = raw.decode("latin-1")
        if not self.allows(origin):
            return False
        request.setHeader(b"access-control-allow-origin", raw)
        request.setHeader(b"vary", b"Origin")
        request.setHeader(b"access-control-expose-headers", b"Retry-After")
        if self.credentials:
            request.setHeader(b"access-control-allow-credentials", b"true")
        return True

    def preflight(self, request: IRequest) -> None:
        """
        Answer a preflight C{OPTIONS} (the caller sets the status).
        """
        if not self.apply(request):
            return
        request.setHeader(b"access-control-allow-methods", b"GET, HEAD, POST, OPTIONS")
        request.setHeader(b"access-control-allow-headers", _ALLOWED_HEADERS)
        request.setHeader(b"access-control-max-age", b"%d" % self.max_age)
