# -*- test-case-name: tests.test_tap -*-
"""
C{twistd graphsse}: options, and the service they make.

This module owns the command line of the server: it builds an
L{SSEBackend}, mounts its endpoint in a C{Site} (with a page at C{/} that
shows the live stream), and returns a C{MultiService} whose stop closes every
stream cleanly.  Nothing imports it but the plugin in
C{twisted/plugins/graphsse.py}.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from twisted.web.static import Data, File

from ._backend import SSEBackend, SSEService
from ._endpoint import SSEEndpoint

__all__ = ["Options", "makeService", "mount"]


def _port(description: str) -> str:
    """
    A strports description for C{--port}: a bare number means TCP.
    """
    return f"tcp:{description}" if description.isdigit() else description


class Options(usage.Options):
    """
    The options of C{twistd graphsse}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve Server-Sent Events with two-way calls. GET <path> opens a "
        "stream; POST <path> is the way back. A page at / shows the stream."
    )
    optParameters: list[list[Any]] = [
        ["path", None, "/sse", "The path of the SSE endpoint."],
        ["channels", None, "", "Named channels, comma-separated (a,b)."],
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
    ]
    optFlags: list[list[str | None]] = [
        ["dynamic-channels", None, "Let clients join channels not configured."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["ports"] = []

    def opt_port(self, description: str) -> None:
        """
        A strports description to listen on (8080, tcp:8080:interface=
        127.0.0.1, ssl:8443:privateKey=...); may be given more than once.
        """
        self["ports"].append(_port(description))

    opt_p = opt_port
    opt_listen = opt_port

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = ["tcp:8080"]
        if not self["path"].startswith("/"):
            self["path"] = "/" + self["path"]
        if self["keepalive"] < 0:
            raise usage.UsageError("--keepalive must not be negative")
        if self["history"] < 0:
            raise usage.UsageError("--history must not be negative")


def _load(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise usage.UsageError(f"--app wants module:attr, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise usage.UsageError(
            f"--app: cannot import {module_name}: {error}"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise usage.UsageError(f"--app: {module_name} has no {attribute}") from None
    return target


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


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>txgraphsse</title>
<style>body{{font:15px system-ui,sans-serif;margin:2em;max-width:60em}}
#log{{background:#111;color:#9f9;padding:1em;height:24em;overflow:auto;
font:13px monospace;white-space:pre-wrap}}</style></head>
<body><h1>txgraphsse</h1>
<p>Live stream of <code>{path}</code>. Try
<code>curl -N http://HOST{path}</code>, or
<button id="ping">run ping on the server</button></p>
<div id="log"></div>
<script type="module">
import {{ openSSE }} from "{path}/client.js";
const log = (line) => {{
  const el = document.getElementById("log");
  el.textContent += line + "\\n"; el.scrollTop = el.scrollHeight;
}};
const sse = openSSE({{
  url: "{path}",
  onopen: () => log("open"),
  onmessage: (ev) => log((ev.type || "message") + ": " + ev.data),
  onerror: () => log("error (reconnecting)"),
}});
window.sse = sse;
document.getElementById("ping").onclick = async () =>
  log("ping -> " + JSON.stringify(await sse.run("ping")));
</script></body></html>
"""


def demo_page(path: str) -> Data:
    return Data(_PAGE.format(path=path).encode("utf-8"), "text/html; charset=utf-8")


def build(
    options: Options, backend: SSEBackend | None = None
) -> tuple[SSEBackend, SSEEndpoint, Site]:
    """
    The backend, endpoint and site that C{options} describe.
    """
    app = _load(options["app"]) if options["app"] else None
    if isinstance(app, SSEBackend):
        backend = app
    if backend is None:
        backend = SSEBackend()
    if app is not None and not isinstance(app, SSEBackend):
        if callable(app) and not isinstance(app, type):
            app(backend)
        else:
            backend.load(app)
    path = options["path"]
    endpoint = backend.endpoints.get(path)
    if endpoint is None:
        channels = [c.strip() for c in options["channels"].split(",") if c.strip()]
        endpoint = backend.setup_sse(
            path,
            channels=channels,
            keepalive=options["keepalive"],
            history=options["history"],
            retry=options["retry"],
            dynamic_channels=bool(options["dynamic-channels"]),
        )
    root: Resource
    if options["static"]:
        root = File(options["static"])
    else:
        root = Resource()
        root.putChild(b"", demo_page(path))
    mount(root, path, endpoint.resource)
    return backend, endpoint, Site(root)


def makeService(options: Options) -> IService:
    """
    A C{MultiService}: the backend's service first, then one listening port
    per C{--port}, so that on stop the ports close before the streams do.
    """
    backend, _, site = build(options)
    top = MultiService()
    SSEService(backend).setServiceParent(top)  # type: ignore[no-untyped-call]
    for description in options["ports"]:
        strports.service(description, site).setServiceParent(top)
    return top
