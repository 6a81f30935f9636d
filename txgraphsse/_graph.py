# -*- test-case-name: tests.test_graph -*-
"""
Routes: named functions (or objects with verbs) that clients may call, and
observers of their outputs.

This module owns the table of routes, which of them are exposed to clients,
how a message's C{method} picks a verb, and the subscribers that every run of
a route notifies.  It knows nothing of HTTP or SSE: callers hand it a name,
arguments and an optional L{Caller}.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from ._auth import principal_key
from ._verbs import resolve_verb, verb_name

__all__ = [
    "EVERYONE",
    "BadArguments",
    "Caller",
    "Forbidden",
    "NoRoute",
    "Route",
    "RouteGraph",
    "Value",
    "call_owner",
]

#: The owner of an observer that sees every output of its route, and of a
#: call whose output every observer may see (one the server made itself).
EVERYONE: Any = object()


class NoRoute(KeyError):
    """
    No route by that name (or no such verb on it).
    """


class Forbidden(Exception):
    """
    The route exists but clients may not call it.
    """


class BadArguments(TypeError):
    """
    The arguments do not fit the route's signature: the caller's mistake,
    not the route's.
    """


@frozen
class Caller:
    """
    Who is calling a route: handed to routes that take a keyword-only
    parameter named C{caller}.

    @ivar session: the calling session (an L{txgraphsse.SSEClient}), or
        L{None} for a call made in the server itself.
    @ivar principal: what the endpoint's authorizer said the caller is.
    @ivar endpoint: the endpoint the call came through.
    """

    session: Any = None
    principal: Any = None
    endpoint: Any = None


def call_owner(caller: Caller | None, from_client: bool) -> Any:
    """
    Whose call it is, for the observers of its route (L{RouteGraph.subscribe}):
    L{EVERYONE}'s for a call the server makes itself; a client's principal
    (its L{principal_key}) where it has one; else its session, by id; a
    client call with neither is nobody's but its own (a fresh object).
    """
    if not from_client:
        return EVERYONE
    if caller is not None:
        if caller.principal is not None:
            return principal_key(caller.principal)
        session = caller.session
        if session is not None:
            return "session:" + session.id
    return object()


@define
class Value:
    """
    A route that holds a value: C{get} reads it, C{post} (or a call with no
    method) sets it and returns the new value.
    """

    value: Any = None

    def get(self) -> Any:
        return self.value

    def post(self, *args: Any) -> Any:
        if args:
            self.value = args[0] if len(args) == 1 else list(args)
        return self.value


@define
class Route:
    """
    One named route.

    @ivar target: a callable, or an object whose public methods are its verbs.
    @ivar exposed: whether clients may call it.
    @ivar subscribable: whether a client that subscribes to it sees the
        outputs of every call, not only its own principal's.
    @ivar observers: the subscriptions that see every output.
    @ivar owned: the subscriptions that see only the outputs of one owner's
        calls (L{call_owner}), by owner.
    """

    name: str
    target: Any
    exposed: bool = True
    subscribable: bool = False
    observers: dict[int, Callable[[Any], object]] = field(factory=dict)
    owned: dict[Any, dict[int, Callable[[Any], object]]] = field(factory=dict)
    _resolved: dict[str | None, tuple[Callable[..., Any], bool]] = field(
        factory=dict, init=False, repr=False
    )

    def function(self, method: str | None) -> tuple[Callable[..., Any], bool]:
        """
        L{resolve}, remembered: the function and whether it takes C{caller}.
        """
        found = self._resolved.get(method)
        if found is None:
            fn = self.resolve(method)
            found = (fn, _wants_caller(fn))
            if len(self._resolved) < 64:
                self._resolved[method] = found
        return found

    def resolve(self, method: str | None) -> Callable[..., Any]:
        """
        The function that a message with C{method} runs (the rule of
        L{txgraphsse._verbs.resolve_verb}).

        @raise NoRoute: the route has no such verb.
        """
        fn = resolve_verb(self.target, method)
        if fn is None:
            raise NoRoute(verb_name(self.name, method))
        return fn


def _wants_caller(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("caller")
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY


class RouteGraph:
    """
    Named routes and their observers.
    """

    _log = Logger()

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self._next_sub = 0
        # The owner of each owned subscription, by number.
        self._owners: dict[int, Any] = {}

    def add_route(
        self, name: str, target: Any, exposed: bool = True, subscribable: bool = False
    ) -> Route:
        """
        Add (or replace) route C{name}.

        @param subscribable: whether a client's subscription sees the outputs
            of everyone's calls (by default, only its own principal's).
        """
        if not name or name.startswith("_"):
            raise ValueError(
                f"a route name must not be empty or start with _: {name!r}"
            )
        old = self.routes.get(name)
        route = Route(name, target, exposed, subscribable)
        if old is not None:
            route.observers = old.observers
            route.owned = old.owned
        self.routes[name] = route
        return route

    def route(
        self, name: str | None = None, exposed: bool = True, subscribable: bool = False
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """
        A decorator: C{@graph.route("name")} adds the function as a route.
        """

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add_route(name or fn.__name__, fn, exposed, subscribable)
            return fn

        return add

    def load(self, obj: Any, exposed: bool = True) -> list[str]:
        """
        Add every public method of C{obj} as a route of its name.

        @return: the names added.
        """
        names = []
        for name in dir(obj):
            if name.startswith("_"):
                continue
            member = getattr(obj, name)
            if callable(member) and not isinstance(member, type):
                self.add_route(name, member, exposed)
                names.append(name)
        return names

    def restrict(self, names: Iterable[str]) -> None:
        """
        Let clients call none of C{names}; the server still can.
        """
        for name in names:
            route = self.routes.get(name)
            if route is not None:
                route.exposed = False

    def expose(self, names: Iterable[str]) -> None:
        for name in names:
            self.routes[name].exposed = True

    def get(self, name: str, from_client: bool) -> Route:
        route = self.routes.get(name)
        if route is None:
            raise NoRoute(name)
        if from_client and not route.exposed:
            raise Forbidden(name)
        return route

    def call(
        self,
        name: str,
        args: tuple[Any, ...] = (),
        method: str | None = None,
        caller: Caller | None = None,
        from_client: bool = False,
    ) -> Deferred[Any]:
        """
        Run route C{name} with C{args}; its result (plain, L{Deferred} or
        coroutine) goes to its observers and to the returned L{Deferred}.

        @raise NoRoute: no route or verb by that name.
        @raise Forbidden: C{from_client} and the route is not exposed.
        """
        route = self.get(name, from_client)
        fn, wants_caller = route.function(method)
        kwargs: dict[str, Any] = {}
        if wants_caller:
            kwargs["caller"] = caller if caller is not None else Caller()
        result = maybeDeferred(_run, fn, args, kwargs)
        if route.observers or route.owned:
            result.addCallback(self._notify, route, call_owner(caller, from_client))
        return result

    def _notify(self, result: Any, route: Route, owner: Any) -> Any:
        observers = list(route.observers.items())
        if owner is EVERYONE:
            for owned in route.owned.values():
                observers.extend(owned.items())
        else:
            observers.extend(route.owned.get(owner, {}).items())
        for sub, observer in observers:
            try:
                observer(result)
            except Exception:
                self._log.failure(
                    "Observer {sub} of route {route} failed", sub=sub, route=route.name
                )
        return result

    def subscribe(
        self, name: str, callback: Callable[[Any], object], owner: Any = EVERYONE
    ) -> int:
        """
        Call C{callback} with every output of route C{name}, or only with
        those of C{owner}'s calls (L{call_owner}) and the server's own.

        @return: the subscription's number, for L{unsubscribe}.
        @raise NoRoute: no such route.
        """
        route = self.routes.get(name)
        if route is None:
            raise NoRoute(name)
        self._next_sub += 1
        if owner is EVERYONE:
            route.observers[self._next_sub] = callback
        else:
            route.owned.setdefault(owner, {})[self._next_sub] = callback
            self._owners[self._next_sub] = owner
        return self._next_sub

    def unsubscribe(self, name: str, sub: int | None = None) -> bool:
        """
        End subscription C{sub} of route C{name} (every one, if C{sub} is
        L{None}).

        @return: whether there was one.
        """
        route = self.routes.get(name)
        if route is None:
            return False
        if sub is None:
            had = bool(route.observers or route.owned)
            for owned in route.owned.values():
                for number in owned:
                    self._owners.pop(number, None)
            route.observers.clear()
            route.owned.clear()
            return had
        if sub in self._owners:
            owner = self._owners[sub]
            owned = route.owned.get(owner, {})
            if owned.pop(sub, None) is None:
                return False
            del self._owners[sub]
            if not owned:
                del route.owned[owner]
            return True
        return route.observers.pop(sub, None) is not None


def _run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        result = fn(*args, **kwargs)
    except TypeError as error:
        # Only now, on the unhappy path: was it the call or the route?
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError:
            raise BadArguments(str(error)) from None
        except ValueError:
            pass
        raise
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return result
