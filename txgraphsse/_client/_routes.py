# -*- test-case-name: tests.test_client -*-
"""
The client's own routes: which function a message runs, running it, and
how a failure is named in the answer the server gets.

Which verb a message's C{method} picks is L{txgraphsse._verbs}' rule, the
one the server's route graph follows too; this module adds the client's
words for a missing one (L{UnknownRoute}) and runs what it picks, plain,
returning a L{Deferred} or C{async def}.  It never touches a connection, a
stream or HTTP, and knows nothing of the server.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.python.failure import Failure

from .._messages import spread_args
from .._verbs import resolve_verb, verb_name
from ._http import RemoteError

__all__ = ["UnknownRoute", "error_of", "run_route"]


class UnknownRoute(LookupError):
    """
    The client has no route (or no verb on a route) by that name.
    """


def _resolve(target: Any, method: str | None, name: str) -> Callable[..., Any]:
    """
    The function a message with C{method} runs on route C{target}: the
    route itself, or, for an object, its public method C{method} (C{post},
    C{__call__} or C{get} without one).

    @raise UnknownRoute: the route has no such verb.
    """
    verb = resolve_verb(target, method)
    if verb is None:
        raise UnknownRoute(verb_name(name, method))
    return verb


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    result = fn(*args)
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return result


def run_route(
    routes: Mapping[str, Any], name: str, args: Any, method: str | None
) -> Deferred[Any]:
    """
    Run route C{name} of C{routes} with C{args} spread as on the wire.

    @return: a L{Deferred} firing with its result; it fails with
        L{UnknownRoute} if there is no such route or verb.
    """
    target = routes.get(name)
    if target is None:
        return fail(UnknownRoute(f"no route {name!r} here"))
    try:
        fn = _resolve(target, method, name)
    except UnknownRoute:
        return fail()
    return maybeDeferred(_invoke, fn, spread_args(args))


def error_of(failure: Failure) -> dict[str, str]:
    """
    The C{error} member of a failed answer to the server's request.
    """
    error = failure.value
    if isinstance(error, UnknownRoute):
        code = "no_route"
    elif isinstance(error, RemoteError):
        code = error.code
    else:
        code = "route_failed"
    text = f"{type(error).__name__}: {failure.getErrorMessage()}"
    return {"code": code, "message": " ".join(text.split())[:300]}
