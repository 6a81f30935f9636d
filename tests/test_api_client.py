"""
Tests for the clients of the server API (PROTOCOL.md section 4) against a
real server on 127.0.0.1: L{txgraphsse.client.ServerAPI}, each of its calls
and the server's refusals as L{RemoteError}; the C{graphsse} command line,
run as the installed program, its output and exit statuses; and the two
examples that use the API from outside Python, C{examples/api_curl.sh}
(curl) and C{examples/publisher.mjs} (Node's C{fetch}), run as their
headers say, with a stream of the test's own checking what they published.

The server runs in the test's process, so every program runs under the
reactor (C{spawnProcess}), never blocking it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jwt
import treq
from attrs import frozen
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTCP
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from txgraphsse import ChannelSpec, HistoryPolicy, JWTAuthorizer, SSEBackend
from txgraphsse.api import ServerAPIResource
from txgraphsse.client import GraphSSEClient, RemoteError, ServerAPI

from .test_backchannel import WAIT, LiveStream, TrackingSite, _HangUp

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-the-api-client-tests-0123456789"
KEY = "client-api-key-0123456789"


def token(**claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


ADMIN = token(sub="ops", graphsse={"admin": True})
PUBLISHER = token(sub="cms", graphsse={"publish": True})


class _Anyone(JWTAuthorizer):
    """
    Tokens are optional on the streams, and anyone may join any channel.
    """

    def __init__(self) -> None:
        super().__init__(SECRET, required=False)

    def can_join(self, principal: Any, channel: str) -> bool:
        return True


class _Recording(Resource):
    """
    The API, noting the method, URI and C{Authorization} of each request
    that reaches it.
    """

    isLeaf = True

    def __init__(self, api: Resource) -> None:
        super().__init__()
        self.api = api
        self.seen: list[tuple[bytes, bytes, bytes | None]] = []

    def render(self, request: Request) -> Any:
        assert request.method is not None and request.uri is not None
        self.seen.append(
            (request.method, request.uri, request.getHeader(b"authorization"))
        )
        return self.api.render(request)


class _Fixed(Resource):
    """
    Answers every request with one status, content type and body.
    """

    isLeaf = True

    def __init__(self, status: int, content_type: bytes, body: bytes) -> None:
        super().__init__()
        self._answer = (status, content_type, body)

    def render(self, request: Request) -> bytes:
        status, content_type, body = self._answer
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        return body


@frozen
class Ran:
    """
    How a program ended: its exit status and what it wrote.
    """

    code: int
    out: bytes
    err: bytes

    def lines(self) -> list[Any]:
        """
        Each line of stdout, as JSON.
        """
        return [json.loads(line) for line in self.out.decode().splitlines()]

    def json(self) -> Any:
        """
        Stdout, which must be one line of JSON.
        """
        [value] = self.lines()
        return value

    def error(self) -> Any:
        """
        Stderr, which must be one line of JSON.
        """
        lines = self.err.decode().splitlines()
        if len(lines) != 1:
            raise AssertionError(f"not one line on stderr: {self.err!r}")
        return json.loads(lines[0])


class _Collect(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self._stdin = stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.ended.callback(0)
        else:
            value = reason.value
            code = value.exitCode
            self.ended.callback(code if code is not None else -(value.signal or 0))


async def run_program(
    argv: list[str],
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    started: list[IProcessTransport] | None = None,
) -> Ran:
    """
    Run C{argv} in the checkout with the environment of the tests (less any
    C{GRAPHSSE_} variable) and C{env}; killed (by its own PID) after
    3 L{WAIT}s.

    @param started: where to put the process's transport, for a test that
        signals it.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHSSE_")}
    environ.update(env or {})
    protocol = _Collect(stdin)
    processes: IReactorProcess = reactor
    transport: IProcessTransport = processes.spawnProcess(
        protocol, argv[0], argv, env=environ, path=str(REPO)
    )
    if started is not None:
        started.append(transport)
    timer = reactor.callLater(3 * WAIT, transport.signalProcess, "KILL")
    try:
        code = await protocol.ended
    finally:
        if timer.active():
            timer.cancel()
    return Ran(code, b"".join(protocol.out), b"".join(protocol.err))


def program(name: str) -> str:
    """
    The path of C{name}: a program of the venv the tests run in (the
    C{graphsse} that C{pip install} made), or one on the C{PATH}.
    """
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is needed by these tests and was not found beside"
            f" {sys.executable} or on the PATH"
            + (": pip install -e . makes it" if name == "graphsse" else "")
        )
    return found


class ServerCase(TestCase):
    """
    An endpoint at C{/sse} with channels C{news} (history), C{chat} (no
    history) and C{room} (presence; a stream's C{?name=} is its C{info}),
    its API at C{/api} (recorded), and answers that are not the API's at
    C{/html} and C{/broken}, on a real port.
    """

    timeout = 60

    def setUp(self) -> None:
        def on_connection(client: Any, endpoint: Any, sid: str, request: Any) -> None:
            names = request.args.get(b"name")
            if names:
                client.info = {"name": names[0].decode()}

        self.backend = SSEBackend(reactor=reactor)
        self.endpoint = self.backend.setup_sse(
            "/sse",
            channels=[
                "news",
                ChannelSpec("chat", history=0),
                ChannelSpec("room", presence=True),
            ],
            history=HistoryPolicy(100),
            authorizer=_Anyone(),
            on_connection=on_connection,
            request_timeout=5,
        )
        self.recorded = _Recording(ServerAPIResource(self.endpoint, [KEY]))
        root = Resource()
        root.putChild(b"sse", self.endpoint.resource)
        root.putChild(b"api", self.recorded)
        root.putChild(b"html", _Fixed(200, b"text/html", b"<html>hello</html>"))
        root.putChild(b"broken", _Fixed(500, b"text/plain", b"oops"))
        root.putChild(b"other", _Fixed(200, b"application/json", b'{"other":1}'))
        self.site = TrackingSite(root)
        tcp: IReactorTCP = reactor
        self.port = tcp.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.url = f"{self.base}/api"
        self.pool = HTTPConnectionPool(reactor, False)
        self.streams: list[LiveStream] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._clean_up()))

    async def _clean_up(self) -> None:
        self.endpoint.terminate()
        for stream in self.streams:
            await stream.done.addErrback(lambda f: f.trap(_HangUp))
        await self.pool.closeCachedConnections()
        await self.port.stopListening()
        await self.site.all_closed()

    def scratch(self) -> Path:
        """
        The absolute path of a file that does not exist yet, in a directory
        removed in cleanup (the programs run in the checkout, not in
        trial's working directory).
        """
        directory = Path(tempfile.mkdtemp(prefix="txgraphsse-api-client-"))
        self.addCleanup(shutil.rmtree, directory, True)
        return directory / "file"

    def server_api(self, **kwargs: Any) -> ServerAPI:
        """
        A L{ServerAPI} of the test server's API (with the key unless told
        otherwise), closed in cleanup.
        """
        kwargs.setdefault("url", self.url)
        if "token" not in kwargs:
            kwargs.setdefault("api_key", KEY)
        api = ServerAPI(reactor=reactor, **kwargs)
        self.addCleanup(api.close)
        return api

    async def open_stream(
        self, query: str = "", bearer: str | None = None
    ) -> LiveStream:
        headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
        response = await treq.get(
            f"{self.base}/sse{query}", headers=headers, unbuffered=True, pool=self.pool
        )
        self.assertEqual(response.code, 200)
        stream = LiveStream(response)
        self.streams.append(stream)
        first = await stream.until_message(
            lambda m: isinstance(m, dict) and m.get("route") == "setId"
        )
        stream.session_id = first["args"]
        return stream

    async def python_client(self) -> tuple[GraphSSEClient, str]:
        """
        A L{GraphSSEClient} connected to C{/sse}, with routes C{double},
        C{ping}, C{broken} and C{never}; and its session id.
        """
        client = GraphSSEClient(reactor)
        self.addCleanup(client.terminate)

        def broken() -> None:
            raise ValueError("the client's own failure")

        client.add_route("double", lambda x: 2 * x)
        client.add_route("ping", lambda: "pong")
        client.add_route("broken", broken)
        client.add_route("never", lambda: Deferred())
        connection = await client.connect(f"{self.base}/sse")
        assert connection.session_id is not None
        return client, connection.session_id

    async def refused(
        self, deferred: Deferred[Any], status: int, code: str
    ) -> RemoteError:
        """
        Wait for C{deferred} to fail with a L{RemoteError} of C{status} and
        C{code}.
        """
        try:
            value = await deferred
        except RemoteError as error:
            self.assertEqual((error.status, error.code), (status, code), str(error))
            self.assertIsInstance(error.message, str)
            self.assertTrue(error.message)
            return error
        raise self.failureException(f"expected {status} {code}, got {value!r}")


# ServerAPI


class PublishTests(ServerCase):
    async def test_publish(self) -> None:
        """
        L{ServerAPI.publish} fires with the event's id; a stream on the
        channel gets the event with that id, named after the channel.
        """
        stream = await self.open_stream("?channels=news")
        event_id = await self.server_api().publish("news", {"n": 1})
        self.assertIsInstance(event_id, str)
        await stream.until_message(lambda m: m == {"n": 1})
        [event] = [e for e in stream.events if e.type == "news"]
        self.assertEqual((event.last_event_id, event.data), (event_id, '{"n":1}'))

    async def test_event_name_and_text(self) -> None:
        """
        C{event} names the event, and a string is its data as it is; a
        channel without history gives no id.
        """
        stream = await self.open_stream("?channels=chat")
        api = self.server_api()
        self.assertIsNone(await api.publish("chat", "plain text", event="alert"))
        await stream.until_message(lambda m: m == "plain text")
        [event] = [e for e in stream.events if e.data == "plain text"]
        self.assertEqual(event.type, "alert")

    async def test_publish_many(self) -> None:
        """
        L{ServerAPI.publish_many} publishes once on each channel and fires
        with each one's id, by channel.
        """
        stream = await self.open_stream("?channels=news,chat")
        ids = await self.server_api().publish_many(["news", "chat"], [1, 2])
        self.assertEqual(sorted(ids), ["chat", "news"])
        self.assertIsInstance(ids["news"], str)
        self.assertIsNone(ids["chat"])
        await stream.until(lambda ms: ms.count([1, 2]) == 2)
        self.assertEqual(
            sorted(e.type for e in stream.events if e.data == "[1,2]"), ["chat", "news"]
        )

    async def test_refused(self) -> None:
        """
        A channel the server does not have is a L{RemoteError} with the
        server's status and code.
        """
        api = self.server_api()
        await self.refused(api.publish("nowhere", 1), 404, "no_channel")
        await self.refused(api.publish_many(["news", "nowhere"], 1), 404, "no_channel")
        await self.refused(api.publish("news", 1, event="a\nb"), 400, "bad_message")

    def test_not_json(self) -> None:
        """
        Data that JSON cannot carry is refused at once, before any request.
        """
        api = self.server_api()
        with self.assertRaises(ValueError):
            api.publish("news", float("nan"))
        with self.assertRaises(TypeError):
            api.publish_many(["news"], object())
        self.assertEqual(self.recorded.seen, [])


class CallTests(ServerCase):
    async def test_call(self) -> None:
        """
        L{ServerAPI.call} runs the client's route on its session and fires
        with its result: a list of arguments is spread, another value is
        one argument, none is none.
        """
        _, sid = await self.python_client()
        api = self.server_api()
        self.assertEqual(await api.call(sid, "double", [21]), 42)
        self.assertEqual(await api.call(sid, "double", "ab", timeout=5), "abab")
        self.assertEqual(await api.call(sid, "ping"), "pong")

    async def test_errors(self) -> None:
        """
        The client's own error is C{502} with its code; no such session
        C{404}; no answer within C{timeout} C{504}.
        """
        _, sid = await self.python_client()
        api = self.server_api()
        await self.refused(api.call(sid, "broken"), 502, "route_failed")
        await self.refused(api.call(sid, "missing"), 502, "no_route")
        await self.refused(api.call("x" * 22, "double", [1]), 404, "no_session")
        await self.refused(api.call(sid, "never", timeout=0.3), 504, "timeout")
        self.flushLoggedErrors(ValueError)


class PresenceTests(ServerCase):
    async def test_presence(self) -> None:
        """
        L{ServerAPI.presence} lists the channel's sessions, each with its
        subject and info; a channel without presence, or none, is refused.
        """
        ada = await self.open_stream("?channels=room&name=Ada", bearer=token(sub="ada"))
        anonymous = await self.open_stream("?channels=room")
        await self.open_stream("?channels=news")
        api = self.server_api()
        sessions = await api.presence("room")
        self.assertEqual(
            sorted(sessions, key=lambda s: s["id"] == anonymous.session_id),
            [
                {"id": ada.session_id, "subject": "ada", "info": {"name": "Ada"}},
                {"id": anonymous.session_id, "subject": None, "info": None},
            ],
        )
        await self.refused(api.presence("news"), 400, "bad_message")
        await self.refused(api.presence("nowhere"), 404, "no_channel")


class HistoryTests(ServerCase):
    async def test_history(self) -> None:
        """
        L{ServerAPI.history} fires with the kept events, oldest first; after
        an id, those after it; from an id it cannot place, all it keeps and
        C{reset}.
        """
        api = self.server_api()
        ids = [await api.publish("news", {"n": n}) for n in range(3)]
        self.assertEqual(
            await api.history("news"),
            {
                "events": [
                    {"id": ids[n], "event": "news", "data": f'{{"n":{n}}}'}
                    for n in range(3)
                ]
            },
        )
        after = await api.history("news", since=ids[0])
        self.assertEqual([e["id"] for e in after["events"]], ids[1:])
        self.assertNotIn("reset", after)
        lost = await api.history("news", since="nonsense")
        self.assertEqual((len(lost["events"]), lost["reset"]), (3, True))
        await self.refused(api.history("nowhere"), 404, "no_channel")
        [*_, (_, path, _)] = self.recorded.seen
        self.assertEqual(path, b"/api/history?channel=nowhere")

    async def test_query_is_quoted(self) -> None:
        """
        A channel name and an id are quoted in the query.
        """
        api = self.server_api()
        await self.refused(api.history("a&b c", since="x/y"), 404, "no_channel")
        [(_, path, _)] = self.recorded.seen
        self.assertEqual(path, b"/api/history?channel=a%26b+c&since=x%2Fy")


class DisconnectTests(ServerCase):
    async def test_by_session(self) -> None:
        """
        L{ServerAPI.disconnect} of a session ends that stream, with a last
        C{disconnected} event, and fires with the count.
        """
        gone = await self.open_stream()
        kept = await self.open_stream()
        api = self.server_api()
        self.assertEqual(await api.disconnect(session=gone.session_id), 1)
        await gone.done
        self.assertEqual(gone.events[-1].type, "disconnected")
        self.assertIn(kept.session_id, self.endpoint.sessions)
        self.assertEqual(await api.disconnect(gone.session_id), 0)

    async def test_by_subject(self) -> None:
        """
        L{ServerAPI.disconnect} of a subject ends each of its streams.
        """
        ada = [await self.open_stream(bearer=token(sub="ada")) for _ in range(2)]
        bob = await self.open_stream(bearer=token(sub="bob"))
        self.assertEqual(await self.server_api().disconnect(subject="ada"), 2)
        for stream in ada:
            await stream.done
        self.assertIn(bob.session_id, self.endpoint.sessions)

    def test_one_of_them(self) -> None:
        """
        Neither or both of a session and a subject is a L{ValueError}.
        """
        api = self.server_api()
        with self.assertRaises(ValueError):
            api.disconnect()
        with self.assertRaises(ValueError):
            api.disconnect("s", "t")
        self.assertEqual(self.recorded.seen, [])


class CredentialTests(ServerCase):
    async def test_key_and_tokens(self) -> None:
        """
        A key goes as C{apikey KEY}, a token as C{Bearer TOKEN}; a token
        function is asked before each request.
        """
        await self.server_api().publish("news", 1)
        await self.server_api(token=ADMIN).publish("news", 2)
        asked: list[int] = []

        def fresh() -> str:
            asked.append(1)
            return ADMIN

        api = self.server_api(token=fresh)
        await api.publish("news", 3)
        await api.history("news")
        self.assertEqual(len(asked), 2)
        self.assertEqual(
            [auth for _, _, auth in self.recorded.seen],
            [f"apikey {KEY}".encode(), *[f"Bearer {ADMIN}".encode()] * 3],
        )

    async def test_refused(self) -> None:
        """
        A wrong key, or none, is C{401 unauthorized}; a publisher's token
        may publish and read history, not call or disconnect.
        """
        await self.refused(
            self.server_api(api_key="wrong").publish("news", 1), 401, "unauthorized"
        )
        await self.refused(
            self.server_api(api_key=None).history("news"), 401, "unauthorized"
        )
        self.assertEqual(self.recorded.seen[-1][2], None)
        publisher = self.server_api(token=PUBLISHER)
        self.assertIsInstance(await publisher.publish("news", 1), str)
        self.assertEqual(len((await publisher.history("news"))["events"]), 1)
        await self.refused(publisher.call("x" * 22, "ping"), 403, "forbidden")
        await self.refused(publisher.disconnect(subject="ada"), 403, "forbidden")

    def test_bad_arguments(self) -> None:
        """
        A key and a token together, or a URL that is not HTTP, is a
        L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ServerAPI(self.url, api_key=KEY, token=ADMIN, reactor=reactor)
        with self.assertRaises(ValueError):
            ServerAPI("ftp://127.0.0.1/api", api_key=KEY, reactor=reactor)


class AnswerTests(ServerCase):
    async def test_not_the_api(self) -> None:
        """
        An answer that is not JSON is C{bad_answer}; a refusal that is not
        JSON is C{http_error} with its status; JSON without the field a
        call answers with is C{bad_answer}.
        """
        html = self.server_api(url=f"{self.base}/html")
        await self.refused(html.publish("news", 1), 200, "bad_answer")
        broken = self.server_api(url=f"{self.base}/broken/")
        await self.refused(broken.history("news"), 500, "http_error")
        other = self.server_api(url=f"{self.base}/other")
        await self.refused(other.publish("news", 1), 200, "bad_answer")
        await self.refused(other.publish_many(["news"], 1), 200, "bad_answer")
        await self.refused(other.call("s", "r"), 200, "bad_answer")
        await self.refused(other.presence("room"), 200, "bad_answer")
        await self.refused(other.history("news"), 200, "bad_answer")
        await self.refused(other.disconnect("s"), 200, "bad_answer")

    async def test_openapi(self) -> None:
        """
        L{ServerAPI.openapi} fires with the API's OpenAPI document.
        """
        document = await self.server_api(api_key=None).openapi()
        self.assertEqual(document["openapi"], "3.1.0")
        self.assertIn("/api/publish", document["paths"])

    async def test_close_and_own_client(self) -> None:
        """
        L{ServerAPI.close} closes the connections it made; with a treq
        client of the caller's, it makes none and closes none.
        """
        api = ServerAPI(self.url, api_key=KEY, reactor=reactor)
        await api.publish("news", 1)
        await api.close()
        await self.site.all_closed().addTimeout(WAIT, reactor)

        requests: list[bytes] = []
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)

        @implementer(IAgent)
        class Counting:
            agent = Agent(reactor, pool=pool)

            def request(
                self, method: bytes, uri: bytes, *rest: Any
            ) -> Deferred[IResponse]:
                requests.append(method)
                return self.agent.request(method, uri, *rest)

        mine = ServerAPI(
            self.url, api_key=KEY, reactor=reactor, http_client=HTTPClient(Counting())
        )
        await mine.history("news")
        await mine.close()
        self.assertEqual(requests, [b"GET"])
        await deferLater(reactor, 0.2)
        # The pool's connection is still open: the server has not seen it go.
        self.assertFalse(self.site.all_closed().called)


# The command line


class CommandLineCase(ServerCase):
    def graphsse(
        self, *argv: str, env: dict[str, str] | None = None, stdin: bytes = b""
    ) -> Deferred[Ran]:
        """
        Run the installed C{graphsse} with C{argv}.
        """
        return Deferred.fromCoroutine(
            run_program([program("graphsse"), *argv], env, stdin)
        )

    def with_key(self, command: str, *argv: str, stdin: bytes = b"") -> Deferred[Ran]:
        """
        Run C{graphsse command} with the test server's URL and key.
        """
        return self.graphsse(
            command, "--url", self.url, "--api-key", KEY, *argv, stdin=stdin
        )

    def assertAnswer(self, ran: Ran) -> Any:
        """
        C{ran} succeeded, printing one line of JSON and nothing on stderr.
        """
        self.assertEqual((ran.code, ran.err), (0, b""), ran)
        self.assertTrue(ran.out.endswith(b"\n"))
        return ran.json()

    def assertRefused(
        self, ran: Ran, code: int, error: str, status: int | None
    ) -> None:
        """
        C{ran} failed with exit status C{code}, printing nothing on stdout
        and one line of JSON error C{error} (with the HTTP C{status}) on
        stderr.
        """
        self.assertEqual((ran.code, ran.out), (code, b""), ran)
        self.assertNotIn(b"Traceback", ran.err)
        body = ran.error()
        self.assertEqual(body["error"]["code"], error, body)
        self.assertIsInstance(body["error"]["message"], str)
        self.assertEqual(body.get("status"), status, body)


class CommandLineTests(CommandLineCase):
    def test_installed(self) -> None:
        """
        The package installs C{graphsse} as L{txgraphsse._cli.main}.
        """
        pyproject = (REPO / "pyproject.toml").read_text()
        self.assertIn(
            '[project.scripts]\ngraphsse = "txgraphsse._cli:main"\n', pyproject
        )
        [found] = [
            e for e in entry_points(group="console_scripts") if e.name == "graphsse"
        ]
        self.assertEqual(found.value, "txgraphsse._cli:main")
        program("graphsse")

    async def test_publish(self) -> None:
        """
        C{graphsse publish} prints the event's id; the stream gets it.  With
        several C{--channel}s it prints each one's id.
        """
        stream = await self.open_stream("?channels=news,chat")
        answer = self.assertAnswer(
            await self.with_key(
                "publish", "--channel", "news", "--data", '{"n":1}', "--event", "e"
            )
        )
        await stream.until_message(lambda m: m == {"n": 1})
        [event] = [e for e in stream.events if e.data == '{"n":1}']
        self.assertEqual((event.type, event.last_event_id), ("e", answer["id"]))
        ran = await self.with_key(
            "publish",
            "--channel",
            "news",
            "--channel",
            "chat",
            "--data",
            "-",
            stdin=b'"from stdin"',
        )
        ids = self.assertAnswer(ran)["ids"]
        self.assertEqual(sorted(ids), ["chat", "news"])
        self.assertIsNone(ids["chat"])
        await stream.until(lambda ms: ms.count("from stdin") == 2)

    async def test_call(self) -> None:
        """
        C{graphsse call} prints the route's result; the client's error and
        an unknown session are refusals (exit 1).
        """
        _, sid = await self.python_client()
        ran = await self.with_key(
            "call",
            f"--session={sid}",  # an id may begin with "-"
            "--route",
            "double",
            "--args",
            "[21]",
            "--timeout",
            "5",
        )
        self.assertEqual(self.assertAnswer(ran), {"result": 42})
        ran = await self.with_key("call", f"--session={sid}", "--route", "ping")
        self.assertEqual(self.assertAnswer(ran), {"result": "pong"})
        ran = await self.with_key("call", f"--session={sid}", "--route", "broken")
        self.assertRefused(ran, 1, "route_failed", 502)
        ran = await self.with_key("call", "--session", "x" * 22, "--route", "ping")
        self.assertRefused(ran, 1, "no_session", 404)
        self.flushLoggedErrors(ValueError)

    async def test_interrupted(self) -> None:
        """
        C{SIGINT} while a call waits for the client ends C{graphsse} with
        exit status 130 and a JSON error, not 0.
        """
        client, sid = await self.python_client()
        reached: Deferred[None] = Deferred()

        def hang() -> Deferred[None]:
            reached.callback(None)
            return Deferred()

        client.add_route("hang", hang)
        started: list[IProcessTransport] = []
        argv = ["call", "--url", self.url, "--api-key", KEY, f"--session={sid}"]
        ran = Deferred.fromCoroutine(
            run_program(
                [program("graphsse"), *argv, "--route", "hang"], started=started
            )
        )
        await reached.addTimeout(WAIT, reactor)
        [transport] = started
        transport.signalProcess("INT")
        self.assertRefused(await ran, 130, "interrupted", None)

    async def test_presence_history_disconnect(self) -> None:
        """
        C{graphsse presence}, C{history} and C{disconnect} print the
        server's answers.
        """
        stream = await self.open_stream(
            "?channels=room&name=Ada", bearer=token(sub="ada")
        )
        answer = self.assertAnswer(await self.with_key("presence", "--channel", "room"))
        self.assertEqual(
            answer,
            {
                "channel": "room",
                "sessions": [
                    {"id": stream.session_id, "subject": "ada", "info": {"name": "Ada"}}
                ],
            },
        )
        api = self.server_api()
        first, second = [await api.publish("news", n) for n in (1, 2)]
        answer = self.assertAnswer(await self.with_key("history", "--channel", "news"))
        self.assertEqual([e["id"] for e in answer["events"]], [first, second])
        answer = self.assertAnswer(
            await self.with_key("history", "--channel", "news", "--since", first)
        )
        self.assertEqual(
            answer, {"events": [{"id": second, "event": "news", "data": "2"}]}
        )
        answer = self.assertAnswer(
            await self.with_key("disconnect", f"--session={stream.session_id}")
        )
        self.assertEqual(answer, {"disconnected": 1})
        await stream.done
        answer = self.assertAnswer(
            await self.with_key("disconnect", "--subject", "ada")
        )
        self.assertEqual(answer, {"disconnected": 0})

    async def test_refusals(self) -> None:
        """
        A wrong key is C{401}, an unknown channel C{404}, a publisher's
        token calling C{403}: each the server's JSON error on stderr and
        exit status 1.
        """
        ran = await self.graphsse(
            "publish",
            "--url",
            self.url,
            "--api-key",
            "wrong",
            "--channel",
            "news",
            "--data",
            "1",
        )
        self.assertRefused(ran, 1, "unauthorized", 401)
        ran = await self.with_key("history", "--channel", "nowhere")
        self.assertRefused(ran, 1, "no_channel", 404)
        ran = await self.with_key("presence", "--channel", "news")
        self.assertRefused(ran, 1, "bad_message", 400)
        ran = await self.graphsse(
            "call",
            "--url",
            self.url,
            "--token",
            PUBLISHER,
            "--session",
            "s",
            "--route",
            "r",
        )
        self.assertRefused(ran, 1, "forbidden", 403)
        self.assertEqual(len(self.recorded.seen), 4)

    async def test_credentials_from_files_and_environment(self) -> None:
        """
        The key may come from C{--api-key-file} or C{GRAPHSSE_API_KEY}, the
        token from C{--token-file} or C{GRAPHSSE_TOKEN}, the URL from
        C{GRAPHSSE_URL}; a flag wins over the environment.
        """
        key_file = self.scratch()
        key_file.write_text(f"\n  {KEY}  \nignored\n")
        token_file = self.scratch()
        token_file.write_text(ADMIN + "\n")
        history = ["history", "--channel", "news"]
        runs = [
            await self.graphsse(
                *history, "--url", self.url, "--api-key-file", str(key_file)
            ),
            await self.graphsse(
                *history, "--url", self.url, "--token-file", str(token_file)
            ),
            await self.graphsse(
                *history, env={"GRAPHSSE_URL": self.url, "GRAPHSSE_API_KEY": KEY}
            ),
            await self.graphsse(
                *history, env={"GRAPHSSE_URL": self.url, "GRAPHSSE_TOKEN": ADMIN}
            ),
            await self.graphsse(
                *history,
                "--api-key",
                KEY,
                env={"GRAPHSSE_URL": self.url, "GRAPHSSE_TOKEN": "not-this"},
            ),
        ]
        for ran in runs:
            self.assertEqual(self.assertAnswer(ran), {"events": []})
        self.assertEqual(
            [auth for _, _, auth in self.recorded.seen],
            [
                f"apikey {KEY}".encode(),
                f"Bearer {ADMIN}".encode(),
                f"apikey {KEY}".encode(),
                f"Bearer {ADMIN}".encode(),
                f"apikey {KEY}".encode(),
            ],
        )

    async def test_usage_errors(self) -> None:
        """
        A command line that makes no sense exits 2 with a JSON C{usage}
        error on stderr, and sends nothing.
        """
        empty = self.scratch()
        empty.write_text("\n\n")
        missing = str(empty) + "-missing"
        url = ["--url", self.url]
        key = [*url, "--api-key", KEY]
        news = ["--channel", "news"]
        cases: list[tuple[list[str], str]] = [
            ([], "required: COMMAND"),
            (["shout"], "invalid choice: 'shout'"),
            (["publish", *key, "--data", "1"], "required: --channel"),
            (["publish", *key, *news, "--data", "{"], "--data: not JSON"),
            (["publish", *key, *news, "--data", "NaN"], "--data: not JSON"),
            (["publish", "--api-key", KEY, *news, "--data", "1"], "URL is needed"),
            (
                ["history", "--url", "ftp://x/api", "--api-key", KEY, *news],
                "not an http",
            ),
            (["history", *url, *news], "an API key or a token is needed"),
            (["history", *key, "--token", ADMIN, *news], "not --api-key and --token"),
            (["history", *url, "--api-key-file", str(empty), *news], "is empty"),
            (["history", *url, "--api-key-file", missing, *news], "No such file"),
            (["history", *url, "--token-file", missing, *news], "No such file"),
            (["call", *key, "--session", "s"], "required: --route"),
            (
                ["call", *key, "--session", "s", "--route", "r", "--args", "[1,"],
                "--args",
            ),
            (
                ["call", *key, "--session", "s", "--route", "r", "--timeout", "0"],
                "--timeout: not a number of seconds",
            ),
            (["disconnect", *key], "one of the arguments --session --subject"),
            (
                ["disconnect", *key, "--session", "s", "--subject", "t"],
                "not allowed with argument",
            ),
        ]
        for argv, why in cases:
            ran = await self.graphsse(*argv)
            self.assertRefused(ran, 2, "usage", None)
            self.assertIn(why, ran.error()["error"]["message"], argv)
            self.assertTrue(ran.error()["usage"].startswith("usage: graphsse"), argv)
        # The usage line is the command's own.
        self.assertTrue(ran.error()["usage"].startswith("usage: graphsse disconnect"))
        self.assertEqual(self.recorded.seen, [])

    async def test_no_answer_and_help(self) -> None:
        """
        A server that cannot be reached exits 3 with a JSON error; C{--help}
        prints the commands and exits 0.
        """
        tcp: IReactorTCP = reactor
        closed = tcp.listenTCP(0, self.site, interface="127.0.0.1")
        dead = f"http://127.0.0.1:{closed.getHost().port}/api"
        await closed.stopListening()
        ran = await self.graphsse(
            "history", "--url", dead, "--api-key", KEY, "--channel", "n"
        )
        self.assertRefused(ran, 3, "no_answer", None)
        ran = await self.graphsse("--help")
        self.assertEqual((ran.code, ran.err), (0, b""))
        for command in [b"publish", b"call", b"presence", b"history", b"disconnect"]:
            self.assertIn(command, ran.out)
        ran = await self.graphsse("publish", "--help")
        self.assertEqual(ran.code, 0)
        self.assertIn(b"--api-key-file", ran.out)


# The examples


class ExampleTests(ServerCase):
    async def test_curl_walk(self) -> None:
        """
        C{examples/api_curl.sh URL KEY}, with curl alone: its stream gets a
        session, the publish an id that the test's own stream receives and
        the history holds, the call the answer its own client gave, and the
        disconnect ends its stream; each step's answer is as it should be.
        """
        program("curl")
        watcher = await self.open_stream("?channels=news")
        ran = await run_program(
            [program("bash"), "examples/api_curl.sh", self.url, KEY]
        )
        self.assertEqual((ran.code, ran.err), (0, b""), ran)
        steps = {}
        for line in ran.out.decode().splitlines():
            name, status, answer = line.split(" ", 2)
            steps[name] = (status, json.loads(answer))
        self.assertEqual(
            list(steps), ["stream", "publish", "history", "call", "disconnect", "ended"]
        )
        session = steps["stream"][1]["session"]
        event_id = steps["publish"][1]["id"]
        self.assertEqual(
            steps["history"],
            (
                "200",
                {
                    "events": [
                        {
                            "id": event_id,
                            "event": "news",
                            "data": '{"n":1,"from":"curl"}',
                        }
                    ]
                },
            ),
        )
        self.assertEqual(steps["call"], ("200", {"result": 5}))
        self.assertEqual(steps["disconnect"], ("200", {"disconnected": 1}))
        self.assertEqual(steps["ended"], ("-", {"route": "disconnected", "args": None}))
        await watcher.until_message(lambda m: m == {"n": 1, "from": "curl"})
        [event] = [e for e in watcher.events if e.type == "news"]
        self.assertEqual(event.last_event_id, event_id)
        self.assertNotIn(session, self.endpoint.sessions)
        self.assertIn(watcher.session_id, self.endpoint.sessions)

    async def test_curl_walk_refused(self) -> None:
        """
        With a wrong key (from the environment), the walk stops at the
        first step the API refuses, exit status 1.
        """
        ran = await run_program(
            [program("bash"), "examples/api_curl.sh"],
            {"GRAPHSSE_URL": self.url, "GRAPHSSE_API_KEY": "wrong"},
        )
        self.assertEqual(ran.code, 1, ran)
        self.assertIn(b"publish 401 ", ran.out)
        self.assertIn(b"expected 200, got 401", ran.err)

    async def test_node_publisher(self) -> None:
        """
        C{node examples/publisher.mjs} publishes its C{--count} events, one
        after the other: it prints each one's id, and the test's stream gets
        them in order with those ids.
        """
        watcher = await self.open_stream("?channels=news")
        ran = await run_program(
            [
                program("node"),
                "examples/publisher.mjs",
                "--channel",
                "news",
                "--count",
                "5",
            ],
            {"GRAPHSSE_URL": self.url, "GRAPHSSE_API_KEY": KEY},
        )
        self.assertEqual((ran.code, ran.err), (0, b""), ran)
        ids = [answer["id"] for answer in ran.lines()]
        self.assertEqual(len(ids), 5)
        expected = [{"n": n, "from": "node"} for n in range(1, 6)]
        await watcher.until(lambda ms: [m for m in ms if m in expected] == expected)
        events = [e for e in watcher.events if e.type == "news"]
        self.assertEqual([e.last_event_id for e in events], ids)
        self.assertEqual(
            [self.recorded.seen[n][2] for n in range(5)], [f"apikey {KEY}".encode()] * 5
        )

    async def test_node_publisher_refused(self) -> None:
        """
        A refusal is the server's JSON error on stderr and exit status 1; a
        bad command line exit status 2.
        """
        node = program("node")
        ran = await run_program(
            [node, "examples/publisher.mjs", "--url", self.url, "--key", "wrong"]
        )
        self.assertEqual((ran.code, ran.out), (1, b""), ran)
        self.assertEqual(ran.error()["error"]["code"], "unauthorized")
        ran = await run_program([node, "examples/publisher.mjs", "--key", KEY])
        self.assertEqual(ran.code, 2, ran)

    def test_commands_in_readme(self) -> None:
        """
        The README runs the examples as the tests do, and says how.
        """
        readme = (REPO / "README.md").read_text()
        for command in [
            "bash examples/api_curl.sh http://127.0.0.1:8080/api KEY",
            "node examples/publisher.mjs --url http://127.0.0.1:8080/api --key KEY",
            "graphsse publish --url http://127.0.0.1:8080/api",
        ]:
            self.assertIn(command, readme)
        for example in ["api_curl.sh", "publisher.mjs"]:
            header = (REPO / "examples" / example).read_text()
            self.assertIn("--api-key KEY", header)
