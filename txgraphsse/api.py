# -*- test-case-name: tests.test_api -*-
"""
The server API: a JSON face over HTTP for backends in any language, on
every node (PROTOCOL.md section 4).

L{ServerAPIResource} owns the HTTP of it: which path and method is which
action, who may do what (an API key may do everything; a JWT the
endpoint's authorizer accepts may do what its C{"graphsse"} claims say:
C{admin} everything, C{publish} publishing and reading history), the body
(JSON, within the endpoint's limits, charged to the caller's address as the
back channel's are) and the answer, always JSON.  What each action does is
L{txgraphsse._api}'s; the document of it all is L{txgraphsse._openapi}'s.

Mount it where the API lives::

    root.putChild(b"api", ServerAPIResource(endpoint, keys=[KEY]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from . import _api
from . import _messages as messages
from ._admin import KeyRing, has_claim, is_admin
from ._auth import AccessDenied, AllowAll, IAuthorizer, Unauthorized
from ._endpoint import SSEEndpoint
from ._limits import json_depth, request_address, request_ended
from ._messages import ProtocolError
from ._openapi import openapi_document

__all__ = ["ServerAPIResource"]

#: What a key or an admin may do: everything.
_EVERYTHING = frozenset({"publish", "call", "presence", "history", "disconnect"})
#: What a token with the publish claim may do.
_PUBLISHER = frozenset({"publish", "history"})

#: The actions: (method, name) -> (what it needs, whether it takes a body).
_ACTIONS: dict[tuple[bytes, str], tuple[Callable[..., Deferred[Any]], bool]] = {
    (b"POST", "publish"): (_api.publish, True),
    (b"POST", "call"): (_api.call, True),
    (b"POST", "disconnect"): (_api.disconnect, True),
    (b"GET", "presence"): (_api.presence, False),
    (b"GET", "history"): (_api.history, False),
}

#: The methods each name answers, for C{405}'s C{Allow}.
_ALLOW = {name: method for method, name in _ACTIONS}


class ServerAPIResource(Resource):
    """
    The server API of one endpoint.

    @ivar endpoint: the endpoint it publishes on and calls through.
    """

    isLeaf = True
    #: An L{SSESite} may hand it quick requests for the paths below it
    #: (L{txgraphsse._quick}).
    quick_below = True
    _log = Logger()

    def __init__(
        self,
        endpoint: SSEEndpoint,
        keys: Iterable[str | bytes] = (),
        authorizer: IAuthorizer | None = None,
        path: str = "/api",
    ) -> None:
        """
        @param keys: the API keys, each of which may do everything.
        @param path: where it is mounted, for its OpenAPI document.
        @param authorizer: who a bearer token's holder is (by default the
            endpoint's own, unless that is the default L{AllowAll}, which
            admits no one here).
        @raise ValueError: with no key and no authorizer (no one could use
            it), or an empty key.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.endpoint = endpoint
        self._keys = KeyRing(keys)
        if authorizer is None and not isinstance(endpoint.authorizer, AllowAll):
            authorizer = endpoint.authorizer
        if authorizer is None and not self._keys:
            raise ValueError("the server API needs an API key or an authorizer")
        self._authorizer = authorizer
        self._path = path

    @property
    def quick_post(self) -> bool:
        """
        Whether an L{SSESite} may hand it C{POST}s as quick requests: when
        API keys are all it admits (a key is one header), not a bearer
        token's authorizer, which may read any of the request.
        """
        return self._authorizer is None

    # Dispatch

    def render(self, request: Request) -> bytes | int:
        try:
            return self._render(request)
        except ProtocolError as error:
            return self._error(request, error)

    def _render(self, request: Request) -> bytes | int:
        name = "/".join(p.decode("utf-8", "replace") for p in request.postpath or [])
        method = request.method
        if method == b"HEAD":
            method = b"GET"
        if name == "openapi.json" and method == b"GET":
            return self._json(request, 200, openapi_document(self.endpoint, self._path))
        action = _ACTIONS.get((method, name))
        if action is None:
            allow = _ALLOW.get(name) or (b"GET" if name == "openapi.json" else None)
            if allow is None:
                raise ProtocolError(404, "no_route", f"no API call {name!r}")
            request.setHeader(b"allow", allow)
            raise ProtocolError(
                405, "method_not_allowed", f"use {allow.decode()} for {name!r}"
            )
        act, takes_body = action
        endpoint = self.endpoint
        address = request_address(request, endpoint.limits)
        # Charged as a back-channel call without a session is, before the
        # body is read: the address's bucket, and its calls' own.
        if not endpoint.rates.take_address(
            address, endpoint.clock.seconds()
        ) or not endpoint.take_call_token("@" + address):
            raise ProtocolError(429, "rate_limited", "too many calls; slow down")
        if takes_body:
            argument = self._body(request)
        else:
            argument = {
                k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
        granted = self._grant(request)
        # Asked only of an answer that comes later: most come at once.
        ended: Callable[[], bool] | None = None

        def allowed(grant: frozenset[str]) -> Deferred[Any]:
            if name not in grant:
                raise ProtocolError(403, "forbidden", f"you may not {name}")
            return act(endpoint, argument)

        def answered(result: tuple[int, Any]) -> None:
            if ended is None or not ended():
                status, body = result
                request.write(self._json(request, status, body))
                request.finish()

        def failed(failure: Failure) -> None:
            if ended is not None and ended():
                return
            error = failure.value
            if not isinstance(error, ProtocolError):
                self._log.failure("API {name} failed", failure=failure, name=name)
                error = ProtocolError(500, "internal_error", "internal error")
            request.write(self._error(request, error))
            request.finish()

        granted.addCallback(allowed).addCallbacks(answered, failed)
        if not request.finished:
            ended = request_ended(request)
        return NOT_DONE_YET

    # Credentials

    def _grant(self, request: Request) -> Deferred[frozenset[str]]:
        """
        What the request's credentials let it do.
        """
        if self._keys.admits(request):
            return succeed(_EVERYTHING)
        authorizer = self._authorizer
        header = request.getHeader(b"authorization")
        if header is None:
            return fail(
                ProtocolError(401, "unauthorized", "an API key or a token is required")
            )
        if authorizer is None or header.split(b" ", 1)[0].lower() == b"apikey":
            return fail(ProtocolError(401, "unauthorized", "that API key is not valid"))

        def judge(principal: Any) -> frozenset[str]:
            if principal is None:
                raise ProtocolError(401, "unauthorized", "a token is required")
            if is_admin(principal):
                return _EVERYTHING
            if has_claim(principal, "publish"):
                return _PUBLISHER
            raise ProtocolError(403, "forbidden", "this token may not use the API")

        def refused(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, Unauthorized):
                return Failure(ProtocolError(401, "unauthorized", str(error)))
            if isinstance(error, AccessDenied):
                return Failure(ProtocolError(403, "forbidden", str(error)))
            return failure

        return maybeDeferred(authorizer.authorize, request).addCallbacks(judge, refused)

    # Bodies and answers

    def _body(self, request: Request) -> Any:
        limits = self.endpoint.limits
        content_type = request.getHeader(b"content-type") or b""
        if content_type.split(b";")[0].strip().lower() != b"application/json":
            raise ProtocolError(415, "bad_content_type", "send application/json")
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            raise messages.too_large(limits.max_body)
        assert request.content is not None
        raw = request.content.read(limits.max_body + 1)
        if len(raw) > limits.max_body:
            raise messages.too_large(limits.max_body)
        try:
            body = messages.loads(raw)
        except (ValueError, RecursionError):
            raise ProtocolError(
                400, "bad_json", "the body is not JSON (NaN and Infinity are not)"
            ) from None
        if not json_depth(body, limits.max_json_depth, raw):
            raise ProtocolError(400, "bad_json", "the body nests too deep")
        return body

    def _json(self, request: Request, status: int, body: Any) -> bytes:
        try:
            payload = messages.dumps(body).encode("utf-8")
        except (TypeError, ValueError) as error:
            status, payload = (
                502,
                messages.error_body("bad_result", f"the answer is not JSON: {error}"),
            )
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(payload))
        return payload

    def _error(self, request: Request, error: ProtocolError) -> bytes:
        if error.status == 401:
            request.setHeader(b"www-authenticate", b'apikey, Bearer realm="api"')
        if error.status in (429, 503):
            retry = self.endpoint.limits.retry_after
            request.setHeader(b"retry-after", b"%d" % retry)
        if error.status >= 400:
            self.endpoint.counters.refusals += 1
            self._log.info(
                "Refused API {method} {path}: {status} {code}",
                method=request.method,
                path=request.path,
                status=error.status,
                code=error.code,
            )
        return self._json(request, error.status, error.body())
