"""
The server API's C{POST /api/call} (PROTOCOL.md section 4) answered by the
browser client in a real browser: Debian's Chromium, headless, driven by
Playwright's sync API, against C{tests/servers/browser.py}, whose C{/api}
is the server API of C{/sse} (C{ServerAPIResource(endpoint, keys=[...])}).

What is checked: a page opens a stream with browser routes; the test POSTs
C{/api/call} naming the page's session and gets C{{"result": ...}} with
what the page's route returned (a Promise's value included); the page's
route failing comes back as C{502} with the page's own error, and a route
the page lacks as C{502 no_route}; a session nobody holds is C{404}, and no
key C{401}.

Nothing here skips: without Chromium or Playwright every test fails, naming
what to install.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ._browser import ServerProcess, await_js
from .servers.browser import API_KEY
from .test_browser import BrowserTestCase


def api_post(
    server: ServerProcess, path: str, body: Any, key: str | None = API_KEY
) -> tuple[int, Any]:
    """
    C{POST} C{body} as JSON to C{/api/<path>} with C{Authorization: apikey
    <key>} (none if C{key} is None): the status and the JSON answer.
    """
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"apikey {key}"
    request = urllib.request.Request(
        server.url(f"/api/{path}"),
        data=json.dumps(body).encode("utf-8"),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15.0) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class APICallTests(BrowserTestCase):
    """
    C{POST /api/call} to the session of the page at C{/}.
    """

    def test_call_answered_by_the_page(self) -> None:
        """
        C{/api/call} runs the page's C{double} and C{shout} (which answers
        with a Promise) on its session: C{200 {"result": ...}}.
        """
        server = self.start(name="browser-api-call")
        page = self.open_page(server)
        sid = self.session_of(page)
        self.assertEqual(
            api_post(server, "call", {"session": sid, "route": "double", "args": [21]}),
            (200, {"result": 42}),
        )
        self.assertEqual(
            api_post(
                server, "call", {"session": sid, "route": "shout", "args": ["hi"]}
            ),
            (200, {"result": "HI!"}),
        )

    def test_route_error_is_502(self) -> None:
        """
        The page's route throws: C{502} with the page's error (code
        C{route_failed}, its message).  A route the page does not have:
        C{502 no_route}.  A session nobody holds: C{404 no_session}; no
        key: C{401}.  The page's session lives on.
        """
        server = self.start(name="browser-api-error")
        page = self.open_page(server)
        sid = self.session_of(page)
        page.evaluate(
            "() => sse.addRoute('fail', () => { throw new Error('boom in the page'); })"
        )
        status, body = api_post(server, "call", {"session": sid, "route": "fail"})
        self.assertEqual(
            (status, body),
            (502, {"error": {"code": "route_failed", "message": "boom in the page"}}),
        )
        status, body = api_post(server, "call", {"session": sid, "route": "missing"})
        self.assertEqual((status, body["error"]["code"]), (502, "no_route"))
        self.assertIn("missing", body["error"]["message"])
        status, body = api_post(
            server, "call", {"session": "x" * 22, "route": "double"}
        )
        self.assertEqual((status, body["error"]["code"]), (404, "no_session"))
        status, body = api_post(
            server, "call", {"session": sid, "route": "double"}, key=None
        )
        self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"))
        self.assertEqual(await_js(page, "sse.run('add', [1, 2])"), 3)
        self.assertEqual(self.call(server, "test_sessions"), [sid])
