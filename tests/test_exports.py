"""
Tests for the package's layout: every public name is the object of the
private module it comes from (so that a layout can move without users
noticing, and a test says where each name lives), the house has no import
circles and no room too large, C{setup_sse}'s parameters are the endpoint's
options, and the C{test-case-name} headers name real test modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import types

from attrs import NOTHING, fields
from twisted.trial.unittest import SynchronousTestCase

import txgraphsse
from txgraphsse import SSEBackend
from txgraphsse._options import EndpointOptions

from ._layout import ROOT, module_name, package_imports, package_modules

#: Each public module, and where each of its public names is defined.
ORIGINS: dict[str, dict[str, str]] = {
    "txgraphsse": {
        "AccessDenied": "txgraphsse._auth",
        "CORSPolicy": "txgraphsse._cors",
        "Caller": "txgraphsse._graph",
        "Channel": "txgraphsse._channel",
        "ChannelSpec": "txgraphsse._channel",
        "EventStreamParser": "txgraphsse._parser",
        "HistoryPolicy": "txgraphsse._broker",
        "IAuthorizer": "txgraphsse._auth",
        "IBroker": "txgraphsse._broker",
        "InMemoryBroker": "txgraphsse._broker",
        "JWTAuthorizer": "txgraphsse._auth",
        "JWTPrincipal": "txgraphsse._auth",
        "Limits": "txgraphsse._limits",
        "ProtocolError": "txgraphsse._messages",
        "RemoteCallError": "txgraphsse._calls",
        "Replay": "txgraphsse._broker",
        "RouteError": "txgraphsse._calls",
        "SSEBackend": "txgraphsse._backend",
        "SSEClient": "txgraphsse._endpoint",
        "SSEEndpoint": "txgraphsse._endpoint",
        "SSEResource": "txgraphsse._resource",
        "SSEService": "txgraphsse._backend",
        "SSESite": "txgraphsse._inbound",
        "SSESession": "txgraphsse._session",
        "ServerSentEvent": "txgraphsse._parser",
        "SessionClosed": "txgraphsse._calls",
        "StoredEvent": "txgraphsse._broker",
        "TooManyCalls": "txgraphsse._outcalls",
        "Unauthorized": "txgraphsse._auth",
        "Value": "txgraphsse._graph",
        "encode_comment": "txgraphsse._encoder",
        "encode_event": "txgraphsse._encoder",
        "encode_retry": "txgraphsse._encoder",
    },
    "txgraphsse.client": {
        "ClientClosed": "txgraphsse._client._source",
        "Connection": "txgraphsse._client._connection",
        "EventHandler": "txgraphsse._client._source",
        "EventSource": "txgraphsse._client._source",
        "GraphSSEClient": "txgraphsse._client._graph",
        "Handler": "txgraphsse._client._graph",
        "IdleTimeout": "txgraphsse._client._source",
        "ReadyState": "txgraphsse._client._source",
        "RemoteError": "txgraphsse._client._http",
        "ResponseTooLarge": "txgraphsse._client._http",
        "ServerAPI": "txgraphsse._client._api",
        "ServerSentEvent": "txgraphsse._parser",
        "UnknownRoute": "txgraphsse._client._routes",
    },
    "txgraphsse.redis": {
        "RedisBroker": "txgraphsse._redis._broker",
    },
    "txgraphsse.testing": {
        "SSETestPair": "txgraphsse.testing",
    },
    "txgraphsse.metrics": {
        "MetricsResource": "txgraphsse.metrics",
        "SSECollector": "txgraphsse.metrics",
        "SharedStats": "txgraphsse.metrics",
    },
}

#: Modules whose names are not C{__all__}'s: version strings and the like.
_NOT_NAMES = {"__version__"}

#: How large a room may grow: a module, and a class in it.
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 450


class ExportTests(SynchronousTestCase):
    """
    Public names are their private origins.
    """

    def test_origins(self) -> None:
        """
        Each public module exports exactly the names pinned here, and each
        is the very object its origin module defines.
        """
        for public_name, names in ORIGINS.items():
            public = importlib.import_module(public_name)
            self.assertEqual(set(public.__all__) - _NOT_NAMES, set(names), public_name)
            for name, origin in names.items():
                self.assertIs(
                    getattr(public, name),
                    getattr(importlib.import_module(origin), name),
                    f"{public_name}.{name}",
                )
                value = getattr(public, name)
                # A generic alias (EventHandler) is no class, though Python
                # 3.10's inspect.isclass says it is.
                alias = isinstance(value, types.GenericAlias)
                if (inspect.isclass(value) and not alias) or inspect.isfunction(value):
                    self.assertEqual(value.__module__, origin, name)

    def test_version(self) -> None:
        """
        C{txgraphsse.__version__} is the installed distribution's version.
        """
        from importlib.metadata import version

        self.assertEqual(txgraphsse.__version__, version("txgraphsse"))

    def test_tests_use_public_paths(self) -> None:
        """
        No test imports a public name through a private module.
        """
        public = {
            name
            for public_name, names in ORIGINS.items()
            for name in names
            if public_name == "txgraphsse"
        }
        offences = []
        for path in sorted((ROOT / "tests").rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("txgraphsse._")
                    and node.module is not None
                ):
                    for alias in node.names:
                        if alias.name in public:
                            offences.append(f"{path.name}: {alias.name}")
        self.assertEqual(offences, [])


class LayoutTests(SynchronousTestCase):
    """
    The house: no circles, no oversized rooms, headers that point somewhere.
    """

    def test_no_import_circles(self) -> None:
        """
        No module of the package imports, directly or through others, a
        module that imports it back, counting imports inside functions and
        under C{TYPE_CHECKING}.
        """
        graph = {module_name(path): package_imports(path) for path in package_modules()}
        # A package's __init__ re-exports its modules; the modules may name
        # their package's private modules, never the face.
        circles = []
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(module: str) -> None:
            state[module] = 1
            stack.append(module)
            for target in sorted(graph.get(module, ())):
                if state.get(target) == 1:
                    circles.append([*stack[stack.index(target) :], target])
                elif target not in state:
                    visit(target)
            stack.pop()
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module)
        self.assertEqual(circles, [])

    def test_room_sizes(self) -> None:
        """
        No module is over L{MAX_MODULE_LINES} lines and no class over
        L{MAX_CLASS_LINES}.
        """
        large = []
        for path in package_modules():
            source = path.read_text(encoding="utf-8")
            lines = source.count("\n")
            if lines > MAX_MODULE_LINES:
                large.append(f"{module_name(path)}: {lines} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ClassDef):
                    size = (node.end_lineno or node.lineno) - node.lineno + 1
                    if size > MAX_CLASS_LINES:
                        large.append(f"{module_name(path)}.{node.name}: {size}")
        self.assertEqual(large, [])

    def test_test_case_names(self) -> None:
        """
        Every C{test-case-name} header names test modules that exist.
        """
        missing = []
        for path in [*package_modules(), *sorted((ROOT / "twisted").rglob("*.py"))]:
            first = path.read_text(encoding="utf-8").splitlines()[:2]
            for line in first:
                if "test-case-name:" not in line:
                    continue
                names = line.split("test-case-name:")[1].split("-*-")[0]
                for name in names.split(","):
                    if importlib.util.find_spec(name.strip()) is None:
                        missing.append(f"{path.name}: {name.strip()}")
        self.assertEqual(missing, [])


class OptionsTests(SynchronousTestCase):
    """
    C{setup_sse} and L{EndpointOptions} cannot drift apart.
    """

    def test_same_names_and_defaults(self) -> None:
        """
        Every parameter of C{setup_sse} but C{path}, C{authorize} and
        C{can_join} is a field of L{EndpointOptions} with the same default,
        and every field is such a parameter.
        """
        parameters = dict(inspect.signature(SSEBackend.setup_sse).parameters)
        for name in ("self", "path", "authorize", "can_join"):
            del parameters[name]
        options = {f.name: f.default for f in fields(EndpointOptions)}
        self.assertEqual(list(parameters), list(options))
        for name, parameter in parameters.items():
            self.assertIsNot(options[name], NOTHING, name)
            self.assertEqual(parameter.default, options[name], name)

    def test_options_reach_the_endpoint(self) -> None:
        """
        What C{setup_sse} is given is what the endpoint's options hold.
        """
        endpoint = SSEBackend().setup_sse(
            "/opts", keepalive=3.0, retry=10, dynamic_channels=True
        )
        self.addCleanup(endpoint.terminate)
        self.assertEqual(endpoint.options.keepalive, 3.0)
        self.assertEqual(endpoint.options.retry, 10)
        self.assertTrue(endpoint.options.dynamic_channels)
        self.assertEqual((endpoint.keepalive, endpoint.retry), (3.0, 10))
