# -*- test-case-name: tests.test_newcomer,tests.test_tap -*-
"""
The demo of C{twistd graphsse}: the page at C{/}, and what makes it live.

It owns the page (the stream as it arrives, the page's own address in a
C{curl} line, a call each way, the examples), the C{demo} channel and the
L{Ticker} that publishes a counter on it every second, and the route
C{call_me}, by which the page asks the server to call one of the page's
own routes.  The tap decides when the demo runs (only when neither
C{--static} nor C{--app} replaces it): this module never reads the command
line, and never mounts anything.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from string import Template
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.web.static import Data

from ._backend import SSEBackend
from ._calls import RouteError
from ._channel import ChannelSpec
from ._endpoint import SSEEndpoint
from ._graph import Caller

__all__ = ["CHANNEL", "EXAMPLES", "Ticker", "add_routes", "channel", "page"]

#: The channel the demo's counter is published on.
CHANNEL = "demo"

#: The examples of the checkout, each with its command and what it shows.
EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "chat",
        ".venv/bin/python examples/chat/app.py --port 8080",
        "a Klein app: rooms are channels, a newcomer gets the room's recent messages",
    ),
    (
        "dashboard",
        ".venv/bin/python examples/dashboard/app.py --port 8080",
        "measurements streamed ten times a second, plotted on a canvas",
    ),
    (
        "calls",
        ".venv/bin/python examples/calls/app.py --port 8080",
        "buttons run Python routes; Python runs the page's functions",
    ),
    (
        "python_calls",
        ".venv/bin/python examples/python_calls.py",
        "a Python server and a Python client calling each other",
    ),
    (
        "seed",
        ".venv/bin/python examples/seed.py",
        "graphscript's setupSSE example, in Python",
    ),
    (
        "cluster",
        ".venv/bin/python examples/cluster/run_cluster.py",
        "Redis, three nodes and nginx in front of them",
    ),
)


def channel() -> ChannelSpec:
    """
    The demo's channel: no history, since an old count is of no use.
    """
    return ChannelSpec(CHANNEL, history=0)


class Ticker(Service):
    """
    Publishes C{{"count": n, "time": "HH:MM:SS"}} (UTC) on the C{demo}
    channel every L{interval} seconds while it runs, from 1.

    @ivar count: what it published last (0 before the first).
    """

    interval = 1.0

    def __init__(self, endpoint: SSEEndpoint, clock: IReactorTime) -> None:
        self.endpoint = endpoint
        self.count = 0
        self._clock = clock
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    def tick(self) -> None:
        """
        Publish the next count.
        """
        self.count += 1
        now = datetime.fromtimestamp(self._clock.seconds(), timezone.utc)
        self.endpoint.channels[CHANNEL].broadcast(
            {"count": self.count, "time": now.strftime("%H:%M:%S")}
        )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()


def call_me(x: Any = 21, *, caller: Caller) -> Deferred[dict[str, Any]]:
    """
    The route C{call_me}: run the calling page's route C{double} with C{x},
    and answer what was asked and what the page answered.

    @raise RouteError: for a call that comes through no session.
    """
    session = caller.session
    if session is None:
        raise RouteError("open a stream first: the server calls back its page")
    asked = x if isinstance(x, (int, float)) and not isinstance(x, bool) else 21
    answered: Deferred[Any] = session.run("double", [asked])
    return answered.addCallback(lambda answer: {"asked": asked, "answer": answer})


def add_routes(backend: SSEBackend) -> None:
    """
    Add the demo's route, C{call_me}, to C{backend}.
    """
    backend.add_route("call_me", call_me)


def page(path: str, live: bool) -> Data:
    """
    The page at C{/} for the endpoint at C{path}.

    @param live: whether the demo runs (its counter and C{call_me}); without
        it the page shows the stream and runs C{ping}.
    """

    def js(value: object) -> str:
        return json.dumps(value).replace("<", "\\u003c")

    examples = "\n".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(what)}<br>"
        f"<code>{html.escape(command)}</code></li>"
        for name, command, what in EXAMPLES
    )
    text = _PAGE.substitute(
        path=html.escape(path),
        path_js=js(path),
        client_js=js(path + "/client.js"),
        live_js=js(live),
        channel_js=js(CHANNEL),
        hidden="" if live else " hidden",
        examples=examples,
    )
    return Data(text.encode("utf-8"), "text/html; charset=utf-8")


_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>txgraphsse</title>
<link rel="icon" href="data:,">
<style>
body{font:15px system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}
section{border:1px solid #ccd;border-radius:6px;padding:.2em 1em .8em;margin:1em 0}
#counter{font:bold 3em monospace;color:#064}
#log{background:#111;color:#9f9;padding:1em;height:14em;overflow:auto;
font:13px monospace;white-space:pre-wrap}
code{background:#f3f3f6;padding:0 .25em}
.result{font-family:monospace;margin-left:.5em}
</style></head>
<body><h1>txgraphsse</h1>
<p>Server-Sent Events with two-way calls, for Twisted: this page talks to the
endpoint at <code>$path</code>, with the browser client it serves at
<code>$path/client.js</code>.</p>

<section id="live"$hidden><h2>Live data on a channel</h2>
<p>The server publishes a counter on the channel <code>demo</code> every
second; this page joined it (<code>?channels=demo</code>).</p>
<p><span id="counter">&hellip;</span>
<span id="clock" class="result"></span></p></section>

<section><h2>Calls both ways</h2>
<p><button id="ping">run ping on the server</button>
<span id="ping-result" class="result"></span></p>
<p$hidden><button id="call-me">ask the server to call this page</button>
<span id="call-me-result" class="result"></span></p>
<div$hidden>Calls the server made to this page:
<ul id="calls"></ul></div></section>

<section><h2>From elsewhere</h2>
<p>The same stream in a terminal: <code id="curl">curl -N $path</code></p>
<p>A call from a terminal: <code id="post">curl -H 'content-type:
application/json' -d '{"route":"ping"}' $path</code></p></section>

<section><h2>The stream</h2><div id="log"></div></section>

<section><h2>Examples</h2>
<p>In the checkout's <code>examples/</code> (the README says more):</p>
<ul id="examples">
$examples
</ul></section>

<script type="module">
import { openSSE } from $client_js;
const path = $path_js;
const live = $live_js;
const $$ = (id) => document.getElementById(id);
const log = (line) => {
  const el = $$("log");
  el.textContent += line + "\\n"; el.scrollTop = el.scrollHeight;
};
const here = location.protocol + "//" + location.host + path;
$$("curl").textContent = "curl -N " + here;
$$("post").textContent =
  "curl -H 'content-type: application/json' -d '{\\"route\\":\\"ping\\"}' " + here;
const options = {
  url: $path_js,
  routes: {
    double(x) {
      const y = 2 * x;
      const item = document.createElement("li");
      item.textContent = "double(" + x + ") \\u2192 " + y;
      $$("calls").appendChild(item);
      return y;
    },
  },
  onopen: () => log("open"),
  onsession: (id) => log("session " + id),
  onmessage: (data, ev) => log(ev.type + ": " + JSON.stringify(data)),
  onerror: () => log("error (reconnecting)"),
};
if (live) {
  options.channels = [$channel_js];
  options.events = {
    [$channel_js]: (data) => {
      $$("counter").textContent = String(data.count);
      $$("clock").textContent = "server time " + data.time + " UTC";
    },
  };
}
const sse = openSSE(options);
window.sse = sse;
$$("ping").onclick = async () => {
  const answer = await sse.run("ping");
  $$("ping-result").textContent = JSON.stringify(answer);
  log("ping -> " + JSON.stringify(answer));
};
$$("call-me").onclick = async () => {
  const count = Number($$("counter").textContent) || 21;
  $$("call-me-result").textContent = "\\u2026";
  try {
    const got = await sse.run("call_me", [count]);
    $$("call-me-result").textContent =
      "the server ran double(" + got.asked + ") here and got " + got.answer;
  } catch (error) {
    $$("call-me-result").textContent = "failed: " + error.message;
  }
};
</script></body></html>
""")
