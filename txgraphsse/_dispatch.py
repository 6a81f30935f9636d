# -*- test-case-name: tests.test_backchannel -*-
"""
The back-channel: what a client's C{POST} body asks for, and the answer.

This module owns the mapping from the body shapes of PROTOCOL.md section 2 to
actions on an endpoint (run a route, settle a pending call, subscribe,
unsubscribe) and from their outcomes to an HTTP status and a JSON body.  The
resource has already parsed the body and checked the request; nothing here
touches HTTP beyond returning a status number.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _messages as messages
from ._auth import principal_key, same_principal
from ._broker import IBroker
from ._calls import CallTable, RemoteCallError, RouteError
from ._graph import BadArguments, Caller, Forbidden, NoRoute, RouteGraph
from ._messages import ProtocolError
from ._options import EndpointOptions
from ._stats import Counters

__all__ = ["Answer", "ProtocolError", "dispatch", "dispatch_forwarded"]

_log = Logger()


class _Session(Protocol):
    """
    What the dispatcher needs of a session.
    """

    id: str
    principal: Any

    @property
    def is_connected(self) -> bool: ...


class _ClientCalls(Protocol):
    def deliver_update(self, session_id: str, route: str, args: Any) -> bool: ...


class _Lifetimes(Protocol):
    def refresh(self, session: Any, principal: Any) -> float | None: ...


class _Observers(Protocol):
    def subscribe(self, session_id: str, route: str, principal: Any = None) -> int: ...

    def unsubscribe(self, session_id: str, route: str, sub: int) -> bool: ...


class _Endpoint(Protocol):
    """
    What the dispatcher needs of the endpoint it acts on.
    """

    path: str
    graph: RouteGraph
    broker: IBroker
    options: EndpointOptions
    calls: CallTable
    counters: Counters

    @property
    def sessions(self) -> Mapping[str, _Session]: ...

    @property
    def client_calls(self) -> _ClientCalls: ...

    @property
    def observers(self) -> _Observers: ...

    @property
    def lifetimes(self) -> _Lifetimes: ...

    def send(
        self, message: Any, event: str | None = None, session_id: str | None = None
    ) -> int: ...

    def caller_for(self, session: Any, principal: Any = None) -> Caller: ...


@frozen
class Answer:
    """
    The HTTP answer to a C{POST}: a status and a JSON value (or no body).
    """

    status: int
    body: Any = None
    has_body: bool = True


#: The answer to a reply that settled a call (frozen: one serves them all).
_SETTLED = Answer(204, has_body=False)


def _session(
    endpoint: _Endpoint, session_id: Any, required: bool, principal: Any
) -> _Session | None:
    if session_id is None or session_id == "":
        if required:
            raise ProtocolError(400, "bad_message", "this message needs a sessionId")
        return None
    if not isinstance(session_id, str):
        raise ProtocolError(400, "bad_message", "sessionId must be a string")
    session = endpoint.sessions.get(session_id)
    if session is None:
        raise ProtocolError(404, "no_session", "no open session with that id here")
    if not same_principal(session.principal, principal):
        raise ProtocolError(403, "forbidden", "that session belongs to someone else")
    return session


def _route_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(400, "bad_message", "route must be a non-empty string")
    return value


def _method(body: dict[str, Any]) -> str | None:
    method = body.get("method")
    if method is not None and not isinstance(method, str):
        raise ProtocolError(400, "bad_message", "method must be a string")
    return method


def dispatch(
    endpoint: _Endpoint,
    body: Any,
    header_session: str | None,
    principal: Any = None,
    forwarded: bool = False,
) -> Deferred[Answer]:
    """
    Act on one C{POST} body.

    @param header_session: the C{X-GraphSSE-Session} header, if any.
    @param forwarded: whether another node received it and handed it here
        (it is never forwarded again).
    @return: a L{Deferred} firing with the L{Answer}; it fails only with
        L{ProtocolError}.
    """
    try:
        if not forwarded:
            elsewhere = _forward(endpoint, body, header_session, principal)
            if elsewhere is not None:
                return elsewhere
        return _dispatch(endpoint, body, header_session, principal)
    except ProtocolError as error:
        return fail(error)


def dispatch_forwarded(
    endpoint: _Endpoint, body: Any, header_session: str | None, principal: Any
) -> Deferred[tuple[int, Any]]:
    """
    Act on a C{POST} body another node received for a session of this one.

    @return: a L{Deferred} firing with the status and JSON body (L{None}
        for no body) to send back to that node; it never fails.
    """

    def answered(answer: Answer) -> tuple[int, Any]:
        return answer.status, answer.body if answer.has_body else None

    def refused(failure: Failure) -> tuple[int, Any]:
        error = failure.value
        if not isinstance(error, ProtocolError):
            _log.failure("Forwarded call failed", failure=failure)
            error = ProtocolError(500, "route_failed", "internal error")
        return error.status, error.body()

    return dispatch(
        endpoint, body, header_session, principal, forwarded=True
    ).addCallbacks(answered, refused)


def _named_session(body: Any, header_session: str | None) -> Any:
    """
    The session a body acts for, wherever the protocol lets it say so.
    """
    if not isinstance(body, dict):
        return None
    named = body.get("sessionId", header_session)
    args = body.get("args")
    if isinstance(args, list):
        route = body.get("route")
        if route == "runRequest" and len(args) > 3 and args[3] is not None:
            named = args[3]
        elif route == "subscribeSSE" and len(args) > 5 and args[5] is not None:
            named = args[5]
    return named


def _forward(
    endpoint: _Endpoint, body: Any, header_session: str | None, principal: Any
) -> Deferred[Answer] | None:
    """
    Hand the body to the node holding its session, if that is not this one.
    """
    if not endpoint.broker.clustered:
        return None
    named = _named_session(body, header_session)
    if not isinstance(named, str) or not named or named in endpoint.sessions:
        return None
    if body.get("route") == "refreshToken":
        # Another node would know the caller by its key alone, and a
        # session's credentials must be whole: refresh where the stream is.
        raise ProtocolError(
            409,
            "not_here",
            "this node does not hold the session: its stream will end at the"
            " token's expiry, and a reconnect with a fresh token carries on",
        )
    answer = endpoint.broker.forward(
        endpoint.path, named, body, header_session, principal_key(principal)
    )
    if answer is None:
        return None
    return answer.addCallback(
        lambda result: Answer(result[0], result[1], result[1] is not None)
    )


def _dispatch(
    endpoint: _Endpoint, body: Any, header_session: str | None, principal: Any
) -> Deferred[Answer]:
    if not isinstance(body, dict):
        raise ProtocolError(400, "bad_message", "the body must be a JSON object")
    session_id = body.get("sessionId", header_session)
    route = body.get("route")

    if route is None:
        if "callbackId" not in body:
            raise ProtocolError(
                400, "bad_message", "a message needs a route or a callbackId"
            )
        return _reply(endpoint, body, session_id, principal)

    name = _route_name(route)
    args = body.get("args")
    if name == "runRequest":
        return _run_request(endpoint, args, session_id, principal)
    return _act(endpoint, name, args, _method(body), session_id, principal).addCallback(
        lambda result: Answer(200, {"args": result})
    )


def _act(
    endpoint: _Endpoint,
    name: str,
    args: Any,
    method: str | None,
    session_id: Any,
    principal: Any,
) -> Deferred[Any]:
    """
    Run route C{name} (one of the application's, or C{subscribeSSE} or
    C{unsubscribe}) for the session C{session_id}; fire with its result.
    """
    if name == "subscribeSSE":
        return succeed(_subscribe(endpoint, args, session_id, principal))
    if name == "unsubscribe":
        return succeed(_unsubscribe(endpoint, args, session_id, principal))
    if name == "refreshToken":
        return succeed(_refresh(endpoint, session_id, principal))
    session = _session(endpoint, session_id, False, principal)
    return _call(endpoint, name, args, method, session, principal)


def _call(
    endpoint: _Endpoint,
    name: str,
    args: Any,
    method: str | None,
    session: _Session | None,
    principal: Any,
) -> Deferred[Any]:
    if session is not None and endpoint.sessions.get(session.id) is not session:
        raise ProtocolError(404, "no_session", "the session is closing")
    try:
        result = endpoint.graph.call(
            name,
            messages.spread_args(args),
            method,
            endpoint.caller_for(session, principal),
            from_client=True,
        )
    except NoRoute:
        raise ProtocolError(404, "no_route", f"no route {name!r}") from None
    except Forbidden:
        raise ProtocolError(
            403, "forbidden", f"route {name!r} is not exposed"
        ) from None
    return result.addErrback(_route_failed, name, endpoint)


def _route_failed(failure: Failure, name: str, endpoint: _Endpoint) -> Failure:
    """
    What a client hears of a route that failed: a L{RouteError}'s code and
    message, raised on purpose; else, unless the endpoint exposes errors,
    only C{route_failed} and an error id, which the log line with the
    traceback carries too.
    """
    error = failure.value
    if isinstance(error, ProtocolError):
        return failure
    if isinstance(error, BadArguments):
        return Failure(ProtocolError(400, "bad_message", f"bad arguments for {name!r}"))
    if isinstance(error, RouteError):
        return Failure(ProtocolError(500, error.code, _one_line(error.message)))
    endpoint.counters.route_failures += 1
    error_id = secrets.token_hex(6)
    _log.failure(
        "Route {route} failed (error id {error_id})",
        failure=failure,
        route=name,
        error_id=error_id,
    )
    if endpoint.options.expose_errors:
        text = _one_line(f"{type(error).__name__}: {failure.getErrorMessage()}")
    else:
        text = f"route {name!r} failed (error id {error_id})"
    return Failure(ProtocolError(500, "route_failed", text, error_id))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _run_request(
    endpoint: _Endpoint, args: Any, session_id: Any, principal: Any
) -> Deferred[Answer]:
    if not isinstance(args, list) or len(args) < 3:
        raise ProtocolError(
            400,
            "bad_message",
            "runRequest args must be [message, path, callbackId, sessionId]",
        )
    message, _path, callback_id = args[0], args[1], args[2]
    if len(args) > 3 and args[3] is not None:
        session_id = args[3]
    if not isinstance(message, dict):
        raise ProtocolError(
            400, "bad_message", "a runRequest message must be an object"
        )
    if not isinstance(callback_id, str | int | float) or isinstance(callback_id, bool):
        raise ProtocolError(400, "bad_message", "callbackId must be a string or number")
    name = _route_name(message.get("route"))
    if name == "runRequest":
        raise ProtocolError(400, "bad_message", "a runRequest cannot wrap another")
    session = _session(endpoint, session_id, False, principal)
    result = _act(
        endpoint, name, message.get("args"), _method(message), session_id, principal
    )

    def answered(value: Any) -> Answer:
        reply = messages.reply(value, callback_id)  # type: ignore[arg-type]
        if session is not None and session.is_connected:
            try:
                endpoint.send(reply, session_id=session.id)
            except (TypeError, ValueError) as error:
                raise ProtocolError(
                    500, "route_failed", f"the result is not JSON: {error}"
                ) from None
        return Answer(200, reply)

    return result.addCallback(answered)


def _not_pending() -> ProtocolError:
    return ProtocolError(
        409, "not_pending", "no pending call with that callbackId for this session"
    )


def _reply(
    endpoint: _Endpoint, body: dict[str, Any], session_id: Any, principal: Any
) -> Deferred[Answer]:
    callback_id = body["callbackId"]
    session = _session(endpoint, session_id, True, principal)
    assert session is not None
    if not isinstance(callback_id, str):
        raise _not_pending()
    args = body.get("args")
    error = body.get("error")
    failed: RemoteCallError | None = None
    if error is not None:
        # The client's route failed: the server's call fails with it.
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else None
        failed = RemoteCallError(
            code if isinstance(code, str) else "route_failed",
            text if isinstance(text, str) else str(error)[:300],
        )
        if endpoint.calls.refuse(callback_id, session.id, failed):
            return succeed(_SETTLED)
    elif endpoint.calls.settle(
        callback_id, session.id, args
    ) or endpoint.client_calls.deliver_update(session.id, callback_id, args):
        return succeed(_SETTLED)
    broker = endpoint.broker
    if broker.clustered:
        # A call made by another node (its id leads the callbackId), or an
        # update of a subscription another node made ("*": ask them all).
        # An error is never a subscription's update: it goes to a caller.
        node, dot, _ = callback_id.partition(".")
        elsewhere = bool(dot) and node != broker.node_id
        if failed is not None and not elsewhere:
            raise _not_pending()
        settled = broker.settle(
            endpoint.path,
            node if elsewhere else "*",
            callback_id,
            session.id,
            args,
            None if failed is None else (failed.code, failed.message),
        )
        if settled is not None:

            def done(ok: bool) -> Answer:
                if not ok:
                    raise _not_pending()
                return Answer(204, has_body=False)

            return settled.addCallback(done)
    raise _not_pending()


def _subscribe(endpoint: _Endpoint, args: Any, session_id: Any, principal: Any) -> int:
    if not isinstance(args, list) or not args:
        raise ProtocolError(
            400,
            "bad_message",
            "subscribeSSE args must be"
            " [route, path, args?, key?, subInput?, sessionId]",
        )
    name = _route_name(args[0])
    if len(args) > 5 and args[5] is not None:
        session_id = args[5]
    session = _session(endpoint, session_id, True, principal)
    assert session is not None
    try:
        endpoint.graph.get(name, from_client=True)
    except NoRoute:
        raise ProtocolError(404, "no_route", f"no route {name!r}") from None
    except Forbidden:
        raise ProtocolError(
            403, "forbidden", f"route {name!r} is not exposed"
        ) from None
    return endpoint.observers.subscribe(session.id, name, session.principal)


def _unsubscribe(
    endpoint: _Endpoint, args: Any, session_id: Any, principal: Any
) -> bool:
    if (
        not isinstance(args, list)
        or len(args) < 2
        or not isinstance(args[1], int)
        or isinstance(args[1], bool)
    ):
        raise ProtocolError(400, "bad_message", "unsubscribe args must be [route, sub]")
    name = _route_name(args[0])
    session = _session(endpoint, session_id, True, principal)
    assert session is not None
    return endpoint.observers.unsubscribe(session.id, name, args[1])


def _refresh(endpoint: _Endpoint, session_id: Any, principal: Any) -> dict[str, Any]:
    """
    Carry the session on under the credentials this C{POST} came with (the
    same client's: L{_session} refuses another's), until they expire.
    """
    session = _session(endpoint, session_id, True, principal)
    assert session is not None
    return {"expires": endpoint.lifetimes.refresh(session, principal)}
