# -*- test-case-name: tests.test_api -*-
"""
What the server API's requests do (PROTOCOL.md section 4): publish on
channels, call a client's route, read presence and history, end streams.

Each action takes an endpoint and a request's JSON body or query, checks
their shape, acts through the endpoint and its broker (so that it reaches
every node), and fires with the HTTP status and JSON answer; it fails only
with L{ProtocolError}.  Credentials, bodies and HTTP are the resource's
(L{txgraphsse.api}); nothing here reads a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, fail, gatherResults
from twisted.python.failure import Failure

from . import _messages as messages
from ._broker import BrokerUnavailable
from ._calls import RemoteCallError, SessionClosed
from ._channel import Channel
from ._encoder import encode_event
from ._endpoint import SSEEndpoint
from ._messages import ProtocolError
from ._outcalls import TooManyCalls

__all__ = ["Answer", "call", "disconnect", "history", "presence", "publish"]

#: The status and JSON body of an answer.
Answer = tuple[int, Any]

#: The longest C{timeout} a call may ask for, in seconds.
MAX_CALL_TIMEOUT = 300.0


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, "bad_message", message)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} must be a non-empty string")
    return value


def _channel(endpoint: SSEEndpoint, name: Any) -> Channel:
    """
    The channel C{name} of C{endpoint}: one it has, or, with dynamic
    channels, one made for it (as a stream asking for it would).
    """
    if not isinstance(name, str) or not name:
        raise _bad("a channel must be a non-empty string")
    channel = endpoint.channels.get(name)
    if channel is not None:
        return channel
    if not endpoint.dynamic_channels:
        raise ProtocolError(404, "no_channel", f"no channel {name!r} on this endpoint")
    try:
        endpoint.channel_table.join([name])
    except ValueError as why:
        raise ProtocolError(400, "bad_channel", f"{name[:40]!r}: {why}") from None
    return endpoint.channels[name]


def publish(endpoint: SSEEndpoint, body: Any) -> Deferred[Answer]:
    """
    C{POST /api/publish}: one event on C{channel}, or one on each of
    C{channels}; fire once each has its place in the order.
    """
    body = _object(body)
    event = body.get("event")
    if event is not None:
        if not isinstance(event, str) or not event:
            raise _bad("event must be a non-empty string")
        try:
            encode_event("", event)
        except ValueError:
            raise _bad("the event name cannot be carried (a line break)") from None
    if "data" not in body:
        raise _bad("a publish needs data")
    data = messages.as_data(body["data"])
    many = "channels" in body
    if many:
        names = body["channels"]
        if not isinstance(names, list) or not names or len(names) > 100:
            raise _bad("channels must be a list of 1 to 100 channel names")
    else:
        names = [body.get("channel")]
    channels = [_channel(endpoint, name) for name in dict.fromkeys(names)]
    published = [
        endpoint.broker.publish_acked(
            endpoint.path, channel.name, event, data, channel.history
        )
        for channel in channels
    ]
    endpoint.counters.events_published += len(channels)

    def answered(ids: list[str | None]) -> Answer:
        if many:
            return 200, {"ids": {c.name: i for c, i in zip(channels, ids, strict=True)}}
        return 200, {"id": ids[0]}

    def failed(failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, Exception) and isinstance(
            getattr(error, "subFailure", None), Failure
        ):
            failure = error.subFailure  # type: ignore[attr-defined]
        if failure.check(BrokerUnavailable):
            return Failure(
                ProtocolError(503, "unavailable", "the cluster cannot be reached")
            )
        return failure

    return gatherResults(published, consumeErrors=True).addCallbacks(answered, failed)


def call(endpoint: SSEEndpoint, body: Any) -> Deferred[Answer]:
    """
    C{POST /api/call}: run a client's route on its session, wherever it is
    held; fire with its result.
    """
    body = _object(body)
    session_id = _string(body, "session")
    route = _string(body, "route")
    timeout = body.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_CALL_TIMEOUT
    ):
        raise _bad(f"timeout must be a number of seconds, at most {MAX_CALL_TIMEOUT:g}")
    if session_id not in endpoint.sessions and not endpoint.broker.clustered:
        raise ProtocolError(404, "no_session", "no open session with that id")
    result = endpoint.run(
        route, body.get("args"), session_id=session_id, timeout=timeout
    )
    assert isinstance(result, Deferred)

    def failed(failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, SessionClosed):
            error = ProtocolError(404, "no_session", "no open session with that id")
        elif isinstance(error, TimeoutError):
            error = ProtocolError(504, "timeout", "the client did not answer in time")
        elif isinstance(error, RemoteCallError):
            error = ProtocolError(502, error.code, error.message)
        elif isinstance(error, TooManyCalls):
            error = ProtocolError(429, "rate_limited", str(error))
        else:
            return failure
        return Failure(error)

    return result.addCallbacks(lambda value: (200, {"result": value}), failed)


def presence(endpoint: SSEEndpoint, query: Mapping[str, str]) -> Deferred[Answer]:
    """
    C{GET /api/presence?channel=C}: who is in a channel that keeps presence,
    on every node.
    """
    name = query.get("channel")
    channel = endpoint.channels.get(name) if name else None
    if channel is None or name is None:
        return fail(ProtocolError(404, "no_channel", f"no channel {name!r} here"))
    if not channel.keeps_presence:
        return fail(_bad(f"channel {name!r} does not keep presence"))
    return channel.presence().addCallback(
        lambda sessions: (200, {"channel": name, "sessions": sessions})
    )


def history(endpoint: SSEEndpoint, query: Mapping[str, str]) -> Deferred[Answer]:
    """
    C{GET /api/history?channel=C&since=ID}: the kept events of a channel
    after an id (all of them without one), oldest first.
    """
    name = query.get("channel")
    channel = endpoint.channels.get(name) if name else None
    if channel is None:
        return fail(ProtocolError(404, "no_channel", f"no channel {name!r} here"))
    since = query.get("since")
    replay = endpoint.broker.replay(
        endpoint.path, [(channel.name, channel.history)], since
    )

    def answered(result: Any) -> Answer:
        events = [
            {"id": e.id, "event": e.event or channel.event or "message", "data": e.data}
            for e in result.events
        ]
        answer: dict[str, Any] = {"events": events}
        if since is not None and result.reset:
            answer["reset"] = True
        return 200, answer

    return replay.addCallback(answered)


def disconnect(endpoint: SSEEndpoint, body: Any) -> Deferred[Answer]:
    """
    C{POST /api/disconnect}: end a session's stream, or every stream of a
    subject, on every node.
    """
    body = _object(body)
    if ("session" in body) == ("subject" in body):
        raise _bad("name either a session or a subject")
    key = "session" if "session" in body else "subject"
    value = _string(body, key)
    ended = endpoint.broker.disconnect(
        endpoint.path,
        session_id=value if key == "session" else None,
        subject=value if key == "subject" else None,
    )
    return ended.addCallback(lambda count: (200, {"disconnected": count}))
