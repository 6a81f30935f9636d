"""
The browser client's shared stream (C{openSSE({shared: true})}) in a real
browser: Debian's Chromium, headless, driven by Playwright's sync API,
against the C{/shared} endpoint of C{tests/servers/browser.py}.  The tabs
are pages of one browser context: one origin, one socket pool, and the Web
Locks and BroadcastChannels they share.

What is checked: eight tabs hold one stream on the server (its own count of
sessions and of stream requests) and each receives every event published
while they are open, once and in order; the stream carries the union of the
tabs' channels and each tab gets only its own; closing the leader tab, or
freezing it, hands the stream to another tab, after which every tab left
has every event exactly once and the server again holds one stream (a tab
back from a freeze gets what it missed; a tab that hangs through a hand-off
makes the new leader resume from its older id, and the others drop by id
what the server sends again); server calls on the shared session
are answered by the tab that registered the route first; tokens are
refreshed by the leader alone; the classic build shares too; and over
HTTP/1.1 twenty shared tabs all load and receive events, where without
C{shared} the seventh tab stalls until another tab lets its connection go.

Nothing here skips: without Chromium or Playwright every test fails, naming
what to install.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._browser import ServerProcess, await_js, post_json, save_screenshot, wait_until
from .servers.browser import API_KEY
from .test_browser import TIMEOUT_MS, BrowserTestCase

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

#: Seconds any one wait for the server may take.
WAIT = 10.0


def api_call(server: ServerProcess, body: dict[str, Any]) -> tuple[int, Any]:
    """
    C{POST /shared-api/call} with C{body} and the API key: the status and
    the JSON answer.
    """
    request = urllib.request.Request(
        server.url("/shared-api/call"),
        data=json.dumps(body).encode("utf-8"),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"apikey {API_KEY}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Publisher:
    """
    Publish C{news} on C{/shared} every C{every} seconds from a thread of
    its own (Playwright's sync API holds the test's), until L{stop}.

    @ivar published: the texts published so far, in order.
    """

    def __init__(self, server: ServerProcess, every: float = 0.05) -> None:
        self.server = server
        self.every = every
        self.published: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            text = f"live {n}"
            status, body = post_json(
                self.server.url("/sse"),
                {"route": "test_shared_publish", "args": ["news", text]},
                timeout=WAIT,
            )
            if status == 200:
                self.published.append(text)
            else:
                self.failures.append(f"{status}: {body!r}")
            n += 1
            self._stop.wait(self.every)

    def stop(self) -> list[str]:
        """
        Stop publishing: what was published.
        """
        self._stop.set()
        self._thread.join(WAIT)
        return list(self.published)


class SharedTestCase(BrowserTestCase):
    """
    Tabs of one browser context on C{/shared-tabs}.
    """

    def context(self) -> BrowserContext:
        """
        A browser context of its own (closed in cleanup).
        """
        context = self.browser.new_context(viewport={"width": 640, "height": 320})
        self.addCleanup(context.close)
        return context

    def tab(self, context: BrowserContext, server: ServerProcess, query: str) -> Page:
        """
        Open C{/shared-tabs?<query>} in a new page of C{context}; errors it
        throws fail the test.
        """
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.goto(server.url(f"/shared-tabs?{query}"))
        return page

    def tabs(
        self,
        context: BrowserContext,
        server: ServerProcess,
        count: int,
        channels: list[str] | None = None,
    ) -> list[Page]:
        """
        Open C{count} tabs C{t0}, C{t1}, ... (channels C{channels[i]}, or
        C{news}) and wait until each has a session.
        """
        pages = []
        for n in range(count):
            names = channels[n] if channels else "news"
            pages.append(self.tab(context, server, f"name=t{n}&channels={names}"))
        for page in pages:
            self.wait(page, "window.sse && sse.sessionId !== null", "a session")
        return pages

    def state(self, server: ServerProcess) -> dict[str, Any]:
        """
        C{/shared}'s streams: C{sessions} (ids), C{opened}, C{gets}.
        """
        state: dict[str, Any] = self.call(server, "test_shared_state")
        return state

    def one_stream(
        self, server: ServerProcess, pages: list[Page], after: str | None = None
    ) -> str:
        """
        Wait until C{/shared} holds one stream, and every tab of C{pages}
        is on its session: its id.

        @param after: a session that ended (a hand-off): wait for another.
        """

        def settled() -> str | None:
            sessions = self.state(server)["sessions"]
            if len(sessions) != 1 or sessions[0] == after:
                return None
            ids = {page.evaluate("sse.sessionId") for page in pages}
            return sessions[0] if ids == set(sessions) else None

        return wait_until(settled, WAIT, "one stream that every tab is on")

    def leaders(self, pages: list[Page]) -> list[Page]:
        """
        The tabs of C{pages} that hold the stream.
        """
        return [page for page in pages if page.evaluate("sse.leader")]

    def received(self, page: Page, channel: str, count: int) -> list[str]:
        """
        Wait until C{page} has C{count} events of C{channel}: their texts,
        after a moment in which a duplicate would have come.
        """
        self.wait(
            page, f"seen.{channel}.length >= {count}", f"{count} {channel} events"
        )
        time.sleep(0.2)
        items = page.evaluate(f"seen.{channel}")
        ids = [item["id"] for item in items]
        self.assertEqual(len(set(ids)), len(ids), f"an id seen twice: {ids}")
        return [item["text"] for item in items]

    def publish(self, server: ServerProcess, channel: str, texts: list[str]) -> None:
        for text in texts:
            self.call(server, "test_shared_publish", channel, text)


class SharedStreamTests(SharedTestCase):
    """
    Tabs that share one stream, and what happens when its leader goes.
    """

    def test_eight_tabs_one_stream(self) -> None:
        """
        Eight tabs with C{shared: true} elect one leader and hold one stream:
        the server has opened one and holds one, and every tab is on its
        session (each told by its own C{onsession} and C{onopen}).  Every
        tab receives each of the 20 events published then, once, in order.
        """
        server = self.start(name="browser-shared-eight")
        pages = self.tabs(self.context(), server, 8)
        sid = self.one_stream(server, pages)
        state = self.state(server)
        self.assertEqual((state["opened"], state["gets"]), (1, 1), state)
        self.assertEqual(len(self.leaders(pages)), 1)
        for page in pages:
            self.assertEqual(page.evaluate("seen.sessions"), [sid])
            self.assertEqual(page.evaluate("seen.opens"), 1)
        texts = [f"n{n}" for n in range(20)]
        self.publish(server, "news", texts)
        for page in pages:
            self.assertEqual(self.received(page, "news", 20), texts)
        self.assertEqual(self.state(server)["sessions"], [sid])
        save_screenshot(pages[-1], "browser-shared-eight")

    def test_union_of_channels(self) -> None:
        """
        A tab that asks for C{alerts} joins a stream that carries only
        C{news}: the leader opens it again on both, resuming from its last
        event id, so the events published meanwhile (as it joins, before
        the new stream is open) reach every tab.  Each tab gets the events
        of its own channels only, once; the server holds one stream again.
        """
        server = self.start(name="browser-shared-union")
        context = self.context()
        pages = self.tabs(context, server, 2)
        first = self.one_stream(server, pages)
        self.publish(server, "news", ["before"])
        for page in pages:
            self.received(page, "news", 1)
        third = self.tab(context, server, "name=t2&channels=news,alerts")
        pages.append(third)
        self.wait(third, "window.sse && sse.sessionId !== null", "a session")
        self.publish(server, "news", ["after"])
        self.publish(server, "alerts", ["a1", "a2"])
        self.one_stream(server, pages, after=first)
        (leader,) = self.leaders(pages)
        url = leader.evaluate("sse.source.url")
        self.assertIn("channels=news,alerts", url)
        self.assertEqual(self.received(pages[0], "news", 2), ["before", "after"])
        self.assertEqual(self.received(pages[1], "news", 2), ["before", "after"])
        self.assertEqual(self.received(third, "alerts", 2), ["a1", "a2"])
        self.assertEqual(self.received(third, "news", 1), ["after"])
        for page in pages[:2]:
            self.assertEqual(page.evaluate("seen.alerts"), [])
        self.assertEqual(self.state(server)["opened"], 2)

    def test_leader_closes(self) -> None:
        """
        With events published every 50 ms, the leader tab of eight is
        closed.  Another tab takes over and opens the stream again from the
        last event id the tabs have seen: each of the seven left has every
        event published, before, during and after the hand-off, exactly
        once and in order, and the server again holds one stream, on which
        every tab is.
        """
        server = self.start(name="browser-shared-close")
        pages = self.tabs(self.context(), server, 8)
        first = self.one_stream(server, pages)
        (leader,) = self.leaders(pages)
        publisher = Publisher(server)
        self.addCleanup(publisher.stop)
        wait_until(lambda: len(publisher.published) >= 10, WAIT, "ten events")
        leader.close()
        left = [page for page in pages if page is not leader]
        wait_until(lambda: len(self.leaders(left)) == 1, WAIT, "a new leader")
        second = self.one_stream(server, left, after=first)
        time.sleep(0.5)
        published = publisher.stop()
        self.assertEqual(publisher.failures, [])
        self.assertGreaterEqual(len(published), 15)
        for page in left:
            self.assertEqual(self.received(page, "news", len(published)), published)
            self.assertEqual(page.evaluate("seen.sessions"), [first, second])
            self.assertEqual(page.evaluate("seen.resets"), [])
        self.assertEqual(self.state(server)["sessions"], [second])

    def test_frozen_leader(self) -> None:
        """
        The leader tab is frozen: it gets the C{freeze} event a browser
        fires before it freezes a tab (fired by the test: headless Chromium
        does not freeze a visible page, even when the DevTools protocol
        asks), lets the stream and the lock go, and hears nothing more;
        another tab takes over and the tabs left receive what is published.
        Once the frozen tab is back (C{resume}) it rejoins as a follower and
        has every event, the ones published while it was away included
        (from what the leader keeps), exactly once.
        """
        server = self.start(name="browser-shared-freeze")
        context = self.context()
        pages = self.tabs(context, server, 3)
        first = self.one_stream(server, pages)
        self.publish(server, "news", ["n0", "n1"])
        for page in pages:
            self.received(page, "news", 2)
        (leader,) = self.leaders(pages)
        leader.evaluate("document.dispatchEvent(new Event('freeze'))")
        left = [page for page in pages if page is not leader]
        wait_until(lambda: len(self.leaders(left)) == 1, WAIT, "a new leader")
        second = self.one_stream(server, left, after=first)
        texts = ["n0", "n1", "n2", "n3", "n4"]
        self.publish(server, "news", texts[2:])
        for page in left:
            self.assertEqual(self.received(page, "news", 5), texts)
        self.assertEqual(self.received(leader, "news", 2), ["n0", "n1"])
        leader.evaluate("document.dispatchEvent(new Event('resume'))")
        self.assertEqual(self.received(leader, "news", 5), texts)
        self.wait(leader, f"sse.sessionId === {json.dumps(second)}", "the new session")
        self.assertFalse(leader.evaluate("sse.leader"))
        self.publish(server, "news", ["n5"])
        for page in pages:
            self.assertEqual(self.received(page, "news", 6), [*texts, "n5"])
        self.assertEqual(self.state(server)["sessions"], [second])

    def test_hand_off_resumes_from_the_tab_furthest_behind(self) -> None:
        """
        A follower hangs (its main thread busy for four seconds, so it
        answers nothing) after it last told the others how far it had seen
        (C{n1}); two more events reach the other tabs.  The leader closes:
        the new one cannot hear from the hung tab, so it resumes from that
        tab's last event id, and the server sends again events the other
        tabs have: each drops them by their id, and has every event exactly
        once.  Once it is free again, the hung tab works through what came
        meanwhile and has every event exactly once too.
        """
        server = self.start(name="browser-shared-behind")
        context = self.context()
        pages = self.tabs(context, server, 4)
        first = self.one_stream(server, pages)
        self.publish(server, "news", ["n0", "n1"])
        for page in pages:
            self.received(page, "news", 2)
        behind = pages[3]
        n1 = behind.evaluate("seen.news[1].id")
        # Any change of its routes makes a tab tell the others its state.
        behind.evaluate("sse.addRoute('late', () => 'late')")
        time.sleep(0.2)
        behind.evaluate(
            "() => { setTimeout(() => { const end = Date.now() + 4000;"
            " while (Date.now() < end); }, 0); }"
        )
        self.publish(server, "news", ["n2", "n3"])
        live = pages[1:3]
        for page in live:
            self.received(page, "news", 4)
        pages[0].close()
        wait_until(lambda: len(self.leaders(live)) == 1, WAIT, "a new leader")
        (leader,) = self.leaders(live)
        self.one_stream(server, live, after=first)
        self.assertIn(f"lastEventId={quote(n1)}", leader.evaluate("sse.source.url"))
        self.publish(server, "news", ["n4"])
        texts = ["n0", "n1", "n2", "n3", "n4"]
        for page in live:
            self.assertEqual(self.received(page, "news", 5), texts)
        self.assertEqual(self.received(behind, "news", 5), texts)
        self.assertEqual(self.state(server)["opened"], 2)


class SharedCallsTests(SharedTestCase):
    """
    Calls both ways on a shared session.
    """

    def test_server_calls_go_to_the_first_tab_with_the_route(self) -> None:
        """
        C{POST /shared-api/call} on the shared session runs the route in the
        tab that registered it first (C{t0}), its error included (502), and
        so does a server C{post}; a route that only a later tab has runs
        there.  That first tab still answers once another leads; when it
        closes, the next in line answers, on the same session.
        """
        server = self.start(name="browser-shared-calls")
        context = self.context()
        pages = self.tabs(context, server, 3)
        sid = self.one_stream(server, pages)
        self.assertEqual(
            api_call(server, {"session": sid, "route": "whoami"}),
            (200, {"result": "t0"}),
        )
        self.assertEqual(
            api_call(server, {"session": sid, "route": "double", "args": [21]}),
            (200, {"result": 42}),
        )
        status, body = api_call(server, {"session": sid, "route": "fail"})
        self.assertEqual((status, body["error"]["code"]), (502, "route_failed"))
        self.assertIn("boom in t0", body["error"]["message"])
        await_js(pages[2], "sse.addRoute('third', () => 'from ' + seen.name)")

        def third() -> Any:
            status, body = api_call(server, {"session": sid, "route": "third"})
            return body if status == 200 else None

        # The other tabs hear of the new route a moment later.
        self.assertEqual(
            wait_until(third, WAIT, "the third tab's route"), {"result": "from t2"}
        )
        self.assertEqual(
            [page.evaluate("seen.calls") for page in pages], [["whoami"], [], []]
        )
        # A post (fire and forget) runs in that tab too, and only there.
        self.assertTrue(self.call(server, "test_shared_post", sid, "whoami"))
        self.wait(pages[0], "seen.calls.length === 2", "the posted call")
        time.sleep(0.2)
        self.assertEqual(
            [page.evaluate("seen.calls.length") for page in pages], [2, 0, 0]
        )
        # t0 hands the stream on (a freeze and back) and follows: it
        # registered whoami first, so it still answers.
        pages[0].evaluate("document.dispatchEvent(new Event('freeze'))")
        pages[0].evaluate("document.dispatchEvent(new Event('resume'))")
        second = self.one_stream(server, pages, after=sid)
        self.assertFalse(pages[0].evaluate("sse.leader"))
        self.assertEqual(
            api_call(server, {"session": second, "route": "whoami"}),
            (200, {"result": "t0"}),
        )
        # Closed, t0 leaves the group (its goodbye, or its lock gone): the
        # session stays, and the next in line answers.
        pages[0].close()

        def whoami() -> Any:
            status, body = api_call(server, {"session": second, "route": "whoami"})
            return body if status == 200 and body != {"result": "t0"} else None

        self.assertEqual(wait_until(whoami, WAIT, "another tab"), {"result": "t1"})
        self.assertEqual(
            api_call(server, {"session": second, "route": "third"}),
            (200, {"result": "from t2"}),
        )
        self.assertEqual(self.state(server)["sessions"], [second])

    def test_tabs_call_the_server(self) -> None:
        """
        Every tab runs server routes and requests through its own POSTs on
        the shared session; two tabs subscribe to server route C{tick} and
        both get its outputs; when one unsubscribes, the other still does.
        """
        server = self.start(name="browser-shared-run")
        pages = self.tabs(self.context(), server, 3)
        sid = self.one_stream(server, pages)
        for n, page in enumerate(pages):
            self.assertEqual(await_js(page, f"sse.run('add', [{n}, 1])"), n + 1)
            self.assertEqual(
                await_js(page, f"sse.request({{route: 'add', args: [{n}, 2]}})"), n + 2
            )
        for page in pages[:2]:
            page.evaluate("() => { window.ticks = []; }")
            sub = await_js(page, "sse.subscribe('tick', (v) => ticks.push(v))")
            self.assertIsInstance(sub, int)
        self.call(server, "bump", 1)
        for page in pages[:2]:
            self.wait(page, "ticks.length === 1", "a tick")
        self.assertTrue(await_js(pages[0], "sse.unsubscribe('tick')"))
        self.call(server, "bump", 2)
        self.wait(pages[1], "ticks.length === 2", "the second tick")
        self.assertEqual(pages[1].evaluate("ticks"), [10, 20])
        self.assertEqual(pages[0].evaluate("ticks"), [10])
        self.assertEqual(self.state(server)["sessions"], [sid])


class SharedTokenTests(SharedTestCase):
    """
    Tokens (C{getToken}) on a shared stream of C{/jwt}.
    """

    def test_leader_refreshes(self) -> None:
        """
        Three tabs share a stream of C{/jwt} under tokens that live two to
        three seconds.  The leader alone fetches tokens and refreshes the
        session (C{refreshToken}, answered 200); the others' POSTs carry
        its current token.  For over six seconds the server holds the one
        stream it opened, and every tab receives every event once.
        """
        server = self.start(name="browser-shared-tokens")
        context = self.context()
        pages = []
        for _ in range(3):
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: self.page_errors.append(str(error)))
            page.goto(server.url("/shared-tokens"))
            pages.append(page)
        for page in pages:
            self.wait(page, "window.sse && sse.sessionId !== null", "a session")
        published = []
        end = time.monotonic() + 6.5
        n = 0
        while time.monotonic() < end:
            published.append(f"n{n}")
            self.call(server, "test_jwt_publish", "news", f"n{n}")
            n += 1
            time.sleep(0.2)
        for page in pages:
            self.assertEqual(self.received(page, "news", len(published)), published)
        state = self.call(server, "test_jwt_state")
        self.assertEqual(
            (state["opened"], state["sessions"], state["refused"]), (1, 1, 0)
        )
        (leader,) = self.leaders(pages)
        followers = [page for page in pages if page is not leader]
        tokens = leader.evaluate("seen.tokens")
        self.assertGreaterEqual(len(tokens), 3)
        self.assertEqual(state["issued"], len(tokens))
        refreshes = [
            post
            for post in leader.evaluate("seen.posts")
            if json.loads(post["body"]).get("route") == "refreshToken"
        ]
        self.assertGreaterEqual(len(refreshes), 2)
        self.assertEqual({post["status"] for post in refreshes}, {200})
        for page in followers:
            self.assertEqual(page.evaluate("seen.tokens"), [])
            self.assertEqual(await_js(page, "sse.run('add', [1, 2])"), 3)
            (post,) = page.evaluate("seen.posts")
            self.assertEqual(post["status"], 200)
            self.assertIn(post["auth"], [f"Bearer {token}" for token in tokens[1:]])
            self.assertEqual(page.evaluate("seen.errors"), [])


class SharedClassicTests(SharedTestCase):
    """
    The classic build's C{GraphSSE} global.
    """

    def test_classic_build_shares(self) -> None:
        """
        Two tabs of the classic build with C{shared: true} hold one stream
        and both receive its events.
        """
        server = self.start(name="browser-shared-classic")
        context = self.context()
        pages = []
        for _ in range(2):
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: self.page_errors.append(str(error)))
            page.goto(server.url("/shared-classic"))
            pages.append(page)
        for page in pages:
            self.wait(page, "window.sse && sse.sessionId !== null", "a session")
        self.one_stream(server, pages)
        self.assertEqual(len(self.leaders(pages)), 1)
        self.publish(server, "news", ["classic"])
        for page in pages:
            self.assertEqual(self.received(page, "news", 1), ["classic"])


class ConnectionLimitTests(SharedTestCase):
    """
    Chromium's six HTTP/1.1 connections per host, with and without C{shared}.
    """

    def test_twenty_shared_tabs(self) -> None:
        """
        Twenty tabs over HTTP/1.1 with C{shared: true} all load, hold one
        stream between them, and each receives the events published.
        """
        server = self.start(name="browser-shared-twenty")
        pages = self.tabs(self.context(), server, 20)
        protocol = pages[-1].evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        self.assertEqual(protocol, "http/1.1")
        self.one_stream(server, pages)
        self.publish(server, "news", ["to all 1", "to all 2"])
        for page in pages:
            self.assertEqual(self.received(page, "news", 2), ["to all 1", "to all 2"])
        self.assertEqual(self.state(server)["opened"], 1)

    def test_seventh_unshared_tab_stalls(self) -> None:
        """
        Without C{shared} each tab holds a stream, and so a connection, of
        its own: six tabs load, with six sessions on the server, and the
        seventh does not even load its page within three seconds.  Once one
        of the six is closed, the seventh loads and opens its stream.
        """
        server = self.start(name="browser-shared-seventh")
        context = self.context()
        pages = []
        for n in range(6):
            pages.append(self.tab(context, server, f"name=t{n}&shared=0"))
            self.wait(pages[-1], "window.sse && sse.sessionId !== null", "a session")
        self.assertTrue(all(page.evaluate("sse.leader") for page in pages))
        sessions = self.state(server)["sessions"]
        self.assertEqual(len(sessions), 6)
        self.assertEqual(
            sorted(page.evaluate("sse.sessionId") for page in pages), sessions
        )
        seventh = context.new_page()
        seventh.on("pageerror", lambda error: self.page_errors.append(str(error)))
        started = time.monotonic()
        with self.assertRaises(Exception) as stalled:
            seventh.goto(
                server.url("/shared-tabs?name=t6&shared=0"),
                wait_until="commit",
                timeout=3000,
            )
        self.assertIn("Timeout", type(stalled.exception).__name__)
        self.assertGreaterEqual(time.monotonic() - started, 2.9)
        self.assertEqual(len(self.state(server)["sessions"]), 6)
        pages[0].close()
        self.wait(
            seventh, "window.sse && sse.sessionId !== null", "the seventh tab's session"
        )
        wait_until(
            lambda: len(self.state(server)["sessions"]) == 6, WAIT, "six streams again"
        )
