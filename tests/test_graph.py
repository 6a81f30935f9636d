"""
Tests for L{txgraphsse._graph} through L{SSEBackend}: routes as functions
(plain, L{Deferred}-returning, C{async def}) and objects whose verbs a
message's C{method} picks, exposure, the C{caller} keyword, and observers of
route outputs, for runs made in the server and runs a client C{POST}s.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txgraphsse import Caller, SSEClient, Value
from txgraphsse._graph import BadArguments, Forbidden, NoRoute, RouteGraph

from .test_calls import SSEHarness, read_response


class Counter:
    """
    An object route: its public methods are verbs.
    """

    count = 0

    class Nested:
        """
        A class attribute: not a verb.
        """

    def add(self, n: int = 1) -> int:
        self.count += n
        return self.count

    def get(self) -> int:
        return self.count

    def _secret(self) -> str:
        return "hidden"


class Service:
    """
    An object to L{SSEBackend.load}.
    """

    limit = 3

    class Helper:
        pass

    def greet(self, name: str) -> str:
        return f"hello {name}"

    def total(self, *numbers: int) -> int:
        return sum(numbers)

    @staticmethod
    def version() -> str:
        return "1.0"

    def _internal(self) -> str:
        return "no"

    def __len__(self) -> int:
        return 0


class RouteTests(SynchronousTestCase):
    """
    Adding routes and running them, locally and from a client.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.backend = self.harness.backend

    def remote(self, route: str, args: Any = None, **extra: Any) -> tuple[int, Any]:
        """
        C{POST} a route call; the status and the JSON body.
        """
        response = self.harness.post({"route": route, "args": args, **extra})
        return response.status, response.json()

    def test_builtin_routes(self) -> None:
        """
        Every backend has C{ping} (answers C{"pong"}) and C{echo} (its
        argument, its arguments as a list, or C{None}).
        """
        self.assertEqual(self.successResultOf(self.backend.call("ping")), "pong")
        self.assertIsNone(self.successResultOf(self.backend.call("echo")))
        self.assertEqual(self.successResultOf(self.backend.call("echo", 5)), 5)
        self.assertEqual(self.successResultOf(self.backend.call("echo", 1, 2)), [1, 2])
        self.assertEqual(self.remote("ping"), (200, {"args": "pong"}))
        self.assertEqual(self.remote("echo", [1, "a"]), (200, {"args": [1, "a"]}))
        self.assertEqual(self.remote("echo", {"k": 1}), (200, {"args": {"k": 1}}))

    def test_plain_function(self) -> None:
        """
        A plain function runs with the call's arguments, locally and
        remotely (a JSON array is spread into positional arguments).
        """
        self.backend.add_route("add", lambda a, b: a + b)
        self.assertEqual(self.successResultOf(self.backend.call("add", 1, 2)), 3)
        self.assertEqual(self.remote("add", [40, 2]), (200, {"args": 42}))

    def test_decorator(self) -> None:
        """
        C{@backend.route()} names the route after the function,
        C{@backend.route("name")} after the argument; the function itself
        is returned unchanged.
        """

        @self.backend.route()
        def double(x: int) -> int:
            return 2 * x

        @self.backend.route("triple")
        def three_times(x: int) -> int:
            return 3 * x

        self.assertEqual(double(2), 4)
        self.assertEqual(self.successResultOf(self.backend.call("double", 5)), 10)
        self.assertEqual(self.remote("triple", 5), (200, {"args": 15}))
        self.assertNotIn("three_times", self.backend.graph.routes)

    def test_hidden_route(self) -> None:
        """
        A route added with C{exposed=False} runs in the server but a client
        gets C{403 forbidden}.
        """

        @self.backend.route("admin", exposed=False)
        def admin() -> str:
            return "secret"

        self.assertEqual(self.successResultOf(self.backend.call("admin")), "secret")
        status, body = self.remote("admin")
        self.assertEqual(status, 403)
        self.assertEqual(body["error"]["code"], "forbidden")

    def test_deferred_route(self) -> None:
        """
        A route that returns a L{Deferred} answers when it fires; a client's
        C{POST} is answered then.
        """
        pending: list[Deferred[int]] = []

        def later() -> Deferred[int]:
            deferred: Deferred[int] = Deferred()
            pending.append(deferred)
            return deferred

        self.backend.add_route("later", later)
        local = self.backend.call("later")
        self.assertNoResult(local)
        pending[0].callback(7)
        self.assertEqual(self.successResultOf(local), 7)

        transport = self.harness.start_post({"route": "later", "args": None})
        self.assertEqual(transport.value(), b"")
        pending[1].callback(8)
        response = read_response(transport.value())
        self.assertEqual((response.status, response.json()), (200, {"args": 8}))

    def test_async_route(self) -> None:
        """
        An C{async def} route runs as a coroutine: its result (after what it
        awaits) is the answer, and what it raises is the failure.
        """
        gates: list[Deferred[int]] = []

        async def slow(x: int) -> int:
            gate: Deferred[int] = Deferred()
            gates.append(gate)
            return x + await gate

        async def quick(x: int) -> int:
            return x * 2

        async def broken() -> None:
            raise ZeroDivisionError("nope")

        self.backend.add_route("slow", slow)
        self.backend.add_route("quick", quick)
        self.backend.add_route("broken", broken)
        result = self.backend.call("slow", 1)
        self.assertNoResult(result)
        gates[0].callback(10)
        self.assertEqual(self.successResultOf(result), 11)
        transport = self.harness.start_post({"route": "slow", "args": 2})
        self.assertEqual(transport.value(), b"")
        gates[1].callback(10)
        response = read_response(transport.value())
        self.assertEqual((response.status, response.json()), (200, {"args": 12}))
        self.assertEqual(self.remote("quick", 4), (200, {"args": 8}))
        self.failureResultOf(self.backend.call("broken"), ZeroDivisionError)

    def test_route_that_raises(self) -> None:
        """
        A plain route that raises gives a failed L{Deferred}, not an
        exception from C{call}.
        """

        def bad() -> None:
            raise ValueError("bad input")

        self.backend.add_route("bad", bad)
        failure = self.failureResultOf(self.backend.call("bad"), ValueError)
        self.assertEqual(str(failure.value), "bad input")

    def test_bad_arguments(self) -> None:
        """
        Arguments that do not fit the route's signature fail with
        L{BadArguments} (a client gets C{400 bad_message}); a C{TypeError}
        raised inside a route that was called correctly is the route's own
        failure (C{500 route_failed}, logged).
        """

        def inner(x: int) -> int:
            return len(x)  # type: ignore[arg-type]

        self.backend.add_route("add", lambda a, b: a + b)
        self.backend.add_route("inner", inner)
        self.failureResultOf(self.backend.call("add", 1), BadArguments)
        self.failureResultOf(self.backend.call("add", 1, 2, 3), BadArguments)
        failure = self.failureResultOf(self.backend.call("inner", 5), TypeError)
        self.assertNotIsInstance(failure.value, BadArguments)
        status, body = self.remote("add", [1, 2, 3])
        self.assertEqual((status, body["error"]["code"]), (400, "bad_message"))
        status, body = self.remote("inner", 5)
        self.assertEqual((status, body["error"]["code"]), (500, "route_failed"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_unknown_route(self) -> None:
        """
        An unknown route raises L{NoRoute} in the server and gets C{404
        no_route} from a client.
        """
        self.assertRaises(NoRoute, self.backend.call, "nope")
        status, body = self.remote("nope")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "no_route")

    def test_bad_route_names(self) -> None:
        """
        A route name must be non-empty and not start with C{_}.
        """
        self.assertRaises(ValueError, self.backend.add_route, "", print)
        self.assertRaises(ValueError, self.backend.add_route, "_private", print)

    def test_replace_route(self) -> None:
        """
        Adding a route of an existing name replaces it and keeps its
        observers.
        """
        seen: list[Any] = []
        self.backend.add_route("r", lambda: 1)
        self.backend.subscribe("r", seen.append)
        self.backend.add_route("r", lambda: 2)
        self.assertEqual(self.successResultOf(self.backend.call("r")), 2)
        self.assertEqual(seen, [2])

    def test_load_public_methods_only(self) -> None:
        """
        C{load(obj)} adds every public method of C{obj} (bound) and nothing
        else: no private or dunder methods, no plain attributes, no classes.
        """
        service = Service()
        names = self.backend.load(service)
        self.assertEqual(sorted(names), ["greet", "total", "version"])
        routes = self.backend.graph.routes
        for absent in ("_internal", "__len__", "limit", "Helper"):
            self.assertNotIn(absent, routes)
        self.assertEqual(
            self.successResultOf(self.backend.call("greet", "ann")), "hello ann"
        )
        self.assertEqual(self.remote("total", [1, 2, 3]), (200, {"args": 6}))
        self.assertEqual(self.remote("version"), (200, {"args": "1.0"}))
        self.assertEqual(self.remote("_internal")[0], 404)

    def test_load_hidden(self) -> None:
        """
        C{load(obj, exposed=False)} adds routes for the server only.
        """
        self.backend.load(Service(), exposed=False)
        self.assertEqual(self.successResultOf(self.backend.call("version")), "1.0")
        self.assertEqual(self.remote("version")[0], 403)

    def test_restrict(self) -> None:
        """
        C{restrict} keeps routes from clients (C{403 forbidden}) while the
        server can still run them; unknown names are ignored; C{expose}
        undoes it.
        """
        self.backend.add_route("reset", lambda: "done")
        self.backend.restrict(["reset", "ping", "not-a-route"])
        self.assertEqual(self.successResultOf(self.backend.call("reset")), "done")
        for name in ("reset", "ping"):
            status, body = self.remote(name)
            self.assertEqual(status, 403)
            self.assertEqual(body["error"]["code"], "forbidden")
        self.assertRaises(Forbidden, self.backend.graph.get, "reset", True)
        self.assertEqual(self.remote("echo", 1), (200, {"args": 1}))
        self.backend.graph.expose(["reset"])
        self.assertEqual(self.remote("reset"), (200, {"args": "done"}))


class VerbTests(SynchronousTestCase):
    """
    A message's C{method} picks the verb of an object route.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.backend = self.harness.backend

    def remote(self, route: str, args: Any = None, **extra: Any) -> tuple[int, Any]:
        response = self.harness.post({"route": route, "args": args, **extra})
        return response.status, response.json()

    def test_value(self) -> None:
        """
        A L{Value} route: C{get} reads, C{post} (and no method) sets and
        returns the new value; several arguments are kept as a list; a
        C{post} without arguments reads.
        """
        value = Value(3)
        self.backend.add_route("v", value)
        call = self.backend.call
        self.assertEqual(self.successResultOf(call("v", method="get")), 3)
        self.assertEqual(self.successResultOf(call("v", 5, method="post")), 5)
        self.assertEqual(value.value, 5)
        self.assertEqual(self.successResultOf(call("v", 7)), 7)
        self.assertEqual(self.successResultOf(call("v", method="post")), 7)
        self.assertEqual(self.successResultOf(call("v", 1, 2, method="post")), [1, 2])
        self.assertEqual(self.remote("v", None, method="get"), (200, {"args": [1, 2]}))
        self.assertEqual(self.remote("v", "x", method="post"), (200, {"args": "x"}))
        self.assertEqual(self.remote("v", None, method="get"), (200, {"args": "x"}))
        self.assertEqual(self.remote("v", 9), (200, {"args": 9}))

    def test_object_methods(self) -> None:
        """
        An object's public methods are verbs, picked by C{method}; with no
        method, its C{get} answers.
        """
        counter = Counter()
        self.backend.add_route("counter", counter)
        self.assertEqual(
            self.successResultOf(self.backend.call("counter", 2, method="add")), 2
        )
        self.assertEqual(self.remote("counter", 3, method="add"), (200, {"args": 5}))
        self.assertEqual(self.remote("counter", None, method="get"), (200, {"args": 5}))
        self.assertEqual(self.remote("counter"), (200, {"args": 5}))

    def test_unknown_verb(self) -> None:
        """
        A verb the object lacks, a private one, an attribute that is not a
        method, or a class, is L{NoRoute}; a client gets C{404 no_route}.
        """
        self.backend.add_route("counter", Counter())
        for verb in ("nope", "_secret", "__init__", "count", "Nested"):
            self.assertRaises(NoRoute, self.backend.call, "counter", method=verb)
            status, body = self.remote("counter", None, method=verb)
            self.assertEqual(status, 404, verb)
            self.assertEqual(body["error"]["code"], "no_route")

    def test_function_with_verb(self) -> None:
        """
        A plain function answers C{get} and C{post} itself; other verbs are
        L{NoRoute}.
        """
        self.backend.add_route("f", lambda *args: list(args))
        self.assertEqual(
            self.successResultOf(self.backend.call("f", 1, method="get")), [1]
        )
        self.assertEqual(
            self.remote("f", [1, 2], method="post"), (200, {"args": [1, 2]})
        )
        self.assertRaises(NoRoute, self.backend.call, "f", method="put")
        self.assertEqual(self.remote("f", None, method="put")[0], 404)

    def test_object_without_verbs(self) -> None:
        """
        An object with no callable default verb cannot run without a method.
        """
        self.backend.add_route("thing", object())
        self.assertRaises(NoRoute, self.backend.call, "thing")
        self.assertEqual(self.remote("thing")[0], 404)

    def test_bad_method_type(self) -> None:
        """
        A C{method} that is not a string is a C{400 bad_message}.
        """
        self.backend.add_route("counter", Counter())
        status, body = self.remote("counter", None, method=3)
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "bad_message")


class CallerTests(SynchronousTestCase):
    """
    Routes that take a keyword-only C{caller} learn who called.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness(authorize=lambda request: "alice")
        self.backend = self.harness.backend
        self.callers: list[Caller] = []

        def whoami(*args: Any, caller: Caller) -> int:
            self.callers.append(caller)
            return len(args)

        self.backend.add_route("whoami", whoami)

    def test_local_call(self) -> None:
        """
        A server-side call gets an empty L{Caller}.
        """
        self.assertEqual(self.successResultOf(self.backend.call("whoami", 1, 2)), 2)
        self.assertEqual(self.callers, [Caller()])

    def test_session_call(self) -> None:
        """
        A client's call that names its session gets that L{SSEClient}, its
        principal and the endpoint; a C{caller} in the body's args is not
        taken for the keyword.
        """
        stream = self.harness.open()
        response = self.harness.post(
            {"route": "whoami", "args": [1], "sessionId": stream.session_id}
        )
        self.assertEqual((response.status, response.json()), (200, {"args": 1}))
        [caller] = self.callers
        self.assertIsInstance(caller.session, SSEClient)
        self.assertIs(caller.session, stream.client)
        self.assertEqual(caller.principal, "alice")
        self.assertIs(caller.endpoint, self.harness.endpoint)

    def test_sessionless_call(self) -> None:
        """
        A client's call without a session gets no session, but its principal
        and the endpoint.
        """
        response = self.harness.post({"route": "whoami", "args": None})
        self.assertEqual(response.status, 200)
        [caller] = self.callers
        self.assertIsNone(caller.session)
        self.assertEqual(caller.principal, "alice")
        self.assertIs(caller.endpoint, self.harness.endpoint)

    def test_given_caller(self) -> None:
        """
        The graph hands a route the L{Caller} it was given.
        """
        graph = RouteGraph()
        seen: list[Caller] = []

        def route(*, caller: Caller) -> None:
            seen.append(caller)

        graph.add_route("r", route)
        mine = Caller(principal="bob")
        self.successResultOf(graph.call("r", caller=mine))
        self.assertIs(seen[0], mine)

    def test_only_keyword_only(self) -> None:
        """
        A C{caller} parameter that is positional (or C{**kwargs}) is left to
        the call's arguments.
        """
        self.backend.add_route("positional", lambda caller=None: caller)
        self.backend.add_route("kwargs", lambda **kwargs: sorted(kwargs))
        call = self.backend.call
        self.assertIsNone(self.successResultOf(call("positional")))
        self.assertEqual(self.successResultOf(call("positional", "x")), "x")
        self.assertEqual(self.successResultOf(call("kwargs")), [])

    def test_verb_with_caller(self) -> None:
        """
        An object's verb with a keyword-only C{caller} gets it too.
        """
        seen: list[Caller] = []

        class Box:
            def post(self, value: Any, *, caller: Caller) -> Any:
                seen.append(caller)
                return value

        self.backend.add_route("box", Box())
        stream = self.harness.open()
        response = self.harness.post(
            {
                "route": "box",
                "args": 4,
                "method": "post",
                "sessionId": stream.session_id,
            }
        )
        self.assertEqual(response.json(), {"args": 4})
        self.assertIs(seen[0].session, stream.client)


class ObserverTests(SynchronousTestCase):
    """
    C{backend.subscribe}: observers of a route's outputs.
    """

    def setUp(self) -> None:
        self.harness = SSEHarness()
        self.backend = self.harness.backend
        self.backend.add_route("add", lambda a, b: a + b)
        self.seen: list[Any] = []

    def remote(self, route: str, args: Any = None, **extra: Any) -> tuple[int, Any]:
        response = self.harness.post({"route": route, "args": args, **extra})
        return response.status, response.json()

    def test_every_run(self) -> None:
        """
        An observer gets the output of every run: local, and from a client
        with or without a session.
        """
        self.backend.subscribe("add", self.seen.append)
        self.successResultOf(self.backend.call("add", 1, 2))
        self.assertEqual(self.remote("add", [3, 4]), (200, {"args": 7}))
        stream = self.harness.open()
        self.remote("add", [5, 6], sessionId=stream.session_id)
        self.assertEqual(self.seen, [3, 7, 11])

    def test_several_observers(self) -> None:
        """
        Every observer is called, each with its own number.
        """
        other: list[Any] = []
        first = self.backend.subscribe("add", self.seen.append)
        second = self.backend.subscribe("add", other.append)
        self.assertNotEqual(first, second)
        self.successResultOf(self.backend.call("add", 1, 1))
        self.assertEqual((self.seen, other), ([2], [2]))

    def test_deferred_output(self) -> None:
        """
        Observers get what a L{Deferred} or a coroutine route finally
        produces, when it does, and nothing when it fails.
        """
        gate: Deferred[int] = Deferred()

        async def slow() -> int:
            return await gate

        def failing() -> None:
            raise KeyError("x")

        self.backend.add_route("slow", slow)
        self.backend.add_route("failing", failing)
        self.backend.subscribe("slow", self.seen.append)
        self.backend.subscribe("failing", self.seen.append)
        result = self.backend.call("slow")
        self.assertEqual(self.seen, [])
        gate.callback(5)
        self.assertEqual(self.successResultOf(result), 5)
        self.failureResultOf(self.backend.call("failing"), KeyError)
        self.assertEqual(self.seen, [5])

    def test_verb_output(self) -> None:
        """
        Runs of an object route's verbs are outputs too.
        """
        self.backend.add_route("v", Value(0))
        self.backend.subscribe("v", self.seen.append)
        self.successResultOf(self.backend.call("v", 4, method="post"))
        self.remote("v", None, method="get")
        self.assertEqual(self.seen, [4, 4])

    def test_unsubscribe(self) -> None:
        """
        C{unsubscribe} ends one subscription (L{True}); again, or for an
        unknown route, it is L{False}.
        """
        sub = self.backend.subscribe("add", self.seen.append)
        self.assertIs(self.backend.unsubscribe("add", sub), True)
        self.assertIs(self.backend.unsubscribe("add", sub), False)
        self.assertIs(self.backend.unsubscribe("nope", sub), False)
        self.successResultOf(self.backend.call("add", 1, 2))
        self.assertEqual(self.seen, [])

    def test_unsubscribe_all(self) -> None:
        """
        Without a number, C{unsubscribe} ends every subscription of the
        route.
        """
        self.backend.subscribe("add", self.seen.append)
        self.backend.subscribe("add", self.seen.append)
        self.assertIs(self.backend.unsubscribe("add"), True)
        self.assertIs(self.backend.unsubscribe("add"), False)
        self.successResultOf(self.backend.call("add", 1, 2))
        self.assertEqual(self.seen, [])

    def test_subscribe_unknown_route(self) -> None:
        """
        Observing a route that does not exist raises L{NoRoute}.
        """
        self.assertRaises(NoRoute, self.backend.subscribe, "nope", print)

    def test_observer_that_raises(self) -> None:
        """
        An observer that raises is logged; the call still answers (locally
        and to the client) and the other observers are still called.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def broken(output: Any) -> None:
            raise ZeroDivisionError("observer")

        self.backend.subscribe("add", broken)
        self.backend.subscribe("add", self.seen.append)
        self.assertEqual(self.successResultOf(self.backend.call("add", 1, 2)), 3)
        self.assertEqual(self.remote("add", [2, 2]), (200, {"args": 4}))
        self.assertEqual(self.seen, [3, 4])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 2)
        self.assertEqual({e.get("route") for e in failures}, {"add"})
