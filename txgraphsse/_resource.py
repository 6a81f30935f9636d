# -*- test-case-name: tests.test_resource -*-
"""
The twisted.web face of an endpoint.

L{SSEResource} owns the HTTP side of one path: C{GET} opens a session,
C{HEAD} answers the stream's headers without opening one, C{POST} checks and
parses a back-channel message and hands it to the dispatcher, and the
browser client is served below the path.  Every refusal is a JSON error of
PROTOCOL.md's table, never a traceback.  It mounts anywhere a resource can:
under C{putChild}, or as a Klein route with C{branch=True}.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from . import _messages as messages
from ._dispatch import Answer, ProtocolError, dispatch

if TYPE_CHECKING:
    from ._endpoint import SSEEndpoint

__all__ = ["SSEResource"]

_JSON = b"application/json"

#: Files of the browser client, served below every endpoint's path.
_STATIC = {
    b"client.js": ("graphsse.js", b"text/javascript; charset=utf-8"),
    b"client.classic.js": ("graphsse.classic.js", b"text/javascript; charset=utf-8"),
    b"client.d.ts": ("graphsse.d.ts", b"application/typescript; charset=utf-8"),
}


@cache
def _static(name: str) -> bytes:
    return (Path(__file__).parent / "static" / name).read_bytes()


def _write_json(request: Request, status: int, body: bytes | None) -> None:
    request.setResponseCode(status)
    if body is not None:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)


def _error(request: Request, error: ProtocolError) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    if error.status == 503:
        request.setHeader(b"retry-after", b"5")
    return messages.error_body(error.code, error.message)


class SSEResource(Resource):
    """
    The resource of one L{SSEEndpoint}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, endpoint: SSEEndpoint) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.endpoint = endpoint

    def render(self, request: Request) -> bytes | int:
        rest = [part for part in request.postpath or () if part]
        if (
            len(rest) == 1
            and rest[0] in _STATIC
            and request.method in (b"GET", b"HEAD")
        ):
            name, content_type = _STATIC[rest[0]]
            body = _static(name)
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"cache-control", b"public, max-age=300")
            request.setHeader(b"access-control-allow-origin", b"*")
            return body
        if rest:
            return _error(
                request, ProtocolError(404, "no_route", "nothing is served here")
            )
        try:
            return super().render(request)  # type: ignore[no-untyped-call,no-any-return]
        except ProtocolError as error:
            return _error(request, error)

    # GET and HEAD: the stream

    def _stream_arguments(self, request: Request) -> tuple[list[str], str | None]:
        endpoint = self.endpoint
        if endpoint.closed:
            raise ProtocolError(503, "unavailable", "this endpoint is closed")
        names: list[str] = []
        args = request.args or {}
        for raw in args.get(b"channels", []):
            for part in raw.decode("utf-8", "replace").split(","):
                name = part.strip()
                if name and name not in names:
                    names.append(name)
        for name in names:
            if name not in endpoint.channels and not endpoint.dynamic_channels:
                raise ProtocolError(
                    403, "forbidden", f"no channel {name!r} on this endpoint"
                )
        header = request.getHeader(b"last-event-id")
        if header is None:
            query = args.get(b"lastEventId")
            header = query[0] if query else None
        last_event_id = None
        if header is not None:
            last_event_id = header.decode("utf-8", "replace")
        return names, last_event_id

    def render_GET(self, request: Request) -> bytes | int:
        names, last_event_id = self._stream_arguments(request)
        endpoint = self.endpoint
        for name in names:
            if name not in endpoint.channels:
                endpoint.add_channel(name)
        endpoint._open(request, names, last_event_id)
        return NOT_DONE_YET

    def render_HEAD(self, request: Request) -> bytes:
        self._stream_arguments(request)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-transform")
        request.setHeader(b"x-accel-buffering", b"no")
        return b""

    # POST: the back-channel

    def render_POST(self, request: Request) -> bytes | int:
        content_type = request.getHeader(b"content-type") or b""
        if content_type.split(b";")[0].strip().lower() != _JSON:
            raise ProtocolError(
                415, "bad_content_type", "send the message as application/json"
            )
        assert request.content is not None
        raw = request.content.read()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise ProtocolError(400, "bad_json", "the body is not JSON") from None
        header = request.getHeader(b"x-graphsse-session")
        header_session = None if header is None else header.decode("utf-8", "replace")

        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        answer = dispatch(self.endpoint, body, header_session)

        def respond(result: Answer) -> None:
            if finished[0]:
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
                _write_json(request, result.status, payload)
            else:
                _write_json(request, result.status, None)
            request.finish()

        def fail(failure: Failure) -> None:
            if finished[0]:
                return
            error = failure.value
            if not isinstance(error, ProtocolError):
                self._log.failure("Back-channel failed", failure=failure)
                error = ProtocolError(500, "route_failed", "internal error")
            request.write(_error(request, error))
            request.finish()

        answer.addCallbacks(respond, fail)
        return NOT_DONE_YET

    def render_OPTIONS(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"allow", b"GET, HEAD, POST, OPTIONS")
        return b""
