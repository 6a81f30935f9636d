# -*- test-case-name: tests.test_api_client -*-
"""
L{ServerAPI}: the Python side of the server API (PROTOCOL.md section 4),
for a backend that publishes to, calls into, or asks about the streams of
a txgraphsse server it does not run in.

This module owns the requests of that API on the wire: the credentials of
each (C{Authorization: apikey KEY} or C{Bearer TOKEN}), the JSON body or
query, and the answer's JSON, unwrapped to what each call is for (an id,
a result, a list) or turned into a L{RemoteError} with the server's status
and code.  It holds no stream and no session of its own: streams are
L{EventSource}'s and the calls between a client and the server are
L{GraphSSEClient}'s; it knows nothing of the server but its API's wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from .. import _messages as messages
from ._http import BodyReader, BytesProducer, Connections, RemoteError, remote_error
from ._source import default_reactor
from ._tokens import GetToken

__all__ = ["ServerAPI"]


class ServerAPI:
    """
    The server API of one txgraphsse server (any of its nodes), over HTTP::

        api = ServerAPI("http://127.0.0.1:8080/api", api_key=KEY)
        event_id = await api.publish("news", {"title": "hello"})
        result = await api.call(session_id, "double", [21])
        await api.close()

    Every call fires with what the server answered, unwrapped: the event
    id of a publish, the result of a call, the sessions of a presence; and
    fails with L{RemoteError} when the server refuses (its status, and its
    code and message: C{unauthorized}, C{no_channel}, C{no_session},
    C{timeout}, or the client's own code for a call whose route failed),
    or when its answer is not the JSON it should be (C{bad_answer}).

    @ivar url: the API's base URL, without a trailing C{/}
        (C{http://host:8080/api}).
    @ivar max_answer: the most bytes of an answer it reads.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        token: str | GetToken | None = None,
        reactor: IReactorTime | None = None,
        http_client: HTTPClient | None = None,
        *,
        max_answer: int = 16 << 20,
    ) -> None:
        """
        @param url: where the API is mounted (C{--api-path}, C{/api} by
            default), as C{http://} or C{https://}.
        @param api_key: a key of the server's (C{--api-key}), sent as
            C{Authorization: apikey KEY}; it may do everything.
        @param token: a JWT the server's authorizer accepts, sent as
            C{Authorization: Bearer TOKEN}; it may do what its C{"graphsse"}
            claims say (C{admin}: everything, C{publish}: L{publish} and
            L{history}).  Either the token, or a function of no arguments
            returning one (or a L{Deferred} of one), asked before each
            request so that it can stay fresh.
        @param reactor: the reactor; the global one by default.
        @param http_client: a treq client to make the requests with; by
            default the API makes connections of its own, which L{close}
            closes.
        @param max_answer: the most bytes of an answer to read.
        @raise ValueError: for both a key and a token, or a URL that is not
            C{http} or C{https}.
        """
        if api_key is not None and token is not None:
            raise ValueError("give an API key or a token, not both")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http or https URL: {url!r}")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._token = token
        self._reactor = reactor if reactor is not None else default_reactor()
        self._own: Connections | None = None
        if http_client is None:
            self._own = Connections(self._reactor)
            http_client = HTTPClient(self._own.agent)
        self._http = http_client
        self.max_answer = max_answer

    def __repr__(self) -> str:
        return f"<ServerAPI {self.url}>"

    # The calls

    def publish(
        self, channel: str, data: Any, event: str | None = None
    ) -> Deferred[str | None]:
        """
        Publish C{data} on C{channel}: its subscribers get it as any event
        of the channel (named C{event}, or after the channel), with its id.

        @param data: any JSON value; a string is sent as it is.
        @return: a L{Deferred} firing with the event's id once it has its
            place in the channel's order (L{None} for a channel that keeps
            no history).
        @raise TypeError: for C{data} that JSON cannot carry.
        @raise ValueError: for numbers that are not JSON (C{NaN}).
        """
        body = self._publish_body(data, event)
        body["channel"] = channel
        return self._request("POST", "publish", body).addCallback(_field, "id", _id)

    def publish_many(
        self, channels: Iterable[str], data: Any, event: str | None = None
    ) -> Deferred[dict[str, str | None]]:
        """
        Publish C{data} once on each of C{channels} (at most 100).

        @return: a L{Deferred} firing with each channel's event id (L{None}
            for one that keeps no history), by channel.
        @raise TypeError: for C{data} that JSON cannot carry.
        @raise ValueError: for numbers that are not JSON (C{NaN}).
        """
        body = self._publish_body(data, event)
        body["channels"] = list(channels)
        return self._request("POST", "publish", body).addCallback(_field, "ids", _ids)

    def call(
        self,
        session: str,
        route: str,
        args: Any = None,
        timeout: float | None = None,
    ) -> Deferred[Any]:
        """
        Run route C{route} of the client whose session is C{session}, on
        whichever node holds its stream.

        @param args: the route's arguments as on the wire: a list is
            spread, L{None} means none, any other value is one argument.
        @param timeout: the seconds the server waits for the client (at
            most 300; the endpoint's request timeout by default).
        @return: a L{Deferred} firing with what the route returned; failing
            with L{RemoteError} C{404 no_session}, C{504 timeout}, or
            C{502} with the client's own code (C{no_route},
            C{route_failed}, ...).
        @raise TypeError: for C{args} that JSON cannot carry.
        """
        body: dict[str, Any] = {"session": session, "route": route}
        if args is not None:
            body["args"] = args
        if timeout is not None:
            body["timeout"] = timeout
        return self._request("POST", "call", body).addCallback(
            _field, "result", _anything
        )

    def presence(self, channel: str) -> Deferred[list[dict[str, Any]]]:
        """
        Who is in C{channel} (one that keeps presence), on every node.

        @return: a L{Deferred} firing with one C{{"id", "subject", "info"}}
            per session.
        """
        return self._request("GET", "presence", query={"channel": channel}).addCallback(
            _field, "sessions", _sessions
        )

    def history(
        self, channel: str, since: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """
        The events C{channel} keeps, oldest first: those after id C{since},
        or all of them.

        @return: a L{Deferred} firing with the answer, C{{"events": [{"id",
            "event", "data"}, ...]}} (C{data} as the stream carried it, as
            text), with C{"reset": True} when C{since} is older than what
            the channel keeps (the events are then all it keeps).
        """
        query = {"channel": channel}
        if since is not None:
            query["since"] = since
        return self._request("GET", "history", query=query).addCallback(_history)

    def disconnect(
        self, session: str | None = None, subject: str | None = None
    ) -> Deferred[int]:
        """
        End the stream of C{session}, or every stream of C{subject}'s (a
        principal's subject), on every node; each gets a last
        C{disconnected} event.

        @return: a L{Deferred} firing with how many streams ended.
        @raise ValueError: unless exactly one of C{session} and C{subject}
            is given.
        """
        if (session is None) == (subject is None):
            raise ValueError("name either a session or a subject")
        body = {"session": session} if session is not None else {"subject": subject}
        return self._request("POST", "disconnect", body).addCallback(
            _field, "disconnected", _count
        )

    def openapi(self) -> Deferred[dict[str, Any]]:
        """
        The API's OpenAPI 3.1 document.
        """
        return self._request("GET", "openapi.json").addCallback(_document)

    def close(self) -> Deferred[None]:
        """
        Close the connections the API made (none when it was given a treq
        client).

        @return: a L{Deferred} that fires once they are all gone.
        """
        own = self._own
        if own is None:
            return succeed(None)
        return own.close()

    # The wire

    @staticmethod
    def _publish_body(data: Any, event: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"data": data}
        if event is not None:
            body["event"] = event
        return body

    def _authorization(self) -> Deferred[str | None]:
        if self._api_key is not None:
            return succeed(f"apikey {self._api_key}")
        token = self._token
        if token is None:
            return succeed(None)
        if isinstance(token, str):
            return succeed(f"Bearer {token}")
        got: Deferred[str] = maybeDeferred(cast(Callable[[], Any], token))
        return got.addCallback(lambda value: f"Bearer {value}")

    def _request(
        self,
        method: str,
        name: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> Deferred[Any]:
        """
        C{method} the API call C{name} with the JSON C{body} (a C{POST}) or
        the C{query}.

        @return: a L{Deferred} firing with the answer's JSON; failing with
            L{RemoteError} for a refusal or an answer that is not JSON.
        """
        url = f"{self.url}/{name}"
        if query:
            url += "?" + urlencode(query)
        payload = None if body is None else messages.dumps(body).encode("utf-8")

        def send(authorization: str | None) -> Deferred[IResponse]:
            headers = Headers({b"accept": [b"application/json"]})
            if authorization is not None:
                headers.setRawHeaders(b"authorization", [authorization.encode("utf-8")])
            if payload is not None:
                headers.setRawHeaders(b"content-type", [b"application/json"])
            return cast(
                "Deferred[IResponse]",
                self._http.request(
                    method,
                    url,
                    data=None if payload is None else BytesProducer(payload),
                    headers=headers,
                    allow_redirects=False,
                    unbuffered=True,
                    reactor=cast(Any, self._reactor),
                ),
            )

        return self._authorization().addCallback(send).addCallback(self._answer)

    def _answer(self, response: IResponse) -> Deferred[Any]:
        reader = BodyReader.read(response, self.max_answer)

        def parse(raw: bytes) -> Any:
            code = response.code
            if not 200 <= code < 300:
                raise remote_error(code, raw)
            try:
                return messages.loads(raw)
            except (ValueError, RecursionError):
                raise RemoteError(
                    code, "bad_answer", "the answer is not JSON"
                ) from None

        return reader.done.addCallback(parse)


def _bad_answer(what: str) -> RemoteError:
    return RemoteError(200, "bad_answer", f"the answer has no {what}")


def _field(answer: Any, name: str, check: Callable[[Any], bool]) -> Any:
    """
    The field C{name} of C{answer}, if C{check} holds of it.

    @raise RemoteError: C{bad_answer}, when it does not.
    """
    if not isinstance(answer, dict) or name not in answer or not check(answer[name]):
        raise _bad_answer(repr(name))
    return answer[name]


def _anything(value: Any) -> bool:
    return True


def _id(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _ids(value: Any) -> bool:
    return isinstance(value, dict) and all(_id(v) for v in value.values())


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sessions(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _history(answer: Any) -> dict[str, Any]:
    events = _field(answer, "events", lambda value: isinstance(value, list))
    if not all(isinstance(e, dict) for e in events):
        raise _bad_answer("list of events")
    return cast("dict[str, Any]", answer)


def _document(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise _bad_answer("document")
    return answer
