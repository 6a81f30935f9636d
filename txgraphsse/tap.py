# -*- test-case-name: tests.test_tap -*-
"""
C{twistd graphsse}: options, and the service they make.

This module owns the command line of the server: it builds an
L{SSEBackend}, mounts its endpoints in an L{SSESite} (with the demo of
L{txgraphsse._demo} at C{/} unless C{--static} or C{--app} replaces it), and
returns a C{MultiService} whose stop closes every stream cleanly.  Under
twistd, a bad option ends the process with one line, ports in use included
(L{txgraphsse._twistd}).  With C{--workers N} the service is a supervisor
of worker processes instead (L{txgraphsse._workers}), each of which builds its own
app here (L{txgraphsse._worker}).  With C{--metrics}, it mounts the metrics
on the public site, behind an L{txgraphsse._admin.AdminGuard} when auth is
on or a metrics key is given, or serves them on C{--metrics-port} alone.

Only the plugin in C{twisted/plugins/graphsse.py}, the worker's program and
L{txgraphsse.testing} import it: the modules it builds on never do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamServerEndpoint
from twisted.python import usage
from twisted.web.http import H2_ENABLED
from twisted.web.resource import IResource, Resource
from twisted.web.static import File

from . import _demo
from ._admin import AdminGuard, authorizer_of
from ._auth import IAuthorizer, JWTAuthorizer
from ._backend import SSEBackend, SSEService
from ._broker import HistoryPolicy, IBroker
from ._channel import ChannelSpec, specs_of
from ._cors import CORSPolicy
from ._endpoint import SSEEndpoint
from ._inbound import SSESite
from ._internals import rebuild_tls_context
from ._limits import Limits
from ._ports import parse_tcp
from ._twistd import (
    TwistdOptions,
    listen_now,
    load_app,
    one_line,
    read_rsa_key,
    require,
    server_endpoint,
    under_twistd,
)
from ._workers import WorkerSupervisor

if TYPE_CHECKING:
    from .metrics import SharedStats

__all__ = ["Options", "makeService", "mount"]


def _port(description: str) -> str:
    """
    A strports description for C{--port}: a bare number means TCP.
    """
    if not description.isdigit():
        return description
    if int(description) > 65535:
        raise usage.UsageError(f"--port {description}: a port is at most 65535")
    return f"tcp:{description}"


class Options(TwistdOptions):
    """
    The options of C{twistd graphsse}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve Server-Sent Events with two-way calls. GET <path> opens a "
        "stream; POST <path> is the way back. A demo page at / shows the stream,"
        " live data on a channel and calls both ways."
    )
    optParameters: list[list[Any]] = [
        ["path", None, "/sse", "The path of the SSE endpoint."],
        ["channels", None, "", "Named channels, comma-separated (a,b)."],
        ["presence", None, "", "Of --channels, those that keep presence (a,b)."],
        ["presence-ttl", None, 15.0, "Seconds a dead node stays in presence.", float],
        ["keepalive", None, 15.0, "Seconds between keep-alive comments.", float],
        ["history", None, 0, "Events each channel keeps for replay.", int],
        ["retry", None, 2000, "The retry: clients are told, in ms.", int],
        [
            "app",
            None,
            None,
            "module:attr: an SSEBackend, a function(backend), "
            "or an object whose public methods become routes.",
        ],
        ["static", None, None, "A directory served at / (instead of the demo page)."],
        ["history-age", None, None, "Seconds an event stays in history.", float],
        [
            "request-timeout",
            None,
            30.0,
            "Seconds a server-to-client call waits.",
            float,
        ],
        ["max-body", None, 1 << 20, "Bytes in one POST body (413 past it).", int],
        ["max-json-depth", None, 64, "Nesting of one POST body (400 past it).", int],
        [
            "calls-per-second",
            None,
            None,
            "POSTs per session (or address) a second.",
            float,
        ],
        ["call-burst", None, 50, "POSTs a session may send at once.", int],
        [
            "address-calls-per-second",
            None,
            None,
            "POSTs per client address a second, all its streams together"
            " (default: 10 times --calls-per-second).",
            float,
        ],
        [
            "address-call-burst",
            None,
            200,
            "POSTs a client address may send at once.",
            int,
        ],
        ["max-uri", None, 8192, "Bytes in a request line (414 past it).", int],
        [
            "max-header-bytes",
            None,
            16384,
            "Bytes in a request's headers (431 past it).",
            int,
        ],
        [
            "header-timeout",
            None,
            10.0,
            "Seconds a request's head may take, however it trickles (408).",
            float,
        ],
        [
            "body-timeout",
            None,
            30.0,
            "Seconds a request's body may take, however it trickles (408).",
            float,
        ],
        [
            "max-connecting-per-address",
            None,
            256,
            "Connections per client address that are not streams (503 past it).",
            int,
        ],
        [
            "max-connecting",
            None,
            10_000,
            "Connections that are not streams, all addresses (503 past it).",
            int,
        ],
        [
            "max-sessions",
            None,
            None,
            "Open streams on this process (503 past it).",
            int,
        ],
        [
            "max-sessions-per-address",
            None,
            None,
            "Open streams per client address.",
            int,
        ],
        [
            "max-pending-calls",
            None,
            10_000,
            "Server-to-client calls waiting per session.",
            int,
        ],
        ["max-subscriptions", None, 256, "Route subscriptions per session.", int],
        ["max-channels", None, 64, "Channels one session may join.", int],
        ["max-backlog", None, 1 << 20, "Bytes a slow stream may hold back.", int],
        [
            "overflow",
            None,
            "disconnect",
            "Past --max-backlog: disconnect or drop_oldest.",
        ],
        [
            "write-timeout",
            None,
            60.0,
            "Seconds a stream whose client reads nothing may wait (0: no limit).",
            float,
        ],
        ["jwt-secret", None, None, "Require a JWT signed with this HS256 secret."],
        [
            "jwt-public-key",
            None,
            None,
            "Require a JWT signed with the RS256 key in FILE.",
        ],
        ["jwt-claim", None, "subscribe", "The claim that lists joinable channels."],
        ["metrics", None, None, "Serve Prometheus metrics at this path (/metrics)."],
        [
            "metrics-key",
            None,
            None,
            "A key that reads the metrics (Authorization: Bearer KEY, or"
            " apikey KEY); --metrics-key-file keeps it out of ps.",
        ],
        ["metrics-key-file", None, None, "A file that holds the metrics key."],
        [
            "api-path",
            None,
            "/api",
            "Where the server API is served, with --api-key or a JWT option.",
        ],
        [
            "metrics-port",
            None,
            None,
            "Serve the metrics on this port alone, not on the public ones: a"
            " number (on --metrics-interface) or a strports description.",
        ],
        [
            "metrics-interface",
            None,
            None,
            "The address a numeric --metrics-port listens on (127.0.0.1).",
        ],
        [
            "idle-timeout",
            None,
            30.0,
            "Seconds a connection may idle outside a stream (slow request"
            " headers or bodies are dropped after it).",
            float,
        ],
        [
            "redis",
            None,
            None,
            "redis://[user:password@]host[:port][/db]: join the other nodes"
            " (and workers) that use this Redis.",
        ],
        ["redis-prefix", None, "graphsse", "What every Redis key starts with."],
        [
            "workers",
            None,
            1,
            "Processes sharing the listening ports (TCP only); more than one"
            " needs --redis.",
            int,
        ],
    ]
    optFlags: list[list[str | None]] = [
        ["dynamic-channels", None, "Let clients join channels not configured."],
        [
            "expose-errors",
            None,
            "Answer a failing route with its exception's text (default: hidden).",
        ],
        ["cors-credentials", None, "Let allowed origins send cookies."],
        ["quiet-streams", None, "Do not log each stream's opening and end."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["cors"] = []
        self["trusted-proxies"] = []
        self["argv"] = []
        self["api-keys"] = []
        #: The C{--jwt-public-key} file's bytes, read by L{postOptions}.
        self.public_key: bytes | None = None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options} (the command line after C{graphsse}), and keep them
        in C{self["argv"]}: C{--workers} hands them to each worker process.
        """
        argv = list(sys.argv[1:] if options is None else options)
        self["argv"] = argv
        super().parseOptions(argv)

    def opt_cors_origin(self, origin: str) -> None:
        """
        An origin that may use the endpoint from a browser
        (https://app.example); may be given more than once; * for any.
        """
        self["cors"].append(origin)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        A proxy (address or network: 127.0.0.1, 10.0.0.0/8) whose
        X-Forwarded-For names the client, for the per-address limits and the
        logs; may be given more than once.
        """
        try:
            ip_network(network, strict=False)
        except ValueError:
            raise usage.UsageError(
                f"--trusted-proxy wants an address or network, not {network!r}"
            ) from None
        self["trusted-proxies"].append(network)

    def opt_api_key(self, key: str) -> None:
        """
        A key that may use the server API (Authorization: apikey KEY); may
        be given more than once.
        """
        if not key.strip():
            raise usage.UsageError("an API key must not be empty")
        self["api-keys"].append(key.strip())

    def opt_api_key_file(self, name: str) -> None:
        """
        A file of API keys, one per line (kept out of ps); may be given
        more than once.
        """
        try:
            with open(name, encoding="utf-8") as file:
                keys = [line.strip() for line in file if line.strip()]
        except OSError as error:
            raise usage.UsageError(f"--api-key-file: {error}") from None
        if not keys:
            raise usage.UsageError(f"--api-key-file: no key in {name}")
        self["api-keys"].extend(keys)

    def opt_port(self, description: str) -> None:
        """
        A strports description to listen on (8080, tcp:8080:interface=
        127.0.0.1, ssl:8443:privateKey=...); may be given more than once.
        """
        self["ports"].append(_port(description))

    opt_p = opt_port

    def opt_listen(self, description: str) -> None:
        """The same as --port."""
        self.opt_port(description)

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = ["tcp:8080"]
        if not self["path"].startswith("/"):
            self["path"] = "/" + self["path"]
        if not self["path"].strip("/"):
            raise usage.UsageError("--path must not be /, where the page is")
        if self["keepalive"] < 0:
            raise usage.UsageError("--keepalive must not be negative")
        if self["history"] < 0:
            raise usage.UsageError("--history must not be negative")
        if self["overflow"] not in ("disconnect", "drop_oldest"):
            raise usage.UsageError("--overflow is disconnect or drop_oldest")
        try:
            channel_specs(self)
        except ValueError as error:
            raise usage.UsageError(f"--presence: {error}") from None
        if self["jwt-secret"] and self["jwt-public-key"]:
            raise usage.UsageError("give --jwt-secret or --jwt-public-key, not both")
        for name in ("max-body", "max-json-depth", "max-backlog", "call-burst"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        if self["presence-ttl"] <= 0:
            raise usage.UsageError("--presence-ttl must be positive")
        if self["redis"] is not None and not self["redis"].startswith("redis://"):
            raise usage.UsageError("--redis wants a redis:// URL")
        self._check_metrics()
        self._check_needs()
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")
        if self["workers"] > 1:
            if not self["redis"]:
                raise usage.UsageError(
                    "--workers past 1 needs --redis: workers share sessions and"
                    " events only through a broker they all reach"
                )
            for description in self["ports"]:
                try:
                    parse_tcp(description)
                except ValueError as error:
                    raise usage.UsageError(f"--workers: {error}") from None
            if self["metrics-port"] is not None:
                try:
                    parse_tcp(self["metrics-port"])
                except ValueError as error:
                    raise usage.UsageError(f"--metrics-port: {error}") from None

    def _check_needs(self) -> None:
        """
        What the options need besides themselves: the C{--static}
        directory, the C{--jwt-public-key} file (read into L{public_key}),
        and the optional packages of C{--redis}, C{--metrics} and the JWT
        options (each named with its C{pip install} step).
        """
        if self["static"] is not None and not os.path.isdir(self["static"]):
            raise usage.UsageError(f"--static {self['static']}: no such directory")
        metrics = "--metrics-port" if self["metrics-port"] else "--metrics"
        for option, given in [
            ("--redis", self["redis"]),
            (metrics, self["metrics"]),
            ("--jwt-secret", self["jwt-secret"]),
            ("--jwt-public-key", self["jwt-public-key"]),
        ]:
            if given:
                require(option)
        if self["jwt-public-key"]:
            self.public_key = read_rsa_key(self["jwt-public-key"])

    def _check_metrics(self) -> None:
        """
        The metrics options: read C{--metrics-key-file} into
        C{self["metrics-key"]}, and make a numeric C{--metrics-port} a
        C{tcp:} description on C{--metrics-interface}.  C{--metrics-port}
        alone serves C{/metrics}.
        """
        if self["metrics-key"] is not None and self["metrics-key-file"] is not None:
            raise usage.UsageError("give --metrics-key or --metrics-key-file, not both")
        if self["metrics-key-file"] is not None:
            try:
                with open(self["metrics-key-file"], encoding="utf-8") as file:
                    self["metrics-key"] = file.read().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise usage.UsageError(f"--metrics-key-file: {error}") from None
        if self["metrics-key"] is not None and not self["metrics-key"].strip():
            raise usage.UsageError("the metrics key must not be empty")
        port, interface = self["metrics-port"], self["metrics-interface"]
        if port is None and interface is not None:
            raise usage.UsageError("--metrics-interface needs --metrics-port")
        if port is not None:
            if port.isdigit():
                address = (interface or "127.0.0.1").replace(":", "\\:")
                self["metrics-port"] = f"tcp:{port}:interface={address}"
            elif interface is not None:
                raise usage.UsageError(
                    "--metrics-interface goes with a numeric --metrics-port:"
                    " give the interface in the description instead"
                )
            if self["metrics"] is None:
                self["metrics"] = "/metrics"
        if self["metrics-key"] is not None and self["metrics"] is None:
            raise usage.UsageError("--metrics-key needs --metrics or --metrics-port")
        if self["metrics"] is not None and not self["metrics"].startswith("/"):
            self["metrics"] = "/" + self["metrics"]

    def limits(self) -> Limits:
        """
        The endpoint limits these options ask for.
        """
        return Limits(
            max_body=self["max-body"],
            max_json_depth=self["max-json-depth"],
            calls_per_second=self["calls-per-second"],
            call_burst=self["call-burst"],
            address_calls_per_second=self.address_rate(),
            address_call_burst=self["address-call-burst"],
            max_uri=self["max-uri"],
            max_header_bytes=self["max-header-bytes"],
            header_timeout=self["header-timeout"],
            body_timeout=self["body-timeout"],
            max_connecting_per_address=self["max-connecting-per-address"],
            max_connecting=self["max-connecting"],
            max_sessions=self["max-sessions"],
            max_sessions_per_address=self["max-sessions-per-address"],
            max_pending_calls=self["max-pending-calls"],
            max_subscriptions=self["max-subscriptions"],
            max_channels=self["max-channels"],
            trusted_proxies=self["trusted-proxies"],
        )

    def address_rate(self) -> float | None:
        """
        C{--address-calls-per-second}, or ten times C{--calls-per-second}
        (a few streams of one browser, or of one office behind NAT), or
        none.
        """
        if self["address-calls-per-second"] is not None:
            return float(self["address-calls-per-second"])
        if self["calls-per-second"] is not None:
            return 10 * float(self["calls-per-second"])
        return None

    def authorizer(self) -> IAuthorizer | None:
        """
        The JWT authorizer these options ask for, if any.
        """
        if self["jwt-secret"]:
            return JWTAuthorizer(
                self["jwt-secret"], ("HS256",), claim=self["jwt-claim"]
            )
        if self["jwt-public-key"]:
            key = self.public_key or read_rsa_key(self["jwt-public-key"])
            return JWTAuthorizer(key, ("RS256",), claim=self["jwt-claim"])
        return None


def demo_on(options: Options) -> bool:
    """
    Whether the demo (L{txgraphsse._demo}) runs: in one process, without
    C{--static} or C{--app}.
    """
    return not options["static"] and not options["app"] and options["workers"] == 1


def channel_specs(options: Options) -> list[ChannelSpec]:
    """
    The channels C{--channels} and C{--presence} ask for (L{specs_of}).

    @raise ValueError: for a C{--presence} channel it does not allow.
    """
    return specs_of(
        options["channels"], options["presence"], bool(options["dynamic-channels"])
    )


def mount(root: Resource, path: str, resource: IResource) -> None:
    """
    Put C{resource} at C{path} below C{root}, making the resources between.
    """
    parts = [p.encode("utf-8") for p in path.strip("/").split("/") if p]
    if not parts:
        raise ValueError("the SSE path must not be /")
    node = root
    for part in parts[:-1]:
        child = node.children.get(part)
        if child is None:
            child = Resource()
            node.putChild(part, child)
        node = child
    node.putChild(parts[-1], resource)


def broker_for(options: Options, reactor: IReactorTime) -> IBroker | None:
    """
    The broker C{--redis} asks for, or L{None} for the default (in memory).
    """
    if not options["redis"]:
        return None
    from .redis import RedisBroker

    return RedisBroker(
        reactor,
        url=options["redis"],
        prefix=options["redis-prefix"],
        presence_ttl=options["presence-ttl"],
    )


def build(
    options: Options,
    backend: SSEBackend | None = None,
    shared: SharedStats | None = None,
) -> tuple[SSEBackend, SSEEndpoint, SSESite]:
    """
    The backend, endpoint and site that C{options} describe.

    @param shared: with C{--metrics} in a worker, the workers' shared
        stats, so that its metrics answer for all of them.
    """
    app = load_app(options["app"]) if options["app"] else None
    if isinstance(app, SSEBackend):
        if backend is not None:
            raise usage.UsageError(
                "--app names a ready SSEBackend, which has its own broker: with"
                " --redis, give a function(backend) or a routes object instead"
            )
        backend = app
    if backend is None:
        backend = SSEBackend()
    if app is not None and not isinstance(app, SSEBackend):
        if callable(app) and not isinstance(app, type):
            app(backend)
        else:
            backend.load(app)
    live = demo_on(options)
    if live:
        _demo.add_routes(backend)
    path = options["path"]
    authorizer = options.authorizer()
    endpoint = backend.endpoints.get(path)
    if endpoint is None:
        channels = channel_specs(options)
        if live and _demo.CHANNEL not in {spec.name for spec in channels}:
            channels.append(_demo.channel())
        endpoint = backend.setup_sse(
            path,
            channels=channels,
            keepalive=options["keepalive"],
            history=HistoryPolicy(options["history"], options["history-age"]),
            retry=options["retry"],
            dynamic_channels=bool(options["dynamic-channels"]),
            expose_errors=bool(options["expose-errors"]),
            log_streams=not options["quiet-streams"],
            request_timeout=options["request-timeout"],
            max_backlog=options["max-backlog"],
            overflow=options["overflow"],
            write_timeout=options["write-timeout"] or None,
            authorizer=authorizer,
            limits=options.limits(),
            cors=CORSPolicy.allow(options["cors"], bool(options["cors-credentials"])),
        )
    root: Resource
    if options["static"]:
        root = File(options["static"])
    else:
        root = Resource()
        root.putChild(b"", _demo.page(path, live))
    mount(root, path, endpoint.resource)
    for other in backend.endpoints.values():  # those an --app sets up elsewhere
        if other is not endpoint and not other.closed:
            if not other.path.strip("/"):
                raise usage.UsageError("--app: an endpoint at /, where the page is")
            mount(root, other.path, other.resource)
    if options["api-keys"] or authorizer is not None:
        from .api import ServerAPIResource

        api_path = "/" + options["api-path"].strip("/")
        mount(
            root,
            api_path,
            ServerAPIResource(endpoint, options["api-keys"], authorizer, api_path),
        )
    if options["metrics"] and options["metrics-port"] is None:
        mount(
            root,
            options["metrics"],
            metrics_resource(options, backend, shared, authorizer),
        )
    # The site bounds requests as their bytes arrive (limits, deadlines,
    # connection caps).  Twisted switches the idle timeout off while a
    # request runs, so it never ends a stream; it ends idle keep-alive
    # connections.
    site = SSESite(root, limits=options.limits(), timeout=options["idle-timeout"])
    return backend, endpoint, site


def metrics_resource(
    options: Options,
    backend: SSEBackend,
    shared: SharedStats | None = None,
    authorizer: IAuthorizer | None = None,
) -> IResource:
    """
    The metrics of C{backend}, behind an L{AdminGuard} where they need
    credentials: on the public port, with an authorizer (C{authorizer}, the
    JWT options', or else an endpoint's that is not the default), an
    admin's token or C{--metrics-key}; on C{--metrics-port}
    (C{authorizer} L{None}), C{--metrics-key} if given; otherwise no
    credentials, as without auth.
    """
    from .metrics import MetricsResource

    resource = MetricsResource(backend, shared)
    keys = [options["metrics-key"]] if options["metrics-key"] else []
    if authorizer is None and options["metrics-port"] is None:
        authorizer = authorizer_of(backend)
    if authorizer is None and not keys:
        return resource
    return AdminGuard(resource, authorizer, keys)


def metrics_site(
    options: Options, backend: SSEBackend, shared: SharedStats | None = None
) -> SSESite | None:
    """
    The site of C{--metrics-port}, which serves the metrics alone (a token
    is not asked for there: it is for a private interface), or L{None}
    without the option.
    """
    if options["metrics-port"] is None:
        return None
    root = Resource()
    mount(root, options["metrics"], metrics_resource(options, backend, shared))
    return SSESite(root, limits=options.limits(), timeout=options["idle-timeout"])


def makeService(options: Options) -> IService:
    """
    A C{MultiService}: the backend's service first, then one listening port
    per C{--port} (and C{--metrics-port}), then the demo's ticker if the
    demo runs, so that on stop the ports close before the streams do.

    With C{--workers N} (N > 1) this process serves nothing itself: it binds
    the ports and supervises N worker processes that serve them (see
    L{txgraphsse._workers}).  Under twistd the ports are listened on here,
    so that one in use ends the process (with one line, as every bad option
    found here does) before twistd writes its pid file.
    """
    with one_line(options):
        return _make_service(options)


def _make_service(options: Options) -> IService:
    from twisted.internet import reactor

    now = under_twistd(options)
    top = MultiService()
    if options["workers"] > 1:
        supervisor = WorkerSupervisor(options)
        if now:
            try:
                supervisor.bind()
            except OSError as error:
                taken = " ".join(options["ports"])
                raise usage.UsageError(
                    f"--port {taken}: cannot listen: {error}"
                ) from None
        supervisor.setServiceParent(top)  # type: ignore[no-untyped-call]
        return top
    broker = broker_for(options, cast(IReactorTime, reactor))
    backend, endpoint, site = build(
        options, None if broker is None else SSEBackend(reactor, broker=broker)
    )
    SSEService(backend).setServiceParent(top)  # type: ignore[no-untyped-call]
    ports = [("--port", d, site) for d in options["ports"]]
    private = metrics_site(options, backend)
    if private is not None:
        ports.append(("--metrics-port", options["metrics-port"], private))
    endpoints = [server_endpoint(reactor, d, option) for option, d, _ in ports]
    for (option, description, factory), port in zip(ports, endpoints, strict=True):
        port = with_http2(port) if factory is site else port
        if now:
            port = listen_now(port, factory, description, option)
        StreamServerEndpointService(port, factory).setServiceParent(top)
    if demo_on(options):
        _demo.Ticker(endpoint, reactor).setServiceParent(top)  # type: ignore[no-untyped-call]
    return top


def with_http2(endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """
    Let a TLS endpoint offer HTTP/2 by ALPN when the C{h2} package is
    installed: the C{ssl:} strports parser builds its context without
    protocols, and browsers only speak HTTP/2 over TLS when it is offered.
    HTTP/2 lifts HTTP/1.1's six streams per origin.
    """
    if not isinstance(endpoint, SSL4ServerEndpoint) or not H2_ENABLED:
        return endpoint
    from twisted.internet.ssl import CertificateOptions

    def offering_h2(old: Any) -> CertificateOptions:
        return CertificateOptions(
            privateKey=old.privateKey,
            certificate=old.certificate,
            extraCertChain=old.extraCertChain,
            dhParameters=getattr(old, "dhParameters", None),
            acceptableProtocols=[b"h2", b"http/1.1"],
        )

    rebuild_tls_context(endpoint, offering_h2)
    return endpoint
