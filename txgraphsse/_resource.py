# -*- test-case-name: tests.test_integration,tests.test_backchannel -*-
"""
The twisted.web face of an endpoint.

L{SSEResource} owns the HTTP side of one path: C{GET} opens a session,
C{HEAD} answers the stream's headers without opening one, C{POST} checks and
parses a back-channel message and hands it to the dispatcher, C{OPTIONS}
answers CORS preflights, and the browser client is served below the path.
Before anything runs, it applies the endpoint's limits and authorizer.  Every
refusal is a JSON error of PROTOCOL.md's table, never a traceback.  It mounts
anywhere a resource can: under C{putChild}, or as a Klein route with
C{branch=True}.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from random import random
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from . import _messages as messages
from ._admission import check_capacity, stream_arguments
from ._auth import AccessDenied, AllowAll, Unauthorized
from ._dispatch import Answer, dispatch
from ._endpoint import SSEEndpoint
from ._limits import json_depth, request_address, request_ended
from ._messages import ProtocolError
from ._opening import encode_refusal, set_stream_headers, wants_stream_refusal

__all__ = ["SSEResource"]

_JSON = b"application/json"
#: The methods an endpoint answers.
_ALLOW = b"GET, HEAD, POST, OPTIONS"
_TEXT = b"text/plain"

#: Files of the browser client, served below every endpoint's path.
_STATIC = {
    b"client.js": ("graphsse.js", b"text/javascript; charset=utf-8"),
    b"client.classic.js": ("graphsse.classic.js", b"text/javascript; charset=utf-8"),
    b"client.d.ts": ("graphsse.d.ts", b"application/typescript; charset=utf-8"),
}

_Rendered = bytes | int


@cache
def _static(name: str) -> bytes:
    return (Path(__file__).parent / "static" / name).read_bytes()


def _same_origin(request: Request) -> bool:
    """
    Whether the browser says C{request} comes from a page of the origin it
    is sent to: C{Sec-Fetch-Site: same-origin}, or, where the browser sends
    no C{Sec-Fetch-Site} (browsers send it to secure and local origins
    only), an C{Origin} whose host and port are the request's C{Host}.

    graphscript's C{SSEfrontend} POSTs its JSON with C{XMLHttpRequest} and
    no C{Content-Type}, so it arrives as C{text/plain}.  That is accepted
    from the page's own origin only: such a page may send C{application/json}
    anyway, so it gains nothing, while a cross-site C{text/plain} post (the
    one kind a browser sends without a CORS preflight) is still refused.
    """
    site = request.getHeader(b"sec-fetch-site")
    if site is not None:
        return site.strip().lower() == b"same-origin"
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    if not origin or not host:
        return False
    scheme, sep, authority = origin.strip().lower().partition(b"://")
    return (
        bool(sep)
        and scheme in (b"http", b"https")
        and authority == host.strip().lower()
    )


def _too_many_calls() -> ProtocolError:
    return ProtocolError(429, "rate_limited", "too many calls; slow down")


class SSEResource(Resource):
    """
    The resource of one L{SSEEndpoint}.
    """

    isLeaf = True
    _log = Logger()
    #: The share of the retry window a refused stream waits beyond its
    #: C{Retry-After}; a test may make it fixed.
    _random: Callable[[], float] = staticmethod(random)

    def __init__(self, endpoint: SSEEndpoint) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.endpoint = endpoint

    @property
    def quick_post(self) -> bool:
        """
        Whether an L{SSESite} may hand this resource its plainest C{POST}s
        as quick requests (L{txgraphsse._quick}): when its authorizer reads
        no request, as the default one; any other is given Twisted's whole
        C{Request}.
        """
        return isinstance(self.endpoint.authorizer, AllowAll)

    @property
    def quick_get(self) -> bool:
        """
        Whether an L{SSESite} may open this resource's streams from quick
        requests: as for C{POST}s, when its authorizer reads no request, and
        when no C{on_connection} or C{on_connection_close} callback is set
        (they are handed the request, and may read any of it).
        """
        endpoint = self.endpoint
        return (
            isinstance(endpoint.authorizer, AllowAll)
            and endpoint.connection_callback(True) is None
            and endpoint.connection_callback(False) is None
        )

    def _error(self, request: Request, error: ProtocolError) -> bytes:
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if error.status in (429, 503):
            retry = self.endpoint.limits.retry_after
            request.setHeader(b"retry-after", b"%d" % retry)
        if error.status == 401:
            request.setHeader(b"www-authenticate", b"Bearer")
        if error.status >= 400:
            self.endpoint.counters.refusals += 1
            self._log.info(
                "Refused {method} {path} from {peer}: {status} {code}",
                method=request.method,
                path=self.endpoint.path,
                peer=request_address(request, self.endpoint.limits),
                status=error.status,
                code=error.code,
            )
        body = messages.dumps(error.body()).encode("utf-8")
        if (
            error.status == 503
            and request.method == b"GET"
            and wants_stream_refusal(request)
        ):
            return self._refused_stream(request, body)
        return body

    def _refused_stream(self, request: Request, body: bytes) -> bytes:
        """
        Refuse a stream the way an C{EventSource} retries: C{200}, a
        C{retry:} between one and two C{Retry-After}s (jittered, so that the
        refused do not come back at once), an C{unavailable} event with the
        error, then the end.
        """
        request.setResponseCode(200)
        set_stream_headers(request)
        window = self.endpoint.limits.retry_after * 1000
        return encode_refusal(window + int(self._random() * window), body)

    def render(self, request: Request) -> _Rendered:
        self.endpoint.cors.apply(request)
        rest = [part for part in request.postpath or () if part]
        if (
            len(rest) == 1
            and rest[0] in _STATIC
            and request.method in (b"GET", b"HEAD")
        ):
            name, content_type = _STATIC[rest[0]]
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"cache-control", b"public, max-age=300")
            request.setHeader(b"access-control-allow-origin", b"*")
            return _static(name)
        if rest:
            return self._error(
                request, ProtocolError(404, "no_route", "nothing is served here")
            )
        try:
            if request.method == b"POST":
                # The back channel's, most requests: straight there.
                return self.render_POST(request)
            return super().render(request)  # type: ignore[no-untyped-call,no-any-return]
        except ProtocolError as error:
            return self._error(request, error)
        except UnsupportedMethod:
            request.setHeader(b"allow", _ALLOW)
            return self._error(
                request,
                ProtocolError(
                    405,
                    "method_not_allowed",
                    f"{request.method.decode('ascii', 'replace')} is not served here",
                ),
            )

    # Authorization, synchronous or not

    def _authorized(
        self, request: Request, then: Callable[[Any], _Rendered]
    ) -> _Rendered:
        """
        Run C{then(principal)} once the authorizer has named the client, now
        if it answers at once, later if it answers with a L{Deferred}.
        """
        try:
            principal = self.endpoint.authorizer.authorize(request)
        except Exception as error:
            raise self._refusal(Failure(error)) from None
        if not isinstance(principal, Deferred):
            return then(principal)
        ended = request_ended(request)

        def go(value: Any) -> None:
            if ended():
                return
            try:
                body = then(value)
            except ProtocolError as error:
                body = self._error(request, error)
            if body is not NOT_DONE_YET:
                assert isinstance(body, bytes)
                request.write(body)
                request.finish()

        def refuse(failure: Failure) -> None:
            if ended():
                return
            request.write(self._error(request, self._refusal(failure)))
            request.finish()

        principal.addCallbacks(go, refuse)
        return NOT_DONE_YET

    def _refusal(self, failure: Failure) -> ProtocolError:
        error = failure.value
        if isinstance(error, Unauthorized):
            return ProtocolError(401, "unauthorized", str(error) or "who are you?")
        if isinstance(error, AccessDenied):
            return ProtocolError(403, "forbidden", str(error) or "access denied")
        if isinstance(error, ProtocolError):
            return error
        self._log.failure("The authorizer failed", failure=failure)
        return ProtocolError(500, "internal_error", "the authorizer failed")

    # GET and HEAD: the stream

    def render_GET(self, request: Request) -> _Rendered:
        # Once per stream: behind a proxy it means reading X-Forwarded-For.
        address = request_address(request, self.endpoint.limits)
        check_capacity(self.endpoint, address)
        names, last_event_id = stream_arguments(self.endpoint, request)

        def open_(principal: Any) -> _Rendered:
            endpoint = self.endpoint
            # Again: the authorizer may have taken a while.
            check_capacity(self.endpoint, address)
            for name in names:
                if not endpoint.authorizer.can_join(principal, name):
                    raise ProtocolError(
                        403, "forbidden", f"you may not join channel {name!r}"
                    )
            endpoint.channel_table.join(names)
            endpoint.open_session(request, names, last_event_id, principal, address)
            return NOT_DONE_YET

        return self._authorized(request, open_)

    def render_HEAD(self, request: Request) -> _Rendered:
        # What a GET would meet, so that a client's probe reads the refusal
        # and its Retry-After.
        check_capacity(self.endpoint, request_address(request, self.endpoint.limits))
        stream_arguments(self.endpoint, request)

        def headers(principal: Any) -> bytes:
            set_stream_headers(request)
            return b""

        return self._authorized(request, headers)

    # POST: the back-channel

    def render_POST(self, request: Request) -> _Rendered:
        limits = self.endpoint.limits
        content_type = request.getHeader(b"content-type") or b""
        media_type = content_type.split(b";")[0].strip().lower()
        if media_type != _JSON and not (media_type == _TEXT and _same_origin(request)):
            raise ProtocolError(
                415, "bad_content_type", "send the message as application/json"
            )
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            raise messages.too_large(limits.max_body)
        # The tokens this request can be charged before its body is read:
        # its address's (all its calls together), and the session its header
        # names, if this node holds it.
        endpoint = self.endpoint
        address = request_address(request, limits)
        header = request.getHeader(b"x-graphsse-session")
        header_session = None if header is None else header.decode("utf-8", "replace")
        charged = header_session if header_session in endpoint.sessions else None
        now = endpoint.clock.seconds()
        if not endpoint.rates.take_address(address, now) or (
            charged is not None and not endpoint.rates.take(charged, now)
        ):
            raise _too_many_calls()
        assert request.content is not None
        raw = request.content.read(limits.max_body + 1)
        if len(raw) > limits.max_body:
            raise messages.too_large(limits.max_body)
        return self._authorized(
            request,
            lambda p: self._post(request, raw, p, header_session, charged, address),
        )

    def _post(
        self,
        request: Request,
        raw: bytes,
        principal: Any,
        header_session: str | None,
        charged: str | None,
        address: str,
    ) -> _Rendered:
        endpoint = self.endpoint
        try:
            body = messages.loads(raw)
        except (ValueError, RecursionError):
            raise ProtocolError(
                400, "bad_json", "the body is not JSON (NaN and Infinity are not)"
            ) from None
        if not json_depth(body, endpoint.limits.max_json_depth, raw):
            raise ProtocolError(400, "bad_json", "the body nests too deep")
        if isinstance(body, list):
            return self._batch(
                request, body, principal, header_session, charged, address
            )
        caller = self._caller(body, header_session, address)
        if caller != charged and not endpoint.take_call_token(caller):
            raise _too_many_calls()

        answer = dispatch(endpoint, body, header_session, principal)
        # Asked only of an answer that comes later: most come at once.
        ended: Callable[[], bool] | None = None

        def respond(result: Answer) -> None:
            if ended is not None and ended():
                return
            if result.has_body:
                try:
                    payload = messages.dumps(result.body).encode("utf-8")
                except (TypeError, ValueError) as error:
                    fail(
                        Failure(
                            ProtocolError(
                                500, "route_failed", f"the result is not JSON: {error}"
                            )
                        )
                    )
                    return
                request.setResponseCode(result.status)
                request.setHeader(b"content-type", b"application/json; charset=utf-8")
                request.setHeader(b"content-length", b"%d" % len(payload))
                request.write(payload)
            else:
                request.setResponseCode(result.status)
            request.finish()

        def fail(failure: Failure) -> None:
            if ended is not None and ended():
                return
            request.write(self._error(request, self._refusal_of(failure)))
            request.finish()

        answer.addCallbacks(respond, fail)
        if not request.finished:
            ended = request_ended(request)
        return NOT_DONE_YET

    def _caller(self, body: Any, header_session: str | None, address: str) -> str:
        """
        Whose call bucket a message is charged to: the session it names (in
        its body, else in the header) if this node holds it, else its
        address's.  Only sessions this node holds have their own bucket:
        made-up ids must not mint fresh ones.
        """
        named = body.get("sessionId") if isinstance(body, dict) else None
        caller = named if isinstance(named, str) and named else header_session
        if caller not in self.endpoint.sessions:
            caller = "@" + address
        return caller

    def _batch(
        self,
        request: Request,
        messages_: list[Any],
        principal: Any,
        header_session: str | None,
        charged: str | None,
        address: str,
    ) -> _Rendered:
        """
        Act on a batch: every message as if it had been POSTed alone, in
        order, answered by an array of what each would have been answered
        with (C{null} for no body, C{{"error": ...}} for a refusal).
        """
        endpoint = self.endpoint
        limit = endpoint.limits.max_batch
        if not messages_ or len(messages_) > limit:
            raise ProtocolError(
                400, "bad_message", f"a batch holds 1 to {limit} messages"
            )
        now = endpoint.clock.seconds()
        answers: list[Deferred[str]] = []
        for index, message in enumerate(messages_):
            caller = self._caller(message, header_session, address)
            # The first message's tokens were taken before the body was read.
            paid = index == 0 and caller == charged
            if not paid and (
                (index and not endpoint.rates.take_address(address, now))
                or not endpoint.rates.take(caller, now)
            ):
                answers.append(succeed(self._entry_error(_too_many_calls())))
                continue
            answer = dispatch(endpoint, message, header_session, principal)
            answers.append(answer.addCallbacks(self._entry, self._entry_failed))
        ended: Callable[[], bool] | None = None

        def respond(entries: list[str]) -> None:
            if ended is not None and ended():
                return
            payload = ("[" + ",".join(entries) + "]").encode("utf-8")
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"content-length", b"%d" % len(payload))
            request.write(payload)
            request.finish()

        gatherResults(answers).addCallback(respond)
        if not request.finished:
            ended = request_ended(request)
        return NOT_DONE_YET

    def _entry(self, answer: Answer) -> str:
        """
        One batch message's answer, as JSON text.
        """
        if not answer.has_body:
            return "null"
        try:
            return messages.dumps(answer.body)
        except (TypeError, ValueError) as error:
            return self._entry_error(
                ProtocolError(500, "route_failed", f"the result is not JSON: {error}")
            )

    def _entry_failed(self, failure: Failure) -> str:
        return self._entry_error(self._refusal_of(failure))

    def _entry_error(self, error: ProtocolError) -> str:
        self.endpoint.counters.refusals += 1
        return messages.dumps(error.body())

    def _refusal_of(self, failure: Failure) -> ProtocolError:
        """
        What a failed call answers: its L{ProtocolError}, or a generic one
        (and the failure logged) for anything else.
        """
        error = failure.value
        if isinstance(error, ProtocolError):
            return error
        self._log.failure("Back-channel failed", failure=failure)
        return ProtocolError(500, "route_failed", "internal error")

    def render_OPTIONS(self, request: Request) -> bytes:
        self.endpoint.cors.preflight(request)
        request.setResponseCode(204)
        request.setHeader(b"allow", _ALLOW)
        return b""
