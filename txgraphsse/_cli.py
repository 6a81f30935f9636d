# -*- test-case-name: tests.test_api_client -*-
"""
C{graphsse}: the server API (PROTOCOL.md section 4) from a shell, for
scripts and operators::

    graphsse publish --url http://host:8080/api --api-key KEY \\
        --channel news --data '{"n":1}'

This module owns the command line: its arguments, where the URL and the
credentials come from (flags, a file, C{GRAPHSSE_URL}, C{GRAPHSSE_API_KEY},
C{GRAPHSSE_TOKEN}), running one call of L{ServerAPI} under L{react}, and
what it prints and exits with: the answer's JSON on stdout and C{0}; or one
line of JSON error on stderr and C{1} when the server refused, C{2} for a
command line that makes no sense (nothing was sent), C{3} when no answer
came (the server cannot be reached, or answered what is not JSON), and
C{130} when a signal stopped it first.  The calls are L{ServerAPI}'s; like
the client, it never imports the server's modules (C{twistd graphsse}'s
command line is L{txgraphsse.tap}'s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python.failure import Failure

from . import _messages as messages
from .client import RemoteError, ServerAPI

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_ANSWER",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "main",
    "parse",
]

#: The server refused (its JSON error is on stderr).
EXIT_REFUSED = 1
#: The command line makes no sense; nothing was sent.
EXIT_USAGE = 2
#: No answer: the server cannot be reached, or did not answer JSON.
EXIT_NO_ANSWER = 3
#: Stopped by a signal before the answer came.
EXIT_INTERRUPTED = 130

_PROG = "graphsse"

_DESCRIPTION = """\
Use the server API of a txgraphsse server (twistd graphsse --api-key KEY):
publish on channels, call a client's route, read presence and history, end
streams.  The answer's JSON goes to stdout; an error goes to stderr as one
line of JSON, with exit status 1 when the server refused, 2 for a bad
command line, 3 when no answer came.
"""

_EPILOG = """\
The URL and credentials may come from the environment instead, which keeps
them out of ps: GRAPHSSE_URL, and GRAPHSSE_API_KEY or GRAPHSSE_TOKEN (a
JWT with the "graphsse" claim {"admin": true}, or {"publish": true} for
publish and history only).
"""


class UsageError(Exception):
    """
    The command line makes no sense.

    @ivar usage: the usage line of the command it was for.
    """

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """
    An argument parser that raises L{UsageError} instead of printing and
    exiting, so that every error leaves as JSON.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage().strip())


class Command:
    """
    One call to make: which API, with what credentials, doing what.

    @ivar url: the API's base URL.
    @ivar api_key: the API key, if that is the credential.
    @ivar token: the token, if that is the credential.
    @ivar act: makes the call on a L{ServerAPI}; fires with the answer to
        print.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        token: str | None,
        act: Callable[[ServerAPI], Deferred[Any]],
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.token = token
        self.act = act


# The command line


def _json_argument(text: str) -> Any:
    """
    An argument that is JSON (C{-}: read it from stdin).
    """
    if text == "-":
        text = sys.stdin.read()
    try:
        return messages.loads(text)
    except (ValueError, RecursionError):
        raise argparse.ArgumentTypeError(
            f"not JSON (a string is quoted: '\"text\"'): {text[:60]!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"not a number of seconds up to 300: {text!r}")
    return value


def _build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    """
    The parser of the command line, and that of each command by name.
    """
    parser = _Parser(prog=_PROG, description=_DESCRIPTION, epilog=_EPILOG)
    subparsers: dict[str, _Parser] = {}
    common = _Parser(add_help=False)
    where = common.add_argument_group("server and credentials")
    where.add_argument(
        "--url",
        help="the API's URL, such as http://host:8080/api (or GRAPHSSE_URL)",
    )
    where.add_argument("--api-key", metavar="KEY", help="an API key of the server's")
    where.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="a file whose first line is the API key (or GRAPHSSE_API_KEY)",
    )
    where.add_argument("--token", help="a JWT, sent as Authorization: Bearer")
    where.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file whose first line is the JWT (or GRAPHSSE_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str) -> _Parser:
        sub: _Parser = commands.add_parser(
            name, parents=[common], help=summary, description=summary, epilog=_EPILOG
        )
        subparsers[name] = sub
        return sub

    publish = command("publish", "Publish an event on one channel or several.")
    publish.add_argument(
        "--channel",
        action="append",
        required=True,
        help="the channel (give it more than once for several)",
    )
    publish.add_argument(
        "--data",
        type=_json_argument,
        required=True,
        help="the event's data, as JSON ('-' reads it from stdin)",
    )
    publish.add_argument("--event", help="the event name (the channel's by default)")

    call = command("call", "Run a route of the client of a session; print its result.")
    call.add_argument("--session", required=True, help="the session id")
    call.add_argument("--route", required=True, help="the client's route")
    call.add_argument(
        "--args",
        type=_json_argument,
        help="its arguments as JSON: a list is spread ('-' reads stdin)",
    )
    call.add_argument(
        "--timeout",
        type=_seconds,
        help="seconds the server waits for the client (the server's default)",
    )

    presence = command("presence", "List who is in a channel that keeps presence.")
    presence.add_argument("--channel", required=True, help="the channel")

    history = command("history", "Print the events a channel keeps.")
    history.add_argument("--channel", required=True, help="the channel")
    history.add_argument("--since", metavar="ID", help="only those after this id")

    disconnect = command("disconnect", "End a session's stream, or a subject's.")
    which = disconnect.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", help="the session id")
    which.add_argument("--subject", help="a principal's subject: all its streams")
    return parser, subparsers


def _first_line(name: str, option: str, usage: str) -> str:
    try:
        with open(name, encoding="utf-8") as file:
            lines = [line.strip() for line in file]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{option}: {error}", usage) from None
    for line in lines:
        if line:
            return line
    raise UsageError(f"{option}: {name} is empty", usage)


def _credentials(
    options: argparse.Namespace, environ: Mapping[str, str], usage: str
) -> tuple[str | None, str | None]:
    """
    The API key or the token: from the one flag that gives one, else from
    C{GRAPHSSE_API_KEY}, else from C{GRAPHSSE_TOKEN}.
    """
    flags = {
        "--api-key": options.api_key,
        "--api-key-file": options.api_key_file,
        "--token": options.token,
        "--token-file": options.token_file,
    }
    given = [flag for flag, value in flags.items() if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one credential, not {' and '.join(given)}", usage)
    key: str | None = None
    token: str | None = None
    if options.api_key is not None:
        key = options.api_key.strip()
    elif options.api_key_file is not None:
        key = _first_line(options.api_key_file, "--api-key-file", usage)
    elif options.token is not None:
        token = options.token.strip()
    elif options.token_file is not None:
        token = _first_line(options.token_file, "--token-file", usage)
    elif environ.get("GRAPHSSE_API_KEY", "").strip():
        key = environ["GRAPHSSE_API_KEY"].strip()
    elif environ.get("GRAPHSSE_TOKEN", "").strip():
        token = environ["GRAPHSSE_TOKEN"].strip()
    else:
        raise UsageError(
            "an API key or a token is needed: --api-key, --api-key-file,"
            " --token, --token-file, GRAPHSSE_API_KEY or GRAPHSSE_TOKEN",
            usage,
        )
    if key == "" or token == "":
        raise UsageError("the credential is empty", usage)
    return key, token


def _action(options: argparse.Namespace) -> Callable[[ServerAPI], Deferred[Any]]:
    """
    What the command does with the API, firing with what the server
    answered.
    """
    name = options.command
    if name == "publish":
        channels: list[str] = options.channel
        if len(channels) == 1:
            return lambda api: api.publish(
                channels[0], options.data, options.event
            ).addCallback(lambda id: {"id": id})
        return lambda api: api.publish_many(
            channels, options.data, options.event
        ).addCallback(lambda ids: {"ids": ids})
    if name == "call":
        return lambda api: api.call(
            options.session, options.route, options.args, options.timeout
        ).addCallback(lambda result: {"result": result})
    if name == "presence":
        return lambda api: api.presence(options.channel).addCallback(
            lambda sessions: {"channel": options.channel, "sessions": sessions}
        )
    if name == "history":
        return lambda api: api.history(options.channel, options.since)
    assert name == "disconnect"
    return lambda api: api.disconnect(options.session, options.subject).addCallback(
        lambda count: {"disconnected": count}
    )


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Command:
    """
    The L{Command} that C{argv} (without the program's name) and
    C{environ} stand for.

    @raise UsageError: they make no sense.
    @raise SystemExit: for C{--help} (printed on stdout).
    """
    parser, commands = _build_parser()
    options = parser.parse_args(argv)
    usage = commands[options.command].format_usage().strip()
    url = options.url or environ.get("GRAPHSSE_URL", "")
    if not url:
        raise UsageError("the API's URL is needed: --url or GRAPHSSE_URL", usage)
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url: not an http or https URL: {url!r}", usage)
    key, token = _credentials(options, environ, usage)
    return Command(url, key, token, _action(options))


# Running it


def _write_json(stream: IO[str], value: Any) -> None:
    stream.write(json.dumps(value, separators=(",", ":")) + "\n")
    stream.flush()


def _error(code: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, **more}


def _why(error: Exception) -> str:
    """
    One line for why no answer came: the first reason of a failed request
    (treq's L{ResponseFailed <twisted.web.client.ResponseFailed>} and the
    like carry a list of them).
    """
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], Failure):
        value = reasons[0].value
        return str(value) or type(value).__name__
    return str(error) or type(error).__name__


def _interrupted() -> dict[str, Any]:
    return _error("interrupted", "stopped before an answer came")


async def _run(reactor: Any, command: Command) -> None:
    """
    Make C{command}'s call, print the answer or the error, and close the
    connections; fail with L{SystemExit} for an error's exit status.
    """
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
    api = ServerAPI(command.url, command.api_key, command.token, reactor=reactor)
    status = 0
    try:
        answer = await command.act(api)
    except Exception as error:
        if stopping:
            # A signal stopped the reactor, which dropped the connection.
            status = EXIT_INTERRUPTED
            _write_json(sys.stderr, _interrupted())
        elif isinstance(error, RemoteError):
            status = EXIT_NO_ANSWER if error.code == "bad_answer" else EXIT_REFUSED
            body = _error(error.code, error.message, status=error.status)
            _write_json(sys.stderr, body)
        else:
            status = EXIT_NO_ANSWER
            message = f"{command.url}: {_why(error)}"
            _write_json(sys.stderr, _error("no_answer", message))
    else:
        _write_json(sys.stdout, answer)
    finally:
        if not stopping:
            await api.close()
    if status:
        raise SystemExit(status)


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> NoReturn:
    """
    The C{graphsse} program: parse C{argv} (C{sys.argv[1:]} by default),
    make the call, exit with its status.
    """
    try:
        command = parse(
            sys.argv[1:] if argv is None else argv,
            os.environ if environ is None else environ,
        )
    except UsageError as error:
        more = {"usage": error.usage} if error.usage else {}
        _write_json(sys.stderr, _error("usage", str(error), **more))
        sys.exit(EXIT_USAGE)

    finished: list[bool] = []

    async def call(reactor: Any) -> None:
        try:
            await _run(reactor, command)
        finally:
            finished.append(True)

    def run(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(call(reactor))

    try:
        react(run)
    except SystemExit:
        if finished:
            raise
    # The reactor stopped before the call was done: a signal (Ctrl-C).
    _write_json(sys.stderr, _interrupted())
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
