# -*- test-case-name: tests.test_api -*-
"""
The OpenAPI 3.1 document of the server API (PROTOCOL.md section 4), as
C{GET /api/openapi.json} serves it.

This module owns the description only: paths, bodies, answers and errors,
as plain data; it acts on nothing, and the tests hold it to the real
answers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "bad JSON or a body of the wrong shape",
        401: "no credentials, or wrong ones",
        403: "these credentials may not do this",
        404: "no such session or channel",
        413: "the body is over the endpoint's limit",
        415: "the body is not application/json",
        429: "over the caller's rate",
        502: "the client's route failed: its own code and message",
        503: "the cluster cannot be reached",
        504: "the client did not answer in time",
    }
    return {str(s): _json(_ref("Error"), meaning[s]) for s in statuses}


_COMMON = (400, 401, 403, 413, 415, 429)

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "id": {"type": "string"},
                },
            }
        },
    },
    "EventId": {"type": ["string", "null"]},
    "PublishOne": {
        "type": "object",
        "required": ["channel", "data"],
        "properties": {
            "channel": {"type": "string"},
            "data": {},
            "event": {"type": "string"},
        },
    },
    "PublishMany": {
        "type": "object",
        "required": ["channels", "data"],
        "properties": {
            "channels": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": 100,
            },
            "data": {},
            "event": {"type": "string"},
        },
    },
    "Published": {
        "oneOf": [
            {
                "type": "object",
                "required": ["id"],
                "properties": {"id": _ref("EventId")},
            },
            {
                "type": "object",
                "required": ["ids"],
                "properties": {
                    "ids": {"type": "object", "additionalProperties": _ref("EventId")}
                },
            },
        ]
    },
    "Call": {
        "type": "object",
        "required": ["session", "route"],
        "properties": {
            "session": {"type": "string"},
            "route": {"type": "string"},
            "args": {},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
        },
    },
    "CallResult": {
        "type": "object",
        "required": ["result"],
        "properties": {"result": {}},
    },
    "Presence": {
        "type": "object",
        "required": ["channel", "sessions"],
        "properties": {
            "channel": {"type": "string"},
            "sessions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "subject", "info"],
                    "properties": {
                        "id": {"type": "string"},
                        "subject": {"type": ["string", "null"]},
                        "info": {},
                    },
                },
            },
        },
    },
    "History": {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": _ref("EventId"),
                        "event": {"type": "string"},
                        "data": {"type": "string"},
                    },
                },
            },
            "reset": {"type": "boolean"},
        },
    },
    "Disconnect": {
        "oneOf": [
            {
                "type": "object",
                "required": ["session"],
                "properties": {"session": {"type": "string"}},
            },
            {
                "type": "object",
                "required": ["subject"],
                "properties": {"subject": {"type": "string"}},
            },
        ]
    },
    "Disconnected": {
        "type": "object",
        "required": ["disconnected"],
        "properties": {"disconnected": {"type": "integer", "minimum": 0}},
    },
}


def _post(summary: str, body: str, answer: str, *errors: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {"200": _json(_ref(answer), "done"), **_errors(*errors)},
        }
    }


def _get(summary: str, parameters: list[str], answer: str, *errors: int) -> Any:
    return {
        "get": {
            "summary": summary,
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": name == "channel",
                    "schema": {"type": "string"},
                }
                for name in parameters
            ],
            "responses": {"200": _json(_ref(answer), "done"), **_errors(*errors)},
        }
    }


def openapi_document(endpoint: Any = None, prefix: str = "/api") -> dict[str, Any]:
    """
    The OpenAPI 3.1 document of the server API mounted at C{prefix}.

    @param endpoint: the endpoint it serves (its path goes in the title).
    """
    path = getattr(endpoint, "path", "")
    publish = _post(
        "Publish on one channel or several",
        "PublishOne",
        "Published",
        *_COMMON,
        404,
        503,
    )
    publish["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "oneOf": [_ref("PublishOne"), _ref("PublishMany")]
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"txgraphsse server API{' of ' + path if path else ''}",
            "version": "1",
            "description": "See PROTOCOL.md, section 4.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "apikey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Authorization: apikey KEY",
                },
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apikey": []}, {"bearer": []}],
        "paths": {
            f"{prefix}/publish": publish,
            f"{prefix}/call": _post(
                "Run a client's route on its session",
                "Call",
                "CallResult",
                *_COMMON,
                404,
                502,
                504,
            ),
            f"{prefix}/presence": _get(
                "Who is in a channel", ["channel"], "Presence", 400, 401, 403, 404, 429
            ),
            f"{prefix}/history": _get(
                "A channel's kept events",
                ["channel", "since"],
                "History",
                400,
                401,
                403,
                404,
                429,
            ),
            f"{prefix}/disconnect": _post(
                "End a session's stream, or a subject's",
                "Disconnect",
                "Disconnected",
                *_COMMON,
            ),
        },
    }
