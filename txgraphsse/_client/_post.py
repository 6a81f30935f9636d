# -*- test-case-name: tests.test_client -*-
"""
One C{POST} of a connection on the wire: a JSON body out with the
session's header, the answer's JSON (or the server's refusal) back, and the
C{args} an answer carries.

This module owns the shape of that exchange, and names (L{Link}) what the
modules above it post through: the connection.  When to post, which session
to quote and which calls are in flight are the connection's; it never
touches a stream, a route or a session, and knows nothing of the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from .. import _messages as messages
from ._http import BodyReader, BytesProducer, RemoteError, remote_error

__all__ = ["Link", "Poster", "args_of", "encode", "post_payload"]


class Link(Protocol):
    """
    What the subscriptions and the serving need of the connection they post
    through (the L{Connection}); each adds what else it needs.
    """

    @property
    def closed(self) -> bool:
        """
        Whether the connection stopped for good.
        """

    def _post_with(
        self, build: Callable[[str], Any], session_id: str | None = None
    ) -> Deferred[Any]:
        """
        C{POST} C{build(session_id)} once there is a session.
        """

    def _background(self, work: Deferred[Any]) -> None:
        """
        Report C{work}'s failure, as nobody waits for it.
        """


class Poster(Protocol):
    """
    What a C{POST} needs of the client that makes it (the
    L{GraphSSEClient}): read when it is used, so that a change shows at
    once.
    """

    @property
    def max_answer(self) -> int:
        """
        The most bytes of an answer to read.
        """

    @property
    def _http(self) -> HTTPClient:
        """
        The treq client the C{POST}s go through.
        """

    @property
    def _reactor(self) -> IReactorTime:
        """
        The reactor they run on.
        """


def args_of(answer: Any) -> Any:
    """
    The C{args} of a JSON answer, or L{None} if it has none.
    """
    return answer.get("args") if isinstance(answer, dict) else None


def encode(body: Any) -> bytes:
    """
    C{body} as the JSON of a C{POST}.

    @raise TypeError: for what JSON cannot carry.
    @raise ValueError: for numbers that are not JSON (C{NaN}, C{Infinity}).
    """
    return messages.dumps(body).encode("utf-8")


def post_payload(
    client: Poster,
    url: str,
    headers: Mapping[str, str],
    payload: bytes,
    session_id: str,
) -> Deferred[Any]:
    """
    C{POST} the JSON C{payload} to C{url} with C{headers} and the
    C{X-GraphSSE-Session} header of C{session_id}.

    @return: a L{Deferred} firing with the answer's JSON value (L{None} for
        an empty answer); failing with L{RemoteError} for a refusal or an
        answer that is not JSON.
    """
    sent = Headers()
    for name, value in headers.items():
        sent.addRawHeader(name, value)
    sent.setRawHeaders(b"content-type", [b"application/json"])
    sent.setRawHeaders(b"accept", [b"application/json"])
    sent.setRawHeaders(b"x-graphsse-session", [session_id.encode("utf-8")])
    requested = cast(
        "Deferred[IResponse]",
        client._http.request(
            "POST",
            url,
            data=BytesProducer(payload),
            headers=sent,
            allow_redirects=False,
            unbuffered=True,
            reactor=cast(Any, client._reactor),
        ),
    )
    return requested.addCallback(_read_answer, client)


def _read_answer(response: IResponse, client: Poster) -> Deferred[Any]:
    reader = BodyReader.read(response, client.max_answer)

    def parse(body: bytes) -> Any:
        code = response.code
        if not 200 <= code < 300:
            raise remote_error(code, body)
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise RemoteError(code, "bad_json", "the answer is not JSON") from None

    return reader.done.addCallback(parse)
