"""
The server that C{tests/test_browser.py} drives the browser client
(C{/sse/client.js}) against.

It serves, on one origin:

  - C{/}: L{PAGE}, which opens the client on C{/sse}, joins the C{news}
    channel, offers the browser routes the server calls (C{show}, C{double},
    C{shout}, C{sensor}) and records everything it gets in C{window.seen};
  - C{/classic}: the same kind of page on the classic build
    (C{/sse/client.classic.js}, the C{GraphSSE} global);
  - C{/sse}: the endpoint: channel C{news} keeps 50 events of history, and
    clients are told to wait L{RETRY} ms before reconnecting;
  - C{/full}: an endpoint with room for one stream (C{max_sessions=1}, a
    C{Retry-After} of 1 s), whose state C{test_full} reports.

The routes named C{test_*} let the test (a plain HTTP client) drive the
server side towards one session: C{post}, C{request}, C{run}, C{subscribe}
and C{unsubscribe} of the endpoint, publishing on C{news}, and closing every
stream.  C{add}, C{tick} and C{bump} are what the page calls and subscribes
to.

C{--publish TEXT} (repeatable) publishes C{{"text": TEXT}} on C{news} before
the server listens: the restart test starts the server again with it, so
that these events are in the new process's history before the page can
reconnect.

Run it with C{python -m tests.servers.browser --port 0}.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from txgraphsse import Limits, SSEBackend, SSEEndpoint

from . import HoldNext, serve

__all__ = ["PAGE", "RETRY", "announce_routes", "make_site"]

#: Milliseconds clients wait before they reconnect (the C{retry:} field).
RETRY = 1000

#: The page: the ES module client, every callback recorded.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graphsse browser test</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; }
#state { font-weight: bold; }
#log { background: #111; color: #9f9; padding: .8em; font: 12px monospace;
       white-space: pre-wrap; min-height: 10em; }
</style></head>
<body>
<h1>graphsse browser test</h1>
<p>state: <span id="state">connecting</span>, session <code id="sid">-</code></p>
<p>shown by the server: <span id="shown"></span></p>
<div id="log"></div>
<script type="module">
import { openSSE } from "/sse/client.js";
const seen = (window.seen = {
  sessions: [], news: [], messages: [], resets: [], shutdowns: [],
  ticks: [], shown: [], errors: [], opens: 0,
});
const logLine = (text) => {
  document.getElementById("log").textContent += text + "\\n";
};
window.sse = openSSE({
  url: "/sse",
  channels: ["news"],
  retryDelay: 300,
  routes: {
    show(text) {
      seen.shown.push(text);
      document.getElementById("shown").textContent = seen.shown.join(", ");
      logLine("server posted show(" + JSON.stringify(text) + ")");
    },
    double: (n) => n * 2,
    async shout(text) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      return text.toUpperCase() + "!";
    },
    sensor: (value) => value + 1,
  },
  events: {
    news(data, event) {
      // afterReset: whether a `reset` came before it on this page
      seen.news.push({ data, id: event.lastEventId, afterReset: seen.resets.length });
      logLine("news " + JSON.stringify(data) + " id=" + event.lastEventId);
    },
  },
  onmessage: (data) => seen.messages.push(data),
  onopen: () => {
    seen.opens += 1;
    document.getElementById("state").textContent = "open";
  },
  onsession(id) {
    seen.sessions.push(id);
    document.getElementById("sid").textContent = id;
    logLine("session " + id);
  },
  onreset(info) {
    seen.resets.push(info);
    logLine("reset after " + JSON.stringify(info));
  },
  onshutdown(args) {
    seen.shutdowns.push(args);
    document.getElementById("state").textContent = "server shut down";
    logLine("shutdown");
  },
  onerror(error) {
    seen.errors.push(String(error && (error.code || error.type)));
    if (window.sse && window.sse.source && window.sse.source.readyState !== 1) {
      document.getElementById("state").textContent = "reconnecting";
    }
  },
});
</script></body></html>
"""

#: The same on the classic build: no module, one global.
CLASSIC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>classic</title>
<link rel="icon" href="data:,"></head>
<body><p id="sid">-</p>
<script src="/sse/client.classic.js"></script>
<script>
window.sse = new GraphSSE({
  url: "/sse",
  routes: { double: (n) => n * 2 },
  onsession: (id) => { document.getElementById("sid").textContent = id; },
});
</script></body></html>
"""


def _one(result: Deferred[Any] | dict[str, Deferred[Any]]) -> Deferred[Any]:
    assert isinstance(result, Deferred)
    return result


def add_routes(backend: SSEBackend, endpoint: SSEEndpoint) -> None:
    """
    The routes of the page and of the test.
    """
    #: Outputs of the browser route the server subscribed to, by session.
    updates: dict[str, list[Any]] = {}

    @backend.route("add")
    def add(a: float, b: float) -> float:
        """
        What the page runs.
        """
        return a + b

    @backend.route("tick")
    def tick(n: int) -> int:
        """
        The server route the page subscribes to: each run outputs C{n * 10}.
        """
        return n * 10

    @backend.route("bump")
    def bump(n: int) -> Deferred[Any]:
        """
        Run C{tick} in the server, so that its subscribers get an output.
        """
        return backend.call("tick", n)

    @backend.route("test_sessions")
    def sessions() -> list[str]:
        return sorted(endpoint.sessions)

    @backend.route("test_post")
    def post(session_id: str, route: str, args: Any = None) -> bool:
        endpoint.post(route, args, session_id=session_id)
        return True

    @backend.route("test_request")
    def request(session_id: str, message: Any) -> Deferred[Any]:
        return _one(endpoint.request(message, session_id=session_id))

    @backend.route("test_run")
    def run(session_id: str, route: str, args: Any = None) -> Deferred[Any]:
        return _one(endpoint.run(route, args, session_id=session_id))

    @backend.route("test_run_error")
    def run_error(session_id: str, route: str) -> Deferred[str]:
        """
        Run a browser route that fails: the error's type and message.
        """

        def failed(failure: Any) -> str:
            return f"{type(failure.value).__name__}: {failure.value}"

        def succeeded(result: Any) -> str:
            return f"no error: {result!r}"

        return _one(endpoint.run(route, None, session_id=session_id)).addCallbacks(
            succeeded, failed
        )

    @backend.route("test_watch")
    def watch(session_id: str, route: str) -> Deferred[int]:
        seen = updates.setdefault(session_id, [])
        result = endpoint.subscribe(route, seen.append, session_id=session_id)
        assert isinstance(result, Deferred)
        return result

    @backend.route("test_unwatch")
    def unwatch(session_id: str, route: str, sub: int) -> Deferred[bool]:
        result = endpoint.unsubscribe(route, sub, session_id=session_id)
        assert isinstance(result, Deferred)
        return result

    @backend.route("test_updates")
    def updates_of(session_id: str) -> list[Any]:
        return updates.get(session_id, [])

    @backend.route("test_publish")
    def publish(text: str) -> int:
        return endpoint.channels["news"].broadcast({"text": text})

    @backend.route("test_kick")
    def kick(publish: list[str] | None = None) -> int:
        """
        Close every stream (the clients reconnect after C{retry} ms), then
        publish each text of C{publish} on C{news}: in the same reactor
        turn, so no stream is open to receive them live.
        """
        open_ = list(endpoint.sessions.values())
        for session in open_:
            session.close()
        for text in publish or ():
            endpoint.channels["news"].broadcast({"text": text})
        return len(open_)


def announce_routes(backend: SSEBackend) -> None:
    """
    For C{twistd graphsse --app tests.servers.browser:announce_routes}: the
    route C{announce(text)} sends C{text} to every stream of every endpoint.
    """

    @backend.route("announce")
    def announce(text: str) -> int:
        return sum(
            endpoint.send({"announce": text}) for endpoint in backend.endpoints.values()
        )


def make_site(publish: list[str]) -> Site:
    """
    The pages and the endpoint on one origin; C{publish} goes out on
    C{news} at once, into its history.
    """
    from twisted.internet import reactor

    backend = SSEBackend()
    endpoint = backend.setup_sse(
        "/sse",
        channels=["news"],
        history=50,
        retry=RETRY,
        keepalive=5.0,
        request_timeout=10.0,
    )
    add_routes(backend, endpoint)
    for text in publish:
        endpoint.channels["news"].broadcast({"text": text})
    # SIGTERM: every stream gets a last `shutdown` event before the exit.
    reactor.addSystemEventTrigger("before", "shutdown", backend.shutdown)
    root = Resource()
    html = "text/html; charset=utf-8"
    root.putChild(b"", Data(PAGE.encode("utf-8"), html))
    root.putChild(b"classic", Data(CLASSIC_PAGE.encode("utf-8"), html))
    hold = HoldNext(endpoint.resource, reactor)

    @backend.route("test_hold")
    def hold_next(marker: str, seconds: float) -> bool:
        """
        Hold the next C{POST} whose body has C{marker} for C{seconds}.
        """
        hold.hold(marker.encode("utf-8"), seconds)
        return True

    @backend.route("test_posts")
    def posts() -> int:
        """
        How many C{POST}s the endpoint has had.
        """
        return hold.posts

    @backend.route("test_run_many")
    def run_many(session_id: str, route: str, count: int) -> Deferred[list[Any]]:
        """
        Run the page's C{route} C{count} times at once, with 0, 1, ...
        """
        calls = [
            _one(endpoint.run(route, [n], session_id=session_id)) for n in range(count)
        ]
        return gatherResults(calls)

    # Room for one stream: the refusal test fills it, then frees it.
    full = backend.setup_sse(
        "/full", keepalive=5.0, limits=Limits(max_sessions=1, retry_after=1)
    )

    @backend.route("test_full")
    def full_state() -> dict[str, int]:
        """
        The sessions of C{/full}, and how many streams it has refused.
        """
        return {"sessions": len(full.sessions), "refusals": full.counters.refusals}

    root.putChild(b"sse", hold)
    root.putChild(b"full", full.resource)
    return Site(root)


def main(argv: list[str]) -> None:
    """
    C{--publish TEXT}... and the options of L{serve}.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish", action="append", default=[])
    options, rest = parser.parse_known_args(argv)
    serve(lambda: make_site(options.publish), rest)


if __name__ == "__main__":
    main(sys.argv[1:])
