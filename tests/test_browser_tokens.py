"""
The browser client's tokens (C{getToken}) in a real browser: Debian's
Chromium, headless, driven by Playwright's sync API, against the C{/jwt}
endpoint of C{tests/servers/browser.py} (a C{JWTAuthorizer}, tokens that
live two to three seconds, from the server's C{/token}).

What is checked: a page whose tokens expire every few seconds keeps one
stream by refreshing it (C{refreshToken}) and receives every channel event;
when its refreshes are refused, the stream ends at each token's expiry and
the client opens the next one itself with a fresh token and its last event
id, so that it receives every event exactly once, the ones published while
it was away included, and no stream of it is refused; a refreshed token
that no longer allows a channel takes the stream out of it (C{onleft}) and
later streams do not ask for it; and the classic build has C{getToken} too.

Nothing here skips: without Chromium or Playwright every test fails, naming
what to install.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import jwt

from ._browser import ServerProcess, await_js
from .test_browser import BrowserTestCase

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Seconds the tests publish for: two token lifetimes and more.
PUBLISH_FOR = 6.5

#: Seconds between two events published.
PUBLISH_EVERY = 0.2


def claims_of(url: str) -> dict[str, Any]:
    """
    The claims of the token in the query of stream URL C{url}, unverified.
    """
    (token,) = parse_qs(urlsplit(url).query)["token"]
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def bearer(token: str) -> str:
    return f"Bearer {token}"


class TokenTests(BrowserTestCase):
    """
    Pages on C{/jwt} whose C{getToken} fetches short-lived tokens.
    """

    def start_page(self, server: ServerProcess, query_of: str) -> Page:
        """
        Open C{/tokens}, start its client with the JavaScript function
        C{query_of} (the n-th token's query) and wait for its session.
        """
        page = self.new_page(server.url("/tokens"))
        page.wait_for_function("window.start !== undefined")
        page.evaluate(f"() => start({query_of})")
        page.wait_for_function("window.sse !== undefined")
        self.assertIsInstance(await_js(page, "sse.ready"), str)
        return page

    def publish(self, server: ServerProcess) -> list[tuple[str, float]]:
        """
        Publish on C{/jwt}'s C{news} every L{PUBLISH_EVERY} seconds for
        L{PUBLISH_FOR} seconds: each text, and when it was published (POSIX
        seconds).
        """
        published = []
        end = time.monotonic() + PUBLISH_FOR
        n = 0
        while time.monotonic() < end:
            text = f"n{n}"
            self.call(server, "test_jwt_publish", "news", text)
            published.append((text, time.time()))
            n += 1
            time.sleep(PUBLISH_EVERY)
        return published

    def news_of(self, page: Page, count: int) -> list[str]:
        """
        Wait until the page has C{count} C{news} events: their texts.
        """
        self.wait(page, f"seen.news.length >= {count}", f"{count} news events")
        time.sleep(0.3)  # a duplicate, had there been one, would be in by now
        return [item["text"] for item in page.evaluate("seen.news")]

    def posts_of(self, page: Page, route: str) -> list[dict[str, Any]]:
        """
        The page's C{POST}s whose body is a message with route C{route}.
        """
        posts: list[dict[str, Any]] = page.evaluate("seen.posts")
        chosen = []
        for post in posts:
            body = json.loads(post["body"])
            if isinstance(body, dict) and body.get("route") == route:
                chosen.append(post)
        return chosen

    def test_refresh_keeps_one_stream(self) -> None:
        """
        With tokens that live two to three seconds, the page refreshes its
        session shortly before each expiry (a C{refreshToken} C{POST} with
        the new token, answered 200) and keeps its one stream for over six
        seconds, receiving every event published meanwhile, once and in
        order; its calls carry a token that is still good.
        """
        server = self.start(name="browser-tokens-refresh")
        page = self.start_page(server, "() => 'sub=alice&ttl=3'")
        published = [text for text, _ in self.publish(server)]
        self.assertEqual(self.news_of(page, len(published)), published)
        state = self.call(server, "test_jwt_state")
        self.assertEqual((state["opened"], state["gets"], state["sessions"]), (1, 1, 1))
        self.assertEqual(state["refused"], 0)
        self.assertEqual(page.evaluate("seen.sessions.length"), 1)
        self.assertEqual(page.evaluate("seen.expired"), [])
        tokens = page.evaluate("seen.tokens")
        (url,) = page.evaluate("seen.urls")
        self.assertEqual(parse_qs(urlsplit(url).query)["token"], [tokens[0]])
        self.assertEqual(parse_qs(urlsplit(url).query)["channels"], ["news,alerts"])
        refreshes = self.posts_of(page, "refreshToken")
        self.assertGreaterEqual(len(refreshes), 2, refreshes)
        self.assertEqual([post["status"] for post in refreshes], [200] * len(refreshes))
        self.assertEqual(
            [post["auth"] for post in refreshes],
            [bearer(token) for token in tokens[1 : len(refreshes) + 1]],
        )
        # The first token expired seconds ago: a call carries a later one.
        self.assertEqual(await_js(page, "sse.run('add', [1, 2])"), 3)
        (call,) = self.posts_of(page, "add")
        self.assertIn(call["auth"], [bearer(token) for token in tokens[1:]])
        self.assertEqual(page.evaluate("seen.closed"), None)

    def test_refused_refresh_reconnects_with_fresh_token(self) -> None:
        """
        Each refresh brings a token of another subject, which the server
        refuses (403): the stream ends at each token's expiry with an
        C{expired} event, and the client opens the next one at once itself,
        with a fresh token of its own subject (taking 600 ms to come) and
        its last event id.  No stream is refused, and the page receives
        every event exactly once, including those published while it had no
        stream, which came from history.
        """
        server = self.start(name="browser-tokens-expiry")
        page = self.start_page(
            server,
            "(n) => n % 2 ? ['sub=alice&ttl=3', n > 1 ? 600 : 0] : 'sub=mallory'",
        )
        published = self.publish(server)
        texts = [text for text, _ in published]
        self.assertEqual(self.news_of(page, len(texts)), texts)
        ids = [item["id"] for item in page.evaluate("seen.news")]
        self.assertEqual(len(set(ids)), len(ids), ids)
        state = self.call(server, "test_jwt_state")
        self.assertGreaterEqual(state["opened"], 2, state)
        # Each stream was opened with a good token: none refused, no probes.
        self.assertEqual(
            (state["gets"], state["refused"], state["heads"]), (state["opened"], 0, 0)
        )
        urls = page.evaluate("seen.urls")
        self.assertEqual(len(urls), state["opened"])
        self.assertEqual([claims_of(url)["sub"] for url in urls], ["alice"] * len(urls))
        self.assertEqual(len(set(urls)), len(urls))
        for url in urls[1:]:
            self.assertIn("lastEventId", parse_qs(urlsplit(url).query))
        refreshes = self.posts_of(page, "refreshToken")
        self.assertGreaterEqual(len(refreshes), 1)
        self.assertEqual({post["status"] for post in refreshes}, {403})
        self.assertIn("forbidden", page.evaluate("seen.errors"))
        expired = page.evaluate("seen.expired")
        self.assertGreaterEqual(len(expired), 1)
        # Events published between an expiry and the next stream's opening
        # reached the page from history.
        opened = page.evaluate("seen.openedAt")
        away = []
        for ended in expired:
            back = min((t for t in opened if t > ended), default=None)
            self.assertIsNotNone(back, (expired, opened))
            assert back is not None
            away += [t for t, when in published if ended / 1000 < when < back / 1000]
        self.assertGreaterEqual(len(away), 1, (published, expired, opened))
        self.assertEqual(page.evaluate("seen.closed"), None)

    def test_left_channel(self) -> None:
        """
        The first token allows C{news} and C{alerts}, the refreshed ones
        only C{news}: the server takes the stream out of C{alerts} with a
        C{left} event (C{onleft}), no later alert reaches the page, and the
        stream the client opens after the server closed it asks for C{news}
        alone (asking for C{alerts} too would be refused).
        """
        server = self.start(name="browser-tokens-left")
        page = self.start_page(
            server,
            "(n) => n === 1 ? 'channels=news,alerts&ttl=3' : 'channels=news&ttl=3'",
        )
        self.call(server, "test_jwt_publish", "alerts", "a1")
        self.wait(page, "seen.alerts.length === 1", "the first alert")
        self.wait(page, "seen.left.length === 1", "the left event")
        self.assertEqual(page.evaluate("seen.left"), ["alerts"])
        self.call(server, "test_jwt_publish", "alerts", "a2")
        self.call(server, "test_jwt_publish", "news", "after left")
        self.wait(page, "seen.news.length === 1", "news after the left event")
        self.assertEqual(self.call(server, "test_jwt_kick"), 1)
        self.call(server, "test_jwt_publish", "news", "while away")
        self.wait(page, "seen.sessions.length === 2", "a second session")
        self.wait(page, "seen.news.length === 2", "the news published while away")
        self.assertEqual(
            [item["text"] for item in page.evaluate("seen.news")],
            ["after left", "while away"],
        )
        self.assertEqual(page.evaluate("seen.alerts"), ["a1"])
        urls = page.evaluate("seen.urls")
        self.assertEqual(len(urls), 2)
        self.assertEqual(parse_qs(urlsplit(urls[0]).query)["channels"], ["news,alerts"])
        self.assertEqual(parse_qs(urlsplit(urls[1]).query)["channels"], ["news"])
        self.assertEqual(claims_of(urls[1])["subscribe"], ["news"])
        self.assertEqual(self.call(server, "test_jwt_state")["refused"], 0)
        self.assertEqual(page.evaluate("seen.closed"), None)

    def test_classic_build(self) -> None:
        """
        The classic build's C{GraphSSE} takes C{getToken} too: the stream
        opens with the token (C{/jwt} refuses streams without one) and a
        call carries it.
        """
        server = self.start(name="browser-tokens-classic")
        page = self.open_page(server, "/tokens-classic")
        self.assertEqual(page.evaluate("typeof GraphSSE"), "function")
        token = page.evaluate("sse.token")
        self.assertIsInstance(token, str)
        self.assertEqual(
            parse_qs(urlsplit(page.evaluate("sse.source.url")).query)["token"], [token]
        )
        self.assertEqual(await_js(page, "sse.run('add', [2, 2])"), 4)
        self.assertEqual(self.call(server, "test_jwt_state")["sessions"], 1)
