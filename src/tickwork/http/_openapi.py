"""The OpenAPI 3.1 document of the JSON API (``/api/openapi.json``), written by hand.

``tests/test_http_fuzz.py`` fuzzes every operation from it with schemathesis and checks
every response against it, so it has to stay true.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tickwork.http._api_instances import MAX_BATCH
from tickwork.http._openapi_paths import other_paths
from tickwork.http._openapi_schemas import (
    ERRORS,
    IID,
    STATES,
    component_schemas,
    json_content,
    query,
    ref,
    responses,
)

__all__ = ["openapi_document"]


def instance_paths() -> dict[str, Any]:
    """The operations on instances."""
    inst = json_content(ref("Instance"), "The instance")
    page = json_content(ref("InstancePage"), "A page, newest first")
    time_q = {"type": "string", "format": "date-time"}
    return {
        "/api/instances": {
            "get": {
                "operationId": "listInstances",
                "summary": "List instances, newest first, with filters and keyset pages",
                "parameters": [
                    query("state", {"enum": STATES + [s.lower() for s in STATES]}, "State"),
                    query("task", {"type": "string"}, "Task name"),
                    query("schedule_id", {"type": "string"}, "Schedule id"),
                    query("due_after", time_q, "Due at or after"),
                    query("due_before", time_q, "Due before"),
                    query("ended_after", time_q, "Ended (terminal) at or after"),
                    query("ended_before", time_q, "Ended before"),
                    query(
                        "upcoming",
                        {"enum": ["true", "false"]},
                        "true: only what is still to come (PENDING or CLAIMED, due from now); "
                        "false: the history (everything else); absent: both",
                    ),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
                    query(
                        "before_id",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "Only ids below (the previous page's next_before_id)",
                    ),
                ],
                "responses": responses({"200": page}, 400, 422),
            },
            "post": {
                "operationId": "createInstance",
                "summary": "Schedule one instance",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NewInstance")}},
                },
                "responses": responses({"201": inst}, 400, 413, 415, 422),
            },
        },
        "/api/instances/batch": {
            "post": {
                "operationId": "createInstances",
                "summary": "Schedule many instances in one transaction (all or none)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["instances"],
                                "properties": {
                                    "instances": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_BATCH,
                                        "items": ref("NewInstance"),
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": responses(
                    {
                        "201": json_content(
                            {
                                "type": "object",
                                "required": ["ids"],
                                "properties": {
                                    "ids": {"type": "array", "items": {"type": "integer"}}
                                },
                            },
                            "The ids, in order",
                        )
                    },
                    400,
                    413,
                    415,
                    422,
                ),
            }
        },
        "/api/instances/{instance_id}": {
            "get": {
                "operationId": "getInstance",
                "parameters": [IID],
                "responses": responses({"200": inst}, 404),
            }
        },
        "/api/instances/{instance_id}/history": {
            "get": {
                "operationId": "instanceHistory",
                "summary": "Every recorded attempt, oldest first",
                "parameters": [IID],
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": ref("Attempt")}},
                            },
                            "The attempts",
                        )
                    },
                    404,
                ),
            }
        },
        "/api/instances/{instance_id}/abort": {
            "post": {
                "operationId": "abortInstance",
                "parameters": [IID],
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["id", "state"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "state": {"enum": STATES},
                                },
                            },
                            "The state after the abort",
                        )
                    },
                    404,
                ),
            }
        },
        "/api/instances/{instance_id}/retry": {
            "post": {
                "operationId": "retryInstance",
                "summary": "Run a FAILED, ABORTED or MISSED instance again (a new linked one)",
                "parameters": [IID],
                "responses": responses({"201": inst}, 404, 409, 422),
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    responses = {
        f"E{code}": {
            "description": text,
            "content": {"application/json": {"schema": ref("Error")}},
        }
        for code, text in ERRORS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tickwork",
            "version": _version(),
            "description": "The HTTP API of a tickwork node (docs/http.md). "
            "The event stream is GET /api/events (text/event-stream) and metrics GET /metrics.",
        },
        "security": [{"bearer": []}],
        "paths": instance_paths() | other_paths(),
        "components": {
            "schemas": component_schemas(),
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    from tickwork import __version__  # noqa: PLC0415 - the package imports this module

    return __version__
