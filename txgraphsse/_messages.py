# -*- test-case-name: tests.test_backchannel -*-
"""
The graphscript envelopes and their JSON, as PROTOCOL.md pins them down.

This module owns the shapes of the JSON values carried in C{data} and in
C{POST} bodies: C{setId}, route calls, C{runRequest}, replies, errors.  It
knows the encoder and nothing else of the project: no sessions, no HTTP.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ProtocolError",
    "as_data",
    "dumps",
    "error_body",
    "loads",
    "reply",
    "route_call",
    "run_request",
    "set_id",
    "spread_args",
    "too_large",
]


class ProtocolError(Exception):
    """
    A refusal with its HTTP status and machine word, from PROTOCOL.md's
    error table.
    """

    def __init__(
        self, status: int, code: str, message: str, error_id: str | None = None
    ) -> None:
        """
        @param error_id: the id of the log line that says more (a route's
            traceback), for the answer to carry.
        """
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error_id = error_id

    def body(self) -> dict[str, Any]:
        """
        The JSON answer: C{{"error":{"code":..,"message":..}}}, with the
        error's C{"id"} where it has one.
        """
        error = {"code": self.code, "message": self.message}
        if self.error_id is not None:
            error["id"] = self.error_id
        return {"error": error}


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """
    Compact JSON, as the framework sends it.  No raw line breaks can appear
    (JSON escapes them), so every JSON message is one C{data:} line.

    @raise ValueError: for C{NaN} or an infinity, which are not JSON (a
        browser's C{JSON.parse} refuses them).
    @raise TypeError: for a value JSON has no form for.
    """
    return _encoder.encode(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def loads(raw: bytes | str) -> Any:
    """
    Parse strict JSON: C{NaN}, C{Infinity} and numbers too large for a
    double (C{1e999}) are refused, as a browser's C{JSON.parse} would
    refuse them on their way back.

    @raise ValueError: C{raw} is not strict JSON.
    @raise RecursionError: it nests deeper than Python's parser goes.
    """
    return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)


def as_data(message: Any) -> str:
    """
    The text of an event that carries C{message}: a C{str} as it is, C{bytes}
    as UTF-8, anything else as JSON.
    """
    if isinstance(message, str):
        return message
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message).decode("utf-8")
    return dumps(message)


def set_id(session_id: str) -> str:
    return dumps({"route": "setId", "args": session_id})


def route_call(
    route: str, args: Any = None, method: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"route": route, "args": args}
    if method is not None:
        message["method"] = method
    return message


def run_request(
    message: Any, path: str, callback_id: str, session_id: str
) -> dict[str, Any]:
    return {"route": "runRequest", "args": [message, path, callback_id, session_id]}


def reply(args: Any, callback_id: str) -> dict[str, Any]:
    return {"args": args, "callbackId": callback_id}


def too_large(max_body: int) -> ProtocolError:
    """
    The refusal of a body over C{max_body} bytes.
    """
    return ProtocolError(413, "too_large", f"the body is over {max_body} bytes")


def error_body(code: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message}}).encode("utf-8")


def spread_args(args: Any) -> tuple[Any, ...]:
    """
    The positional arguments that C{args} stands for: an array is spread,
    C{null} or absent means none, any other value is one argument.
    """
    if args is None:
        return ()
    if isinstance(args, list):
        return tuple(args)
    return (args,)
