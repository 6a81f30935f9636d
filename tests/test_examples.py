"""
The browser examples, each started by the one command the README gives for
it (on a free port instead of 8080) and driven in headless Chromium, and the
demo page of C{twistd -n graphsse}.

  - chat: a message from page A reaches page B of the same room and not a
    page in another room; a newcomer sees the room's recent messages; each
    session signs with its own name, and a rename is that session's only.
  - dashboard: measurements arrive several times a second and the charts
    move.
  - calls: the buttons show the results of Python routes, and the server's
    stdout shows what the page's functions answered when Python ran them.

Each test saves a screenshot in C{tests/artifacts/}.  Nothing here skips:
without Chromium or Playwright every test fails, naming what to install.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import SynchronousTestCase

from ._browser import (
    REPO,
    ServerProcess,
    free_port,
    post_json,
    save_screenshot,
    start_command,
)
from .test_browser import TIMEOUT_MS, BrowserTestCase

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: The command of each example, as the README and the example's docstring
#: give it.
COMMANDS = {
    "chat": "python examples/chat/app.py --port 8080",
    "dashboard": "python examples/dashboard/app.py --port 8080",
    "calls": "python examples/calls/app.py --port 8080",
}

#: Seconds a server's output may take to show a line.
OUTPUT_WAIT = 10.0


class ExampleTestCase(BrowserTestCase):
    """
    Start an example by its README command.
    """

    def start_example(self, name: str) -> ServerProcess:
        """
        Run C{COMMANDS[name]} with a free port for 8080; stopped (SIGTERM to
        its PID) in cleanup.
        """
        port = free_port()
        argv = [
            str(port) if word == "8080" else word
            for word in shlex.split(COMMANDS[name])
        ]
        server = start_command(argv, port, name=f"example-{name}")
        self.addCleanup(server.stop)
        return server

    def wait_output(self, server: ServerProcess, text: str) -> str:
        """
        Wait until the server has printed C{text}: all it printed.
        """
        deadline = time.monotonic() + OUTPUT_WAIT
        while True:
            printed = server.stdout_text()
            if text in printed:
                return printed
            if time.monotonic() > deadline:
                self.fail(
                    f"the server did not print {text!r} within {OUTPUT_WAIT}s;"
                    f" it printed:\n{printed}\nand logged:\n{server.log_text()}"
                )
            time.sleep(0.05)


class ReadmeTests(SynchronousTestCase):
    """
    The commands the tests run are the ones the README gives.
    """

    def test_commands_in_readme_and_docstrings(self) -> None:
        """
        Each example's command is in the README, and in the docstring of
        the example's C{app.py}.
        """
        readme = (REPO / "README.md").read_text()
        for name, command in COMMANDS.items():
            self.assertIn(command, readme, name)
            app = Path(REPO, "examples", name, "app.py").read_text()
            self.assertIn(command, app, name)


class ChatTests(ExampleTestCase):
    """
    C{examples/chat}: rooms, history on join, names per session.
    """

    def chat_page(self, server: ServerProcess, room: str, name: str) -> Page:
        """
        Open the chat in C{room} as C{name}, and wait until the page has
        set its name on its session.
        """
        page = self.new_page(server.url(f"/?room={room}&name={name}"))
        self.wait(page, "document.body.dataset.ready === '1'", f"{name} in {room}")
        self.assertEqual(page.text_content("#status"), f"connected as {name}")
        return page

    def say(self, page: Page, text: str) -> None:
        page.fill("#text", text)
        page.press("#text", "Enter")

    def messages(self, page: Page) -> list[list[Any]]:
        """
        The page's messages: C{[name, text, from history]}.
        """
        result: list[list[Any]] = page.eval_on_selector_all(
            "#messages li.message",
            "items => items.map((e) => [e.dataset.name,"
            " e.querySelector('.text').textContent,"
            " e.classList.contains('history')])",
        )
        return result

    def wait_message(self, page: Page, name: str, text: str) -> None:
        try:
            page.wait_for_function(
                "([name, text]) => [...document.querySelectorAll("
                "'#messages li.message')].some((e) => e.dataset.name === name"
                " && e.querySelector('.text').textContent === text)",
                arg=[name, text],
                timeout=TIMEOUT_MS,
            )
        except Exception:
            self.fail(f"{text!r} from {name} never showed; {self.messages(page)}")

    def test_rooms_history_and_names(self) -> None:
        """
        Two pages in C{lobby} and one in C{python}: each room's messages
        reach its own pages only, signed with the sender's name.  A rename
        signs that session's later messages.  A newcomer to C{lobby} gets
        its messages as history, and on moving to C{python}, that room's.
        """
        server = self.start_example("chat")
        alice = self.chat_page(server, "lobby", "Alice")
        bob = self.chat_page(server, "lobby", "Bob")
        carol = self.chat_page(server, "python", "Carol")
        self.say(alice, "hello lobby")
        self.wait_message(bob, "Alice", "hello lobby")
        self.wait_message(alice, "Alice", "hello lobby")
        self.say(carol, "hello python")
        self.wait_message(carol, "Carol", "hello python")
        # Said after "hello python": once it is in, that one would be too.
        self.say(bob, "second")
        self.wait_message(alice, "Bob", "second")
        self.wait_message(bob, "Bob", "second")
        for page in (alice, bob):
            texts = [text for _, text, _ in self.messages(page)]
            self.assertEqual(texts, ["hello lobby", "second"])
        self.assertEqual(self.messages(carol), [["Carol", "hello python", False]])
        # Names are per session: Bob becomes Robert, Alice stays Alice.
        bob.fill("#name", "Robert")
        bob.click("#name-form button")
        self.wait(
            bob,
            "document.getElementById('status').textContent === 'connected as Robert'",
            "the rename",
        )
        self.say(bob, "renamed")
        self.wait_message(alice, "Robert", "renamed")
        self.say(alice, "still me")
        self.wait_message(bob, "Alice", "still me")
        # A newcomer gets the room's history, marked as such.
        dave = self.chat_page(server, "lobby", "Dave")
        self.wait_message(dave, "Alice", "still me")
        self.assertEqual(
            self.messages(dave),
            [
                ["Alice", "hello lobby", True],
                ["Bob", "second", True],
                ["Robert", "renamed", True],
                ["Alice", "still me", True],
            ],
        )
        self.say(dave, "hi all")
        self.wait_message(alice, "Dave", "hi all")
        self.wait_message(dave, "Dave", "hi all")
        self.assertEqual(self.messages(dave)[-1], ["Dave", "hi all", False])
        save_screenshot(bob, "example-chat-lobby")
        # Moving to another room: its own history, and nothing of the lobby.
        dave.click("#rooms button[data-room=python]")
        self.wait_message(dave, "Carol", "hello python")
        self.wait(dave, "document.body.dataset.ready === '1'", "Dave in python")
        self.assertEqual(self.messages(dave), [["Carol", "hello python", True]])
        self.assertIn("room=python", dave.url)
        # A page cannot talk in a room it has not joined.
        status, body = post_json(
            server.url("/sse"),
            {
                "route": "say",
                "args": ["lobby", "sneaky"],
                "sessionId": dave.evaluate("chat.sse.sessionId"),
            },
        )
        self.assertEqual((status, body["error"]["code"]), (403, "forbidden"))
        save_screenshot(dave, "example-chat-history")


class DashboardTests(ExampleTestCase):
    """
    C{examples/dashboard}: a moving chart of streamed measurements.
    """

    def test_chart_gets_points_and_moves(self) -> None:
        """
        The page receives measurements several times a second, and the
        charts (their time window and their pixels) move.
        """
        server = self.start_example("dashboard")
        page = self.new_page(server.url("/"), 1000, 760)
        self.wait(page, "dashboard.received >= 20", "twenty measurements")
        self.wait(
            page,
            "document.getElementById('status').textContent === 'live'",
            "the live status",
        )
        before = page.evaluate(
            "({received: dashboard.received, start: dashboard.windowStart,"
            " image: document.querySelector('canvas').toDataURL()})"
        )
        page.wait_for_timeout(1500)
        after = page.evaluate(
            "({received: dashboard.received, start: dashboard.windowStart,"
            " image: document.querySelector('canvas').toDataURL(),"
            " rate: dashboard.rate, frames: dashboard.frames,"
            " visible: dashboard.points.filter((p) => p.t >= dashboard.windowStart)"
            ".length})"
        )
        # Several a second (10 by default; a slow machine gets some slack).
        self.assertGreaterEqual(after["received"] - before["received"], 6, after)
        self.assertGreaterEqual(after["rate"], 4, after)
        self.assertGreater(after["start"] - before["start"], 1000, after)
        self.assertNotEqual(after["image"], before["image"])
        self.assertGreater(after["visible"], 20, after)
        values = page.eval_on_selector_all(
            ".panel .value", "items => items.map((e) => e.textContent)"
        )
        self.assertEqual(len(values), 3)
        for value in values:
            self.assertRegex(value, r"^-?\d+\.\d\d")
        save_screenshot(page, "example-dashboard")


class CallsExampleTests(ExampleTestCase):
    """
    C{examples/calls}: buttons call Python; Python calls the page.
    """

    def test_buttons_and_printed_answers(self) -> None:
        """
        Each button shows its Python route's result; the server prints the
        page's answers to C{describe} and C{multiply} when the page
        connects, and to C{read_note} and C{confirm} when the page asks
        Python to call it.
        """
        server = self.start_example("calls")
        page = self.new_page(server.url("/"))
        self.wait(
            page,
            "document.getElementById('status').textContent === 'connected'",
            "the connection",
        )
        page.click("#add")
        self.wait(
            page, "document.getElementById('add-result').textContent === '5'", "5"
        )
        page.click("#time")
        self.wait(
            page,
            "/^\"\\d{4}-\\d\\d-\\d\\dT/.test(document.getElementById('time-result')"
            ".textContent)",
            "the server's time",
        )
        page.fill("#word", "stressed")
        page.click("#reverse")
        self.wait(
            page,
            "document.getElementById('reverse-result').textContent === '\"desserts\"'",
            "the reversed word",
        )
        printed = self.wait_output(server, "multiply(6, 7) -> 42")
        self.wait_output(server, "describe() -> ")
        printed = server.stdout_text()
        self.assertRegex(printed, r"describe\(\) -> \{'title': 'txgraphsse calls'")
        self.assertIn("page connected", printed)
        page.fill("#note", "tea at five")
        page.click("#call-me")
        self.wait(
            page,
            "document.getElementById('call-me-result').textContent"
            ".includes('yes, got it')",
            "the answer of call_me",
        )
        self.assertIn("tea at five", page.text_content("#call-me-result") or "")
        printed = self.wait_output(server, "confirm(...) -> 'yes, got it'")
        self.assertIn("read_note() -> 'tea at five'", printed)
        calls = page.eval_on_selector_all(
            "#calls li", "items => items.map((e) => e.textContent)"
        )
        self.assertIn("multiply(6, 7) → 42", calls)
        self.assertIn('read_note() → "tea at five"', calls)
        save_screenshot(page, "example-calls")


class TwistdPageTests(ExampleTestCase):
    """
    The page at C{/} of C{twistd -n graphsse}.
    """

    def test_demo_page_shows_the_stream(self) -> None:
        """
        The demo page loads C{/sse/client.js}, opens the stream (it shows its
        session), shows what the server sends, and its button runs C{ping}.
        """
        port = free_port()
        twistd = Path(sys.executable).with_name("twistd")
        argv = [
            str(twistd) if twistd.exists() else "twistd",
            "-n",
            "--pidfile=",
            "graphsse",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--app",
            "tests.servers.browser:announce_routes",
        ]
        server = start_command(argv, port, name="twistd-demo")
        self.addCleanup(server.stop)
        loaded: list[str] = []
        page = self.new_page("about:blank")
        page.on("response", lambda response: loaded.append(response.url))
        page.goto(server.url("/"))
        self.wait(
            page,
            "document.getElementById('log').textContent.includes('session ')",
            "the session",
        )
        self.assertIn(server.url("/sse/client.js"), loaded)
        sid = page.evaluate("sse.sessionId")
        self.assertIn(f"session {sid}", page.text_content("#log") or "")
        self.assertEqual(
            post_json(
                server.url("/sse"), {"route": "announce", "args": ["hello demo"]}
            ),
            (200, {"args": 1}),
        )
        self.wait(
            page,
            "document.getElementById('log').textContent.includes("
            '\'message: {"announce":"hello demo"}\')',
            "the announcement",
        )
        page.click("#ping")
        self.wait(
            page,
            "document.getElementById('log').textContent.includes('ping -> \"pong\"')",
            "the ping",
        )
        self.assertTrue(re.search(r"^open$", page.text_content("#log") or "", re.M))
        save_screenshot(page, "twistd-demo")
