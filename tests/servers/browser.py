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
    C{Retry-After} of 1 s), whose state C{test_full} reports;
  - C{/jwt}: an endpoint that takes JWTs (C{JWTAuthorizer(SECRET)}), with
    channels C{news} and C{alerts} (50 events of history each), for
    C{tests/test_browser_tokens.py}; C{/token} issues its tokens
    (L{TokenIssuer}), C{/tokens} (L{TOKENS_PAGE}) and C{/tokens-classic}
    (L{TOKENS_CLASSIC_PAGE}) are its pages, and the routes C{test_jwt_*}
    publish on it, close its streams and say how many it opened;
  - C{/api}: the server API of C{/sse} (L{ServerAPIResource}, key
    L{API_KEY}), for C{tests/test_browser_api.py};
  - C{/shared}: an endpoint for C{tests/test_browser_shared.py}, with
    channels C{news} and C{alerts} (history of 500 each), its streams
    counted (L{CountStreams}); C{/shared-tabs} (L{SHARED_PAGE}) is a page
    whose query says its name, its channels and whether it shares its
    stream (C{shared=0}: not), C{/shared-classic} (L{SHARED_CLASSIC_PAGE})
    the same on the classic build, C{/shared-api} its server API, and the
    routes C{test_shared_*} publish on it, post to a session and say how
    many streams it holds; C{/shared-tokens} (L{SHARED_TOKENS_PAGE}) shares a stream of
    C{/jwt}.

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
import time
import uuid
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import Data

from txgraphsse import JWTAuthorizer, Limits, SSEBackend, SSEEndpoint
from txgraphsse.api import ServerAPIResource

from . import HoldNext, serve

__all__ = [
    "API_KEY",
    "PAGE",
    "RETRY",
    "SECRET",
    "SHARED_CLASSIC_PAGE",
    "SHARED_PAGE",
    "SHARED_TOKENS_PAGE",
    "TOKENS_CLASSIC_PAGE",
    "TOKENS_PAGE",
    "CountStreams",
    "TokenIssuer",
    "add_shared_endpoint",
    "add_token_endpoint",
    "announce_routes",
    "make_site",
]

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


#: The HS256 secret of C{/jwt}'s tokens.
SECRET = "browser-test-secret-0123456789-abcdef"

#: The page of C{/jwt}: nothing opens until the test calls
#: C{start(queryOf)}, where C{queryOf(n)} is the query of C{/token} that the
#: client's C{n}th C{getToken} fetches (or C{[query, ms]}: answer C{ms}
#: later).  It records, in C{window.seen}, each token it got, each C{POST}
#: the client made (its body, C{Authorization} and status, through the
#: client's C{fetch} option), each stream's URL and when it opened, when
#: each C{expired} came, and every event and callback.
TOKENS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graphsse tokens</title>
<link rel="icon" href="data:,"></head>
<body><p>session <code id="sid">-</code></p>
<script type="module">
import { openSSE } from "/jwt/client.js";
const seen = (window.seen = {
  news: [], alerts: [], sessions: [], tokens: [], posts: [], urls: [],
  errors: [], left: [], expired: [], openedAt: [], closed: null,
});
window.start = (queryOf) => {
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    const plan = queryOf(calls);
    const [query, delay] = Array.isArray(plan) ? plan : [plan, 0];
    if (delay) await new Promise((resolve) => setTimeout(resolve, delay));
    const response = await fetch("/token?" + query, { cache: "no-store" });
    if (!response.ok) throw new Error("/token answered " + response.status);
    const token = await response.text();
    seen.tokens.push(token);
    return token;
  };
  const recording = async (url, init) => {
    const response = await fetch(url, init);
    if (init && init.method === "POST") {
      const headers = init.headers || {};
      seen.posts.push({
        body: init.body, auth: headers.Authorization || null, status: response.status,
      });
    }
    return response;
  };
  window.sse = openSSE({
    url: "/jwt",
    channels: ["news", "alerts"],
    retryDelay: 300,
    getToken,
    fetch: recording,
    events: {
      news: (data, event) => seen.news.push({ text: data.text, id: event.lastEventId }),
      alerts: (data) => seen.alerts.push(data.text),
    },
    onopen() {
      seen.urls.push(window.sse.source.url);
      seen.openedAt.push(Date.now());
    },
    onsession(id) {
      seen.sessions.push(id);
      document.getElementById("sid").textContent = id;
    },
    onleft: (channel) => seen.left.push(channel),
    onexpired: () => seen.expired.push(Date.now()),
    onerror: (error) => seen.errors.push(String(error && (error.code || error.type))),
    onclose: (reason) => { seen.closed = String(reason && reason.code); },
  });
};
</script></body></html>
"""

#: The classic build on C{/jwt}, with a C{getToken}.
TOKENS_CLASSIC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>classic tokens</title>
<link rel="icon" href="data:,"></head>
<body><p id="sid">-</p>
<script src="/jwt/client.classic.js"></script>
<script>
window.left = [];
window.sse = GraphSSE.openSSE({
  url: "/jwt",
  channels: ["news", "alerts"],
  getToken: () => fetch("/token?channels=news,alerts", { cache: "no-store" })
    .then((response) => response.text()),
  onleft: (channel) => window.left.push(channel),
  onsession: (id) => { document.getElementById("sid").textContent = id; },
});
</script></body></html>
"""


#: The key of the server APIs (C{/api}, C{/shared-api}).
API_KEY = "test-key"

#: The page of C{/shared-tabs}: a client of C{/shared} whose query says the
#: tab's C{name}, its C{channels} (C{news} unless said) and whether it
#: shares its stream (C{shared=0}: a stream of its own).  Its routes:
#: C{whoami} (its name), C{double}, C{fail} (throws).  It records in
#: C{window.seen} each channel event (text and id), session, opening, reset,
#: error and call of its routes.
SHARED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graphsse shared</title>
<link rel="icon" href="data:,"></head>
<body><p><span id="name">-</span>: session <code id="sid">-</code>,
<span id="role">-</span></p>
<script type="module">
import { openSSE } from "/shared/client.js";
const query = new URLSearchParams(location.search);
const name = query.get("name") || "tab";
const seen = (window.seen = {
  name, news: [], alerts: [], sessions: [], opens: 0, resets: [], errors: [],
  messages: [], calls: [], closed: null,
});
document.getElementById("name").textContent = name;
const record = (channel) => (data, event) => {
  seen[channel].push({ text: data.text, id: event.lastEventId });
};
window.sse = openSSE({
  url: "/shared",
  shared: query.get("shared") !== "0",
  channels: (query.get("channels") || "news").split(",").filter(Boolean),
  retryDelay: 300,
  routes: {
    whoami() {
      seen.calls.push("whoami");
      return name;
    },
    double: (n) => n * 2,
    fail() {
      throw new Error("boom in " + name);
    },
  },
  events: { news: record("news"), alerts: record("alerts") },
  onmessage: (data) => seen.messages.push(data),
  onopen: () => { seen.opens += 1; },
  onsession(id) {
    seen.sessions.push(id);
    document.getElementById("sid").textContent = id;
    const role = window.sse.leader ? "leader" : "follower";
    document.getElementById("role").textContent = role;
  },
  onreset: (info) => seen.resets.push(info),
  onerror: (error) => seen.errors.push(String(error && (error.code || error.type))),
  onclose: (reason) => { seen.closed = String(reason && reason.code); },
});
</script></body></html>
"""

#: C{/shared-classic}: the classic build's C{GraphSSE} sharing a stream of
#: C{/shared} on C{news}.
SHARED_CLASSIC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>classic shared</title>
<link rel="icon" href="data:,"></head>
<body><p id="sid">-</p>
<script src="/shared/client.classic.js"></script>
<script>
window.seen = { news: [] };
window.sse = GraphSSE.openSSE({
  url: "/shared",
  shared: true,
  channels: ["news"],
  routes: { double: (n) => n * 2 },
  events: {
    news: (data, event) => {
      window.seen.news.push({ text: data.text, id: event.lastEventId });
    },
  },
  onsession: (id) => { document.getElementById("sid").textContent = id; },
});
</script></body></html>
"""

#: C{/shared-tokens}: tabs sharing a stream of C{/jwt} (C{news}), whose
#: C{getToken} fetches tokens that live two to three seconds.  It records in
#: C{window.seen} how many tokens this tab fetched, each C{POST} it made
#: (body, C{Authorization}, status), each channel event and session.
SHARED_TOKENS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shared tokens</title>
<link rel="icon" href="data:,"></head>
<body><p>session <code id="sid">-</code></p>
<script type="module">
import { openSSE } from "/jwt/client.js";
const seen = (window.seen = {
  tokens: [], posts: [], news: [], sessions: [], errors: [], closed: null,
});
window.sse = openSSE({
  url: "/jwt",
  shared: true,
  channels: ["news"],
  retryDelay: 300,
  async getToken() {
    const response = await fetch("/token?channels=news&ttl=3", { cache: "no-store" });
    const token = await response.text();
    seen.tokens.push(token);
    return token;
  },
  async fetch(url, init) {
    const response = await fetch(url, init);
    if (init && init.method === "POST") {
      const headers = init.headers || {};
      seen.posts.push({
        body: init.body, auth: headers.Authorization || null, status: response.status,
      });
    }
    return response;
  },
  events: {
    news: (data, event) => seen.news.push({ text: data.text, id: event.lastEventId }),
  },
  onsession(id) {
    seen.sessions.push(id);
    document.getElementById("sid").textContent = id;
  },
  onerror: (error) => seen.errors.push(String(error && (error.code || error.type))),
  onclose: (reason) => { seen.closed = String(reason && reason.code); },
});
</script></body></html>
"""


class TokenIssuer(Resource):
    """
    C{GET /token?sub=alice&channels=news,alerts&ttl=3}: a JWT of C{/jwt}
    (as text) for subject C{sub}, that may join C{channels} and expires
    C{ttl} seconds from now (its C{exp} is whole seconds, so it lives
    between C{ttl - 1} and C{ttl}); each has a C{jti} of its own, so no two
    are the same.

    @ivar issued: how many it has issued.
    """

    isLeaf = True

    def __init__(self, secret: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.secret = secret
        self.issued = 0

    def render_GET(self, request: Request) -> bytes:
        import jwt

        args = request.args or {}

        def arg(name: str, default: str) -> str:
            values = args.get(name.encode("ascii"))
            return values[0].decode("utf-8") if values else default

        claims = {
            "sub": arg("sub", "alice"),
            "subscribe": [c for c in arg("channels", "news,alerts").split(",") if c],
            "exp": int(time.time()) + int(arg("ttl", "3")),
            "jti": uuid.uuid4().hex,
        }
        self.issued += 1
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return jwt.encode(claims, self.secret, algorithm="HS256").encode("ascii")


class CountStreams(Resource):
    """
    An endpoint's resource, counting the requests for its stream (C{GET}
    and C{HEAD} of the path itself) and those refused (any status but 200).

    @ivar gets: C{GET}s of the stream.
    @ivar heads: C{HEAD}s of it (the client's probes after a refusal).
    @ivar refused: C{GET}s and C{HEAD}s answered with another status.
    """

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.gets = 0
        self.heads = 0
        self.refused = 0

    def render(self, request: Request) -> Any:
        stream = not any(request.postpath or ())
        result = self.inner.render(request)
        if stream and request.method in (b"GET", b"HEAD"):
            if request.method == b"GET":
                self.gets += 1
            else:
                self.heads += 1
            if request.code != 200:
                self.refused += 1
        return result


def add_token_endpoint(backend: SSEBackend, root: Resource) -> SSEEndpoint:
    """
    Mount C{/jwt}, C{/token}, C{/tokens} and C{/tokens-classic} on C{root},
    and add the routes C{test_jwt_*} that drive C{/jwt} to C{backend}.
    """
    endpoint = backend.setup_sse(
        "/jwt",
        channels=["news", "alerts"],
        history=50,
        retry=RETRY,
        keepalive=5.0,
        authorizer=JWTAuthorizer(SECRET),
    )
    issuer = TokenIssuer(SECRET)
    html = "text/html; charset=utf-8"
    counted = CountStreams(endpoint.resource)
    root.putChild(b"jwt", counted)
    root.putChild(b"token", issuer)
    root.putChild(b"tokens", Data(TOKENS_PAGE.encode("utf-8"), html))
    root.putChild(b"tokens-classic", Data(TOKENS_CLASSIC_PAGE.encode("utf-8"), html))

    @backend.route("test_jwt_publish")
    def publish(channel: str, text: str) -> int:
        """
        Publish C{{"text": text}} on C{/jwt}'s C{channel}.
        """
        return endpoint.channels[channel].broadcast({"text": text})

    @backend.route("test_jwt_state")
    def state() -> dict[str, int]:
        """
        How many streams C{/jwt} has opened and holds, the requests for
        them (L{CountStreams}), and how many tokens C{/token} has issued.
        """
        return {
            "opened": endpoint.counters.sessions_opened,
            "sessions": len(endpoint.sessions),
            "gets": counted.gets,
            "heads": counted.heads,
            "refused": counted.refused,
            "issued": issuer.issued,
        }

    @backend.route("test_jwt_kick")
    def kick() -> int:
        """
        Close every stream of C{/jwt} (not for their tokens).
        """
        open_ = list(endpoint.sessions.values())
        for session in open_:
            session.close()
        return len(open_)

    return endpoint


def add_shared_endpoint(backend: SSEBackend, root: Resource) -> SSEEndpoint:
    """
    Mount C{/shared} (its streams counted), C{/shared-api}, C{/shared-tabs},
    C{/shared-classic} and C{/shared-tokens} on C{root}, and add the routes
    C{test_shared_*} that drive C{/shared} to C{backend}.
    """
    endpoint = backend.setup_sse(
        "/shared",
        channels=["news", "alerts"],
        history=500,
        retry=RETRY,
        keepalive=5.0,
        request_timeout=10.0,
    )
    counted = CountStreams(endpoint.resource)
    html = "text/html; charset=utf-8"
    root.putChild(b"shared", counted)
    root.putChild(
        b"shared-api", ServerAPIResource(endpoint, keys=[API_KEY], path="/shared-api")
    )
    root.putChild(b"shared-tabs", Data(SHARED_PAGE.encode("utf-8"), html))
    root.putChild(b"shared-classic", Data(SHARED_CLASSIC_PAGE.encode("utf-8"), html))
    root.putChild(b"shared-tokens", Data(SHARED_TOKENS_PAGE.encode("utf-8"), html))

    @backend.route("test_shared_publish")
    def publish(channel: str, text: str) -> int:
        """
        Publish C{{"text": text}} on C{/shared}'s C{channel}.
        """
        return endpoint.channels[channel].broadcast({"text": text})

    @backend.route("test_shared_post")
    def post(session_id: str, route: str, args: Any = None) -> bool:
        """
        C{endpoint.post(route, args)} on C{/shared}'s session C{session_id}.
        """
        endpoint.post(route, args, session_id=session_id)
        return True

    @backend.route("test_shared_state")
    def state() -> dict[str, Any]:
        """
        The streams C{/shared} holds (their session ids), how many it has
        opened, and the requests for them (L{CountStreams}).
        """
        return {
            "sessions": sorted(endpoint.sessions),
            "opened": endpoint.counters.sessions_opened,
            "gets": counted.gets,
            "refused": counted.refused,
        }

    return endpoint


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
    root.putChild(b"api", ServerAPIResource(endpoint, keys=[API_KEY]))
    add_token_endpoint(backend, root)
    add_shared_endpoint(backend, root)
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
