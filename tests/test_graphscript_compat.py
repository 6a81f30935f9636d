"""
graphscript's own browser client against a txgraphsse server.

The npm package C{graphscript} (pinned in C{tests/graphscript/package.json})
is installed with npm, and its C{SSEfrontend}, from its ES module browser
build, runs in headless Chromium on a page that the server process itself
serves (L{tests.servers.graphscript}): the page, the build and the endpoint
share one origin, and nothing leaves 127.0.0.1.

L{GraphscriptClientTests} covers what works: the client gets its session id
from C{setId}, the server's C{post} runs a route the page registered, the
server's C{run} and C{request} are answered by the client, and the client's
C{subscribe} to a server route has the server push every output to it.

L{GraphscriptClientLimitationTests} pins down the calls that cannot work
because of that client's own behaviour (the README lists them): if one of
them starts to pass differently after a graphscript upgrade, the README is
what to update.

L{TextPlainTests} covers the server side of the one change graphscript's
client needed: it POSTs its JSON as C{text/plain}, which the server accepts
from same-origin pages only.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import SynchronousTestCase

from ._browser import (
    REPO,
    ServerProcess,
    launch_chromium,
    npm_install,
    post_json,
    require_playwright,
    save_screenshot,
    start_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

GRAPHSCRIPT = REPO / "tests" / "graphscript"
SERVER = "tests.servers.graphscript"
#: Milliseconds a page-side wait may take.
WAIT_MS = 20_000


def _pending(page: Page, expression: str, ms: int = 300) -> Any:
    """
    Whether the promise C{expression} names is still unsettled after C{ms}
    milliseconds: C{"pending"}, or what it resolved with.
    """
    return page.evaluate(
        """async ([expression, ms]) => {
            const marker = {};
            const value = await Promise.race([
                eval(expression),
                new Promise((resolve) => setTimeout(() => resolve(marker), ms)),
            ]);
            return value === marker ? "pending" : value;
        }""",
        [expression, ms],
    )


class _PageTestCase(SynchronousTestCase):
    """
    A server process, Chromium, and the page with graphscript's client open
    and holding its session id.
    """

    def setUp(self) -> None:
        sync_playwright = require_playwright()
        npm_install(GRAPHSCRIPT)
        self.server: ServerProcess = start_server(SERVER, name="graphscript")
        self.addCleanup(self.server.stop)
        playwright = sync_playwright().start()
        self.addCleanup(playwright.stop)
        browser = launch_chromium(playwright)
        self.addCleanup(browser.close)
        self.page = page = browser.new_page()
        self.addCleanup(self._screenshot)
        #: Uncaught errors of the page.
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        #: The page's POSTs, as (content type, body).
        self.posts: list[tuple[str | None, str | None]] = []
        page.on("request", self._record)
        page.goto(self.server.url("/"))
        page.wait_for_function("window.gsReady && window.gs.info._id", timeout=WAIT_MS)
        self.session_id: str = page.evaluate("window.gs.info._id")

    def _record(self, request: Request) -> None:
        if request.method == "POST":
            self.posts.append((request.headers.get("content-type"), request.post_data))

    def _screenshot(self) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id().rsplit(".", 1)[-1])
        save_screenshot(self.page, f"graphscript-{name}")

    def call(self, route: str, *args: Any) -> tuple[int, Any]:
        """
        Run server route C{route} with C{args} as a plain JSON client.
        """
        return post_json(self.server.url("/sse"), {"route": route, "args": list(args)})

    def wait_for(self, expression: str) -> Any:
        """
        Wait until the page expression C{expression} is truthy; its value.
        """
        self.page.wait_for_function(expression, timeout=WAIT_MS)
        return self.page.evaluate(expression)


class GraphscriptClientTests(_PageTestCase):
    """
    graphscript's C{SSEfrontend} talks with a txgraphsse server.
    """

    def test_receives_set_id(self) -> None:
        """
        The client takes its session id from the C{setId} message, the first
        on its stream; it is the id of the one session the server holds.
        """
        status, body = self.call("test_sessions")
        self.assertEqual((status, body), (200, {"args": [self.session_id]}))
        first = json.loads(self.page.evaluate("window.messages[0]"))
        self.assertEqual(first, {"route": "setId", "args": self.session_id})
        self.assertEqual(self.errors, [])

    def test_server_post_runs_client_route(self) -> None:
        """
        C{endpoint.post(route, args)} runs the route the page loaded into its
        client graph, with an array spread into arguments and any other value
        as one argument; strings with quotes and backslashes arrive intact.
        """
        text = 'say "hi" \\ bye'
        self.assertEqual(
            self.call("test_post", self.session_id, "note", [1, text, {"x": 3}]),
            (200, {"args": True}),
        )
        self.assertEqual(
            self.call("test_post", self.session_id, "note", "solo"),
            (200, {"args": True}),
        )
        calls = self.wait_for("window.calls.length >= 2 && window.calls")
        self.assertEqual(
            calls,
            [
                {"route": "note", "args": [1, text, {"x": 3}]},
                {"route": "note", "args": ["solo"]},
            ],
        )
        # Fire and forget: the client sends nothing back.
        self.assertEqual(self.posts, [])
        self.assertEqual(self.errors, [])

    def test_server_run_and_request_answered(self) -> None:
        """
        C{endpoint.run} and C{endpoint.request} get the client's answer, from
        a plain route and from one that answers with a promise; the client
        POSTs each answer as C{text/plain} (see L{TextPlainTests}).
        """
        sid = self.session_id
        self.assertEqual(self.call("test_run", sid, "sum", [2, 3]), (200, {"args": 5}))
        self.assertEqual(
            self.call("test_run", sid, "later", "x"), (200, {"args": {"later": "x"}})
        )
        self.assertEqual(
            self.call("test_request", sid, {"route": "sum", "args": [4, 5]}),
            (200, {"args": 9}),
        )
        self.assertEqual(
            self.page.evaluate("window.calls"),
            [
                {"route": "sum", "args": [2, 3]},
                {"route": "later", "args": ["x"]},
                {"route": "sum", "args": [4, 5]},
            ],
        )
        self.assertEqual(
            [
                (kind, json.loads(body or "null").get("args"))
                for kind, body in self.posts
            ],
            [("text/plain;charset=UTF-8", answer) for answer in (5, {"later": "x"}, 9)],
        )
        for _, body in self.posts:
            self.assertEqual(json.loads(body or "null")["sessionId"], sid)
        self.assertEqual(self.errors, [])

    def test_subscribe_delivers_updates(self) -> None:
        """
        The client's C{subscribe} to a server route makes the server push
        every output of that route to it, as C{{"args":..,"callbackId":route}},
        and the client puts each in its graph's state.
        """
        with self.page.expect_response(
            lambda r: (
                r.request.method == "POST"
                and "subscribeSSE" in (r.request.post_data or "")
            )
        ) as answer:
            self.page.evaluate("window.subscribeTo('counter')")
        self.assertEqual(answer.value.status, 200)
        self.assertIsInstance(answer.value.json()["args"], int)
        self.assertEqual(
            json.loads(self.posts[0][1] or "null"),
            {
                "route": "subscribeSSE",
                "args": ["counter", "/sse", None, None, None, self.session_id],
            },
        )
        self.assertEqual(self.call("counter", 7), (200, {"args": 7}))
        self.assertEqual(self.call("counter", {"n": 8}), (200, {"args": {"n": 8}}))
        delivered = self.wait_for("window.delivered.length >= 2 && window.delivered")
        self.assertEqual(delivered, [7, {"n": 8}])
        self.assertIn(
            '{"args":7,"callbackId":"counter"}', self.page.evaluate("window.messages")
        )


class GraphscriptClientLimitationTests(_PageTestCase):
    """
    Calls of graphscript 0.3.12's C{SSEfrontend} that cannot work, because
    of that client itself; the README says why.
    """

    def test_subscribe_callback_and_promise(self) -> None:
        """
        The client's C{subscribe} callback is never called, and its promise
        never settles: the updates arrive, but the listener C{subscribe}
        adds runs C{JSON.parse} on the state value, which the client has
        already parsed into an object, and throws; the promise waits for a
        C{callbackId} the client never sent.
        """
        with self.page.expect_response(
            lambda r: "subscribeSSE" in (r.request.post_data or "")
        ) as answer:
            self.page.evaluate("window.subscribeTo('counter')")
        self.assertEqual(answer.value.status, 200)
        self.call("counter", 1)
        self.assertEqual(
            self.wait_for("window.delivered.length && window.delivered"), [1]
        )
        self.assertEqual(self.page.evaluate("window.updates"), [])
        self.assertEqual(_pending(self.page, "window.subscription"), "pending")
        self.assertIn('"[object Object]" is not valid JSON', "\n".join(self.errors))

    def test_client_run_and_request_never_settle(self) -> None:
        """
        The client's own C{run} and C{request} send the bare message, not the
        C{runRequest} envelope with their C{callbackId}, then wait for that
        id on the stream: the server runs the route and answers in the POST
        response, which they ignore.  C{post} resolves with that response.
        """
        with self.page.expect_response(
            lambda r: (
                r.request.method == "POST" and '"ran"' in (r.request.post_data or "")
            )
        ) as answer:
            self.page.evaluate("window.ran = window.gs.info.run('echo', ['ran']); null")
        self.assertEqual(answer.value.json(), {"args": "ran"})
        self.assertEqual(self.posts[0][1], '{"route":"echo","args":["ran"]}')
        self.assertEqual(_pending(self.page, "window.ran"), "pending")
        self.assertEqual(
            _pending(self.page, "window.gs.info.post('echo', ['posted'])", WAIT_MS),
            {"args": "posted"},
        )

    def test_client_unsubscribe_names_no_session(self) -> None:
        """
        The client's C{unsubscribe} POSTs C{{"route":"unsubscribe",...}}
        without its session id, so the server cannot tell whose
        subscription it is and refuses it; updates go on until the stream
        closes.
        """
        with self.page.expect_response(
            lambda r: "subscribeSSE" in (r.request.post_data or "")
        ) as answer:
            self.page.evaluate("window.subscribeTo('counter')")
        sub = answer.value.json()["args"]
        with self.page.expect_response(
            lambda r: '"unsubscribe"' in (r.request.post_data or "")
        ) as refused:
            self.page.evaluate(f"window.gs.info.unsubscribe('counter', {sub}); null")
        self.assertEqual(refused.value.status, 400)
        self.assertEqual(
            json.loads(self.posts[-1][1] or "null"),
            {"route": "unsubscribe", "args": ["counter", sub]},
        )
        self.call("counter", 2)
        self.assertEqual(
            self.wait_for("window.delivered.length && window.delivered"), [2]
        )

    def test_server_subscribe_to_client_route(self) -> None:
        """
        The server's C{subscribe} to a client route gets the client's
        subscription number, but no update: the client POSTs each output
        bare, without C{callbackId} or session id, and the server refuses
        such a body.
        """
        status, body = self.call("test_watch", self.session_id, "tick")
        self.assertEqual(status, 200)
        self.assertIsInstance(body["args"], int)
        with self.page.expect_response(
            lambda r: r.request.post_data == "42"
        ) as refused:
            self.page.evaluate("window.gs.sse.run('tick', 42); null")
        self.assertEqual(refused.value.status, 400)
        self.assertEqual(
            self.call("test_updates", self.session_id), (200, {"args": []})
        )


class TextPlainTests(SynchronousTestCase):
    """
    The server accepts a JSON body sent as C{text/plain} (as graphscript's
    client sends every POST) only when the browser says the page is of the
    server's own origin; other types stay C{415}.
    """

    def test_text_plain_same_origin_only(self) -> None:
        """
        C{text/plain} passes with C{Sec-Fetch-Site: same-origin}, or, without
        that header, with an C{Origin} of the request's own host; it is
        C{415} when cross-site, from another origin, or from nowhere said.
        C{application/x-www-form-urlencoded} is C{415} even same-origin.
        """
        server = start_server(SERVER, name="graphscript-text-plain")
        self.addCleanup(server.stop)
        own = server.base_url
        body = json.dumps({"route": "ping"}).encode()
        cases: list[tuple[str, dict[str, str], int]] = [
            ("text/plain;charset=UTF-8", {"Sec-Fetch-Site": "same-origin"}, 200),
            ("text/plain", {"Sec-Fetch-Site": "same-origin", "Origin": own}, 200),
            ("text/plain", {"Origin": own}, 200),
            ("text/plain", {}, 415),
            ("text/plain", {"Sec-Fetch-Site": "cross-site", "Origin": own}, 415),
            ("text/plain", {"Sec-Fetch-Site": "same-site"}, 415),
            ("text/plain", {"Sec-Fetch-Site": "none"}, 415),
            ("text/plain", {"Origin": "http://evil.example"}, 415),
            ("text/plain", {"Origin": "null"}, 415),
            (
                "application/x-www-form-urlencoded",
                {"Sec-Fetch-Site": "same-origin", "Origin": own},
                415,
            ),
            ("application/json", {"Sec-Fetch-Site": "cross-site"}, 200),
        ]
        seen = []
        for content_type, headers, _ in cases:
            request = urllib.request.Request(
                server.url("/sse"),
                data=body,
                headers={"Content-Type": content_type, **headers},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    seen.append(response.status)
            except urllib.error.HTTPError as error:
                seen.append(error.code)
        self.assertEqual(
            list(zip(cases, seen, strict=True)),
            [(case, case[2]) for case in cases],
        )
