# -*- test-case-name: tests.test_graph,tests.test_client -*-
"""
How a message's C{method} picks the function a route runs: the one rule
that the server's route graph and the Python client's routes share.

A route is a callable, or an object whose public methods are its verbs.
This module owns that rule and nothing else: it raises no error of its own
(each half names a missing route in its own terms) and knows nothing of the
wire, HTTP or SSE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

__all__ = ["resolve_verb", "verb_name"]

#: The verbs an object route answers a message without a C{method} with, in
#: order of preference.
_DEFAULT_VERBS = ("post", "__call__", "get")


def resolve_verb(target: Any, method: str | None) -> Callable[..., Any] | None:
    """
    The function that a message with C{method} runs on route C{target}.

    With a C{method}: the target's public method of that name, or, for
    C{get} and C{post}, a callable target itself.  Without one: a callable
    target itself, or an object's C{post}, C{__call__} or C{get}.

    @return: the function, or L{None} if the route has no such verb (a
        C{method} that starts with C{_} never names one).
    """
    if method:
        if method.startswith("_"):
            return None
        verb = getattr(target, method, None)
        if callable(verb) and not isinstance(verb, type):
            return cast(Callable[..., Any], verb)
        if method in ("get", "post") and callable(target):
            return cast(Callable[..., Any], target)
        return None
    if callable(target):
        return cast(Callable[..., Any], target)
    for default in _DEFAULT_VERBS:
        verb = getattr(target, default, None)
        if callable(verb):
            return cast(Callable[..., Any], verb)
    return None


def verb_name(route: str, method: str | None) -> str:
    """
    How errors name the verb C{method} of route C{route}: C{route.method},
    or the route alone without a method.
    """
    return f"{route}.{method}" if method else route
