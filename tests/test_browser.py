"""
The browser client (C{<path>/client.js}) in a real browser: Debian's
Chromium, headless, driven by Playwright's sync API.

The server is C{tests/servers/browser.py}, run as a subprocess on a free
port of 127.0.0.1 (Playwright's sync API blocks this thread, so no reactor
can run here).  The test drives the server side over plain HTTP through the
server's C{test_*} routes, and reads what the page saw from C{window.seen}.

What is checked: the page opens a stream; a server C{post} runs a browser
route; a server C{request} and C{run} resolve with the browser's answers
(and a failing browser route fails the server's call); a browser C{run}
resolves with a server route's result; subscriptions in both directions
deliver updates and stop after unsubscribing; a client whose stream closes
gets exactly the channel events it missed, replayed from history; and after
the server process restarts on the same port the page reconnects by itself,
is told (C{reset}) that the old history is gone, and receives the channel
events the new process published before the page got back, its subscription
restored and a call made while it was away answered.

Nothing here skips: without Chromium or Playwright every test fails, naming
what to install.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import SynchronousTestCase

from ._browser import (
    ServerProcess,
    await_js,
    launch_chromium,
    post_json,
    require_playwright,
    save_screenshot,
    start_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

#: The server module the page talks to.
SERVER = "tests.servers.browser"

#: Milliseconds any one wait of the page may take.
TIMEOUT_MS = 10_000


class BrowserTestCase(SynchronousTestCase):
    """
    A Chromium of its own for each test, and helpers to open pages, start
    servers and call their routes.  Everything started is stopped in
    cleanup: the browser, Playwright's driver, and servers by their PID.
    """

    def setUp(self) -> None:
        sync_playwright = require_playwright()
        self.playwright: Playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser: Browser = launch_chromium(self.playwright)
        self.addCleanup(self.browser.close)
        #: Errors the pages threw (not console messages of failed loads).
        self.page_errors: list[str] = []

    def start(self, *args: str, port: int = 0, name: str = "browser") -> ServerProcess:
        """
        Start the test server; it is stopped in cleanup.
        """
        server = start_server(SERVER, *args, port=port, name=name)
        self.addCleanup(server.stop)
        return server

    def new_page(self, url: str, width: int = 900, height: int = 640) -> Page:
        """
        Open C{url} in a new browser context (cookies and connections of
        its own); errors the page throws fail the test.
        """
        context = self.browser.new_context(viewport={"width": width, "height": height})
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.goto(url)
        return page

    def open_page(self, server: ServerProcess, path: str = "/") -> Page:
        """
        Open C{path} of C{server} and wait until its client (C{window.sse})
        has a session.
        """
        page = self.new_page(server.url(path))
        page.wait_for_function("window.sse !== undefined")
        sid = await_js(page, "sse.ready")
        self.assertIsInstance(sid, str)
        return page

    def call(self, server: ServerProcess, route: str, *args: Any) -> Any:
        """
        Run server route C{route} over HTTP (as a client without a session):
        its result.
        """
        status, body = post_json(
            server.url("/sse"), {"route": route, "args": list(args)}, timeout=15.0
        )
        self.assertEqual(status, 200, f"{route}{args!r}: {body!r}")
        return body["args"]

    def wait(self, page: Page, expression: str, what: str) -> Any:
        """
        Wait until C{expression} is true in C{page}; fail naming C{what},
        with what the page saw, after L{TIMEOUT_MS}.
        """
        try:
            page.wait_for_function(expression, timeout=TIMEOUT_MS)
        except Exception as error:
            seen = page.evaluate("JSON.stringify(window.seen)")
            text = page.evaluate("document.body.innerText")
            self.fail(
                f"timed out waiting for {what} ({error}); the page saw {seen}"
                f" and shows:\n{text}"
            )
        return page.evaluate(expression)

    def session_of(self, page: Page) -> str:
        sid = page.evaluate("sse.sessionId")
        assert isinstance(sid, str)
        return sid

    def tearDown(self) -> None:
        self.assertEqual(self.page_errors, [], "the page threw")


class CallsTests(BrowserTestCase):
    """
    Calls in both directions between the page and the server.
    """

    def test_stream_opens_and_server_post_runs_browser_route(self) -> None:
        """
        The page opens a stream and gets a session id that the server holds;
        C{endpoint.post("show", ...)} runs the page's C{show} route.
        """
        server = self.start()
        page = self.open_page(server)
        sid = self.session_of(page)
        self.assertGreaterEqual(len(sid), 22)
        self.assertEqual(self.call(server, "test_sessions"), [sid])
        self.assertEqual(page.text_content("#state"), "open")
        self.assertTrue(self.call(server, "test_post", sid, "show", ["hello page"]))
        self.wait(page, "seen.shown.includes('hello page')", "the posted route")
        self.assertEqual(page.text_content("#shown"), "hello page")
        save_screenshot(page, "browser-stream")

    def test_server_request_and_run_resolve_with_browser_answers(self) -> None:
        """
        C{endpoint.request} and C{endpoint.run} fire with what the page's
        routes return, a Promise's value included; a route the page lacks
        fails the server's call with the page's error.
        """
        server = self.start()
        page = self.open_page(server)
        sid = self.session_of(page)
        answer = self.call(
            server, "test_request", sid, {"route": "double", "args": [21]}
        )
        self.assertEqual(answer, 42)
        self.assertEqual(self.call(server, "test_run", sid, "shout", ["hi"]), "HI!")
        error = self.call(server, "test_run_error", sid, "missing")
        self.assertIn("missing", error)
        self.assertNotIn("no error", error)

    def test_browser_run_resolves_with_server_result(self) -> None:
        """
        C{sse.run} and C{sse.request} in the page resolve with the server
        route's result; an unknown route rejects with the server's
        C{no_route} and status 404.
        """
        server = self.start()
        page = self.open_page(server)
        self.assertEqual(await_js(page, "sse.run('add', [2, 3])"), 5)
        self.assertEqual(await_js(page, "sse.request({route: 'add', args: [4, 5]})"), 9)
        self.assertEqual(
            await_js(page, "sse.run('nope').catch((e) => [e.status, e.code])"),
            [404, "no_route"],
        )

    def test_subscriptions_both_ways(self) -> None:
        """
        The page subscribes to server route C{tick} and gets each output of
        it; the server subscribes to browser route C{sensor} and gets each
        output of it.  After unsubscribing, neither gets more.
        """
        server = self.start()
        page = self.open_page(server)
        sid = self.session_of(page)
        # The page to the server's route.
        sub = await_js(page, "sse.subscribe('tick', (v) => seen.ticks.push(v))")
        self.assertIsInstance(sub, int)
        self.call(server, "bump", 1)
        self.call(server, "bump", 2)
        self.wait(page, "seen.ticks.length >= 2", "two ticks")
        self.assertEqual(page.evaluate("seen.ticks"), [10, 20])
        self.assertTrue(await_js(page, f"sse.unsubscribe('tick', {sub})"))
        self.call(server, "bump", 3)
        # The server to the page's route.
        server_sub = self.call(server, "test_watch", sid, "sensor")
        self.assertIsInstance(server_sub, int)
        self.assertEqual(await_js(page, "sse.call('sensor', [5])"), 6)
        self.assertEqual(await_js(page, "sse.call('sensor', [8])"), 9)
        updates = self._updates(server, sid, 2)
        self.assertEqual(updates, [6, 9])
        self.assertTrue(self.call(server, "test_unwatch", sid, "sensor", server_sub))
        await_js(page, "sse.call('sensor', [100])")
        # A call after the unsubscription, answered: its update, had it been
        # sent, would have been settled before this answer.
        self.assertEqual(self.call(server, "test_run", sid, "double", [1]), 2)
        self.assertEqual(self.call(server, "test_updates", sid), [6, 9])
        # bump(3) came after the page's unsubscription: still two ticks.
        self.assertEqual(page.evaluate("seen.ticks"), [10, 20])

    def test_updates_in_order(self) -> None:
        """
        The server's subscriber gets a browser route's outputs in the order
        the route made them, even when the server is slow to take the
        first: the page sends the next only once the one before is answered.
        """
        server = self.start()
        page = self.open_page(server)
        sid = self.session_of(page)
        self.call(server, "test_watch", sid, "sensor")
        self.assertTrue(self.call(server, "test_hold", '"callbackId":"sensor"', 0.3))
        outputs = await_js(
            page, "Promise.all([1, 2, 3, 4].map((n) => sse.call('sensor', [n])))"
        )
        self.assertEqual(outputs, [2, 3, 4, 5])
        self.assertEqual(self._updates(server, sid, 4), [2, 3, 4, 5])

    def test_calls_of_one_turn_share_a_post(self) -> None:
        """
        Ten calls the page makes in one turn go to the server in one
        batched C{POST}, each resolving with its own answer; the page's
        replies to ten calls the server makes at once go in far fewer
        C{POST}s than ten; a refusal inside a batch rejects only its call,
        with its code and status.
        """
        server = self.start()
        page = self.open_page(server)
        sid = self.session_of(page)
        before = self.call(server, "test_posts")
        sums = await_js(
            page,
            "Promise.all([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map("
            "(n) => sse.run('add', [n, n])))",
        )
        self.assertEqual(sums, [2 * n for n in range(1, 11)])
        # The test_posts call itself is one POST more.
        self.assertEqual(self.call(server, "test_posts") - before, 2)
        before = self.call(server, "test_posts")
        doubled = self.call(server, "test_run_many", sid, "double", 10)
        self.assertEqual(doubled, [2 * n for n in range(10)])
        replies = self.call(server, "test_posts") - before - 2
        self.assertLessEqual(replies, 3)
        mixed = await_js(
            page,
            "Promise.all([sse.run('add', [1, 1]),"
            " sse.run('nope').catch((e) => [e.status, e.code])])",
        )
        self.assertEqual(mixed, [2, [404, "no_route"]])

    def _updates(self, server: ServerProcess, sid: str, count: int) -> list[Any]:
        for _ in range(100):
            updates = self.call(server, "test_updates", sid)
            if len(updates) >= count:
                return list(updates)
            time.sleep(0.05)
        self.fail(f"the server got {updates!r}, not {count} updates")

    def test_classic_build(self) -> None:
        """
        C{client.classic.js} defines the C{GraphSSE} global: the same client
        without modules.
        """
        server = self.start()
        page = self.open_page(server, "/classic")
        self.assertEqual(page.evaluate("typeof GraphSSE"), "function")
        self.assertEqual(await_js(page, "sse.run('add', [1, 1])"), 2)
        sid = self.session_of(page)
        self.assertEqual(self.call(server, "test_run", sid, "double", [4]), 8)


class RefusalTests(BrowserTestCase):
    """
    A stream refused for want of room, met by a plain C{EventSource}.
    """

    def test_refused_event_source_comes_back(self) -> None:
        """
        With C{/full}'s one stream taken, a plain C{EventSource} is refused
        with an C{unavailable} event and stays C{CONNECTING} (a non-200
        would have closed it for good); once the stream is let go, it
        reconnects by itself and the server counts its session.
        """
        server = self.start()
        page = self.new_page(server.url("/"))
        page.evaluate(
            """() => {
              const full = (window.full = { holder: 0, unavailable: [], opened: 0 });
              window.holder = new EventSource("/full");
              window.holder.onmessage = () => { full.holder += 1; };
            }"""
        )
        self.wait(page, "window.full.holder > 0", "the first stream's setId")
        page.evaluate(
            """() => {
              const full = window.full;
              const source = (window.refused = new EventSource("/full"));
              source.addEventListener("unavailable", (event) => {
                full.unavailable.push(JSON.parse(event.data).error.code);
              });
              source.onmessage = (event) => {
                if (JSON.parse(event.data).route === "setId") full.opened += 1;
              };
            }"""
        )
        self.wait(page, "window.full.unavailable.length > 0", "an unavailable event")
        self.assertEqual(page.evaluate("window.full.unavailable[0]"), "unavailable")
        self.assertNotEqual(page.evaluate("window.refused.readyState"), 2)
        refused = self.call(server, "test_full")
        self.assertEqual(refused["sessions"], 1)
        self.assertGreaterEqual(refused["refusals"], 1)
        page.evaluate("window.holder.close()")
        self.wait(page, "window.full.opened > 0", "the refused stream's setId")
        self.assertEqual(page.evaluate("window.refused.readyState"), 1)
        self.assertEqual(self.call(server, "test_full")["sessions"], 1)


class ReplayTests(BrowserTestCase):
    """
    Channel events a page misses while its stream is down reach it when it
    reconnects.
    """

    def test_reconnect_replays_missed_events(self) -> None:
        """
        The server closes the page's stream and publishes two events on
        C{news} before the page can reconnect (it waits C{retry} ms): the
        page reconnects by itself with C{Last-Event-ID}, gets a new session
        and exactly the two events, from history, with no C{reset}.
        """
        server = self.start()
        page = self.open_page(server)
        first = self.session_of(page)
        self.call(server, "test_publish", "seen live")
        self.wait(page, "seen.news.length === 1", "the live event")
        kicked = self.call(server, "test_kick", ["missed 1", "missed 2"])
        self.assertEqual(kicked, 1)
        self.wait(page, "seen.sessions.length === 2", "the new session")
        self.wait(page, "seen.news.length >= 3", "the missed events")
        news = page.evaluate("seen.news")
        self.assertEqual(
            [item["data"]["text"] for item in news],
            ["seen live", "missed 1", "missed 2"],
        )
        self.assertEqual(page.evaluate("seen.resets"), [])
        self.assertNotEqual(self.session_of(page), first)
        ids = [item["id"] for item in news]
        self.assertEqual(len(set(ids)), 3, ids)
        self.assertEqual(page.evaluate("sse.lastEventId"), ids[-1])

    def test_server_restart(self) -> None:
        """
        The server process stops (SIGTERM: the page gets a C{shutdown}
        event) and a new one starts on the same port.  The history is in
        memory, so the old process's events are gone; the new process
        publishes two events before it listens, standing for what was said
        while the page was away.  The page reconnects by itself, gets a
        C{reset} (its last id is of the old process), then those two events;
        its subscription to C{tick} is made again on the new server, and a
        C{run} the page made while the server was down is answered.
        """
        server = self.start(name="browser-restart-1")
        port = server.port
        page = self.open_page(server)
        first = self.session_of(page)
        await_js(page, "sse.subscribe('tick', (v) => seen.ticks.push(v))")
        self.call(server, "test_publish", "before the restart")
        self.wait(page, "seen.news.length === 1", "the first event")
        server.stop()
        self.wait(page, "seen.shutdowns.length === 1", "the shutdown event")
        self.wait(page, "seen.errors.length >= 1", "the stream's end")
        # A call made while no server listens waits for the next session.
        page.evaluate("() => { window.pending = sse.run('add', [20, 22]); }")
        restarted = self.start(
            "--publish",
            "while away 1",
            "--publish",
            "while away 2",
            port=port,
            name="browser-restart-2",
        )
        self.wait(page, "seen.sessions.length === 2", "a session on the new server")
        self.wait(page, "seen.news.length >= 3", "the events of the new server")
        news = page.evaluate("seen.news")
        self.assertEqual(
            [(item["data"]["text"], item["afterReset"]) for item in news],
            [("before the restart", 0), ("while away 1", 1), ("while away 2", 1)],
        )
        resets = page.evaluate("seen.resets")
        self.assertEqual(resets, [{"lastEventId": news[0]["id"]}])
        self.assertNotEqual(self.session_of(page), first)
        self.assertEqual(await_js(page, "window.pending"), 42)
        # The client subscribed again on the new server.
        self.wait_for_subscription(restarted, page)
        self.wait(
            page, "document.getElementById('state').textContent === 'open'", "open"
        )
        save_screenshot(page, "browser-restart")

    def wait_for_subscription(self, server: ServerProcess, page: Page) -> None:
        """
        Run C{bump} on C{server} until the page's C{tick} subscription,
        which the client makes again after reconnecting, delivers.
        """
        for n in range(1, 50):
            self.call(server, "bump", n)
            try:
                page.wait_for_function(f"seen.ticks.includes({n * 10})", timeout=200)
            except Exception:
                continue
            return
        self.fail(f"no tick after the restart: {json.dumps(page.evaluate('seen'))}")
