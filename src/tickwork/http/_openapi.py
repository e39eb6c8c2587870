"""The OpenAPI 3.1 document of the JSON API (``/api/openapi.json``), written by hand.

``tests/test_http_fuzz.py`` fuzzes every operation from it with schemathesis and checks
every response against it, so it has to stay true.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from tickwork.http._api_instances import MAX_BATCH

__all__ = ["openapi_document"]

_STATES: Final = ["PENDING", "CLAIMED", "RUNNING", "SUCCEEDED", "FAILED", "ABORTED", "MISSED"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME: Final = {"type": "string", "format": "date-time"}
_ANY: Final[dict[str, Any]] = {}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (query parameter, JSON)",
        401: "No valid token",
        403: "Refused (scope, CSRF, cross-site)",
        404: "Not found",
        409: "Conflicts with the current state",
        413: "Body over the limit",
        415: "Body is not JSON",
        422: "Invalid field",
        503: "The node is stopping or its store is failing",
    }
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes} | {
        "x-descriptions": text  # dropped below; keeps the table beside the codes
    }


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out = dict(ok)
    for c in (*codes, 401, 403, 503):
        out[str(c)] = {"$ref": f"#/components/responses/E{c}"}
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_IID: Final = {
    "name": "instance_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}
_SID: Final = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": r"^[^\s\x00-\x1f\x7f/]+$",
    },
}


def _schemas() -> dict[str, Any]:
    instance = {
        "type": "object",
        "required": ["id", "task", "state", "run_at", "params", "params_b64", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "task": {"type": "string"},
            "state": {"enum": _STATES},
            "run_at": _TIME,
            "params": {"description": "params decoded from msgpack, null if not JSON"},
            "params_b64": {"type": "string"},
            "attempts": {"type": "integer"},
            "max_attempts": _nullable({"type": "integer"}),
            "timeout_seconds": _nullable({"type": "number"}),
            "error": _nullable({"type": "string"}),
            "owner": _nullable({"type": "string"}),
            "schedule_id": _nullable({"type": "string"}),
            "fire_at": _nullable(_TIME),
            "dedup_key": _nullable({"type": "string"}),
            "retry_of": _nullable({"type": "integer"}),
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    }
    new_instance = {
        "type": "object",
        "additionalProperties": False,
        "required": ["task", "at"],
        "properties": {
            "task": {"type": "string", "minLength": 1},
            "at": _TIME,
            "params": {"description": "any JSON value, packed with msgpack"},
            "dedup_key": _nullable({"type": "string", "minLength": 1, "maxLength": 1000}),
            "max_attempts": _nullable({"type": "integer", "minimum": 1, "maximum": 1000000}),
            "timeout_seconds": _nullable({"type": "number", "exclusiveMinimum": 0}),
        },
    }
    schedule = {
        "type": "object",
        "required": ["id", "task", "description", "paused", "ended"],
        "properties": {
            "id": {"type": "string"},
            "task": {"type": "string"},
            "description": {"type": "string", "description": "the rule in plain English"},
            "cron": _nullable(_ref("CronRule")),
            "every_seconds": _nullable({"type": "number"}),
            "params": _ANY,
            "params_b64": {"type": "string"},
            "start_at": _nullable(_TIME),
            "end_at": _nullable(_TIME),
            "jitter_seconds": {"type": "number"},
            "misfire": {"enum": ["run_once", "run_all", "skip"]},
            "grace_seconds": {"type": "number"},
            "catchup_limit": {"type": "integer"},
            "overlap": {"enum": ["allow", "skip", "queue", "cancel_previous"]},
            "paused": {"type": "boolean"},
            "ended": {"type": "boolean"},
            "last_fire_at": _nullable(_TIME),
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    }
    new_schedule = {
        "type": "object",
        "additionalProperties": False,
        "required": ["task"],
        "description": "exactly one of cron and every_seconds",
        "properties": {
            "id": _nullable({"type": "string", "minLength": 1, "maxLength": 200}),
            "task": {"type": "string", "minLength": 1},
            "cron": _nullable(_ref("CronRule")),
            "every_seconds": _nullable({"type": "number", "exclusiveMinimum": 0}),
            "params": _ANY,
            "start_at": _nullable(_TIME),
            "end_at": _nullable(_TIME),
            "jitter_seconds": _nullable({"type": "number", "minimum": 0}),
            "misfire": _nullable({"enum": ["run_once", "run_all", "skip"]}),
            "grace_seconds": _nullable({"type": "number", "minimum": 0}),
            "catchup_limit": _nullable({"type": "integer", "minimum": 1}),
            "overlap": _nullable({"enum": ["allow", "skip", "queue", "cancel_previous"]}),
            "paused": _nullable({"type": "boolean"}),
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Instance": instance,
        "NewInstance": new_instance,
        "InstancePage": {
            "type": "object",
            "required": ["items", "next_before_id"],
            "properties": {
                "items": {"type": "array", "items": _ref("Instance")},
                "next_before_id": _nullable({"type": "integer"}),
            },
        },
        "Attempt": {
            "type": "object",
            "required": ["attempt", "state", "started_at", "finished_at"],
            "properties": {
                "attempt": {"type": "integer"},
                "node": _nullable({"type": "string"}),
                "state": {"enum": _STATES},
                "started_at": _TIME,
                "finished_at": _TIME,
                "duration_seconds": {"type": "number"},
                "error_type": _nullable({"type": "string"}),
                "error": _nullable({"type": "string"}),
                "result": _nullable({"type": "string"}),
                "output": _nullable(
                    {
                        "type": "object",
                        "description": "what the run printed (tails) and its exit code",
                        "required": ["exit_code", "stdout", "stderr"],
                        "properties": {
                            "exit_code": _nullable({"type": "integer"}),
                            "stdout": {"type": "string"},
                            "stderr": {"type": "string"},
                        },
                    }
                ),
            },
        },
        "CronRule": {
            "type": "object",
            "additionalProperties": False,
            "required": ["expr"],
            "properties": {
                "expr": {"type": "string"},
                "timezone": {"type": "string", "default": "UTC"},
            },
        },
        "Schedule": schedule,
        "NewSchedule": new_schedule,
        "Node": {
            "type": "object",
            "required": ["node_id", "alive"],
            "properties": {
                "node_id": {"type": "string"},
                "started_at": _TIME,
                "last_heartbeat_at": _TIME,
                "stopped_at": _nullable(_TIME),
                "alive": {"type": "boolean"},
                "held": {"type": "integer"},
                "running": _nullable({"type": "integer"}),
                "host": _nullable({"type": "string"}),
                "pid": _nullable({"type": "integer"}),
                "version": _nullable({"type": "string"}),
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _paths() -> dict[str, Any]:
    inst = _json(_ref("Instance"), "The instance")
    sched = _json(_ref("Schedule"), "The schedule")
    page = _json(_ref("InstancePage"), "A page, newest first")
    time_q = {"type": "string", "format": "date-time"}
    return {
        "/api/instances": {
            "get": {
                "operationId": "listInstances",
                "summary": "List instances, newest first, with filters and keyset pages",
                "parameters": [
                    _query("state", {"enum": _STATES + [s.lower() for s in _STATES]}, "State"),
                    _query("task", {"type": "string"}, "Task name"),
                    _query("schedule_id", {"type": "string"}, "Schedule id"),
                    _query("due_after", time_q, "Due at or after"),
                    _query("due_before", time_q, "Due before"),
                    _query("ended_after", time_q, "Ended (terminal) at or after"),
                    _query("ended_before", time_q, "Ended before"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                    _query(
                        "before_id",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "Only ids below (the previous page's next_before_id)",
                    ),
                ],
                "responses": _responses({"200": page}, 400, 422),
            },
            "post": {
                "operationId": "createInstance",
                "summary": "Schedule one instance",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewInstance")}},
                },
                "responses": _responses({"201": inst}, 400, 413, 415, 422),
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
                                        "items": _ref("NewInstance"),
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": _responses(
                    {
                        "201": _json(
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
                "parameters": [_IID],
                "responses": _responses({"200": inst}, 404),
            }
        },
        "/api/instances/{instance_id}/history": {
            "get": {
                "operationId": "instanceHistory",
                "summary": "Every recorded attempt, oldest first",
                "parameters": [_IID],
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Attempt")}
                                },
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
                "parameters": [_IID],
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["id", "state"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "state": {"enum": _STATES},
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
                "parameters": [_IID],
                "responses": _responses({"201": inst}, 404, 409, 422),
            }
        },
        "/api/schedules": {
            "get": {
                "operationId": "listSchedules",
                "parameters": [
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                    _query("after_id", {"type": "string"}, "Only ids after (next_after_id)"),
                ],
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "next_after_id"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Schedule")},
                                    "next_after_id": _nullable({"type": "string"}),
                                },
                            },
                            "A page, in id order",
                        )
                    },
                    400,
                ),
            },
            "post": {
                "operationId": "createSchedule",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewSchedule")}},
                },
                "responses": _responses(
                    {
                        "201": sched,
                        "200": _json(_ref("Schedule"), "Unchanged: it existed as given"),
                    },
                    400,
                    409,
                    413,
                    415,
                    422,
                ),
            },
        },
        "/api/schedules/{schedule_id}": {
            "get": {
                "operationId": "getSchedule",
                "parameters": [_SID],
                "responses": _responses({"200": sched}, 404),
            },
            "put": {
                "operationId": "replaceSchedule",
                "summary": "Create or replace (its pending occurrences are aborted)",
                "parameters": [_SID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewSchedule")}},
                },
                "responses": _responses(
                    {"200": sched, "201": _json(_ref("Schedule"), "Created")},
                    400,
                    404,
                    413,
                    415,
                    422,
                ),
            },
            "delete": {
                "operationId": "removeSchedule",
                "parameters": [_SID],
                "responses": _responses({"204": {"description": "Removed"}}, 404),
            },
        },
        "/api/schedules/{schedule_id}/pause": {
            "post": {
                "operationId": "pauseSchedule",
                "parameters": [_SID],
                "responses": _responses({"200": sched}, 404),
            }
        },
        "/api/schedules/{schedule_id}/resume": {
            "post": {
                "operationId": "resumeSchedule",
                "parameters": [_SID],
                "responses": _responses({"200": sched}, 404),
            }
        },
        "/api/schedules/{schedule_id}/run-now": {
            "post": {
                "operationId": "runScheduleNow",
                "summary": "A one-off instance of the schedule's task and params, due now",
                "parameters": [_SID],
                "responses": _responses({"201": inst}, 404, 422),
            }
        },
        "/api/schedules/{schedule_id}/next": {
            "get": {
                "operationId": "nextFireTimes",
                "parameters": [
                    _SID,
                    _query("n", {"type": "integer", "minimum": 1, "maximum": 1000}, "How many"),
                ],
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["times"],
                                "properties": {"times": {"type": "array", "items": _TIME}},
                            },
                            "Fire times after now",
                        )
                    },
                    400,
                    404,
                ),
            }
        },
        "/api/schedules/{schedule_id}/runs": {
            "get": {
                "operationId": "scheduleRuns",
                "summary": "The schedule's occurrences, newest first",
                "parameters": [
                    _SID,
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                    _query(
                        "before_id",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "Keyset page",
                    ),
                ],
                "responses": _responses({"200": page}, 400, 404),
            }
        },
        "/api/stats": {
            "get": {
                "operationId": "stats",
                "summary": "This node's statistics and the stored counts per state",
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["node_id", "stored", "in_memory", "running"],
                                "properties": {
                                    "node_id": {"type": "string"},
                                    "stored": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "counted_at": _nullable(_TIME),
                                    "in_memory": {"type": "integer"},
                                    "running": {"type": "integer"},
                                },
                            },
                            "Statistics",
                        )
                    }
                ),
            }
        },
        "/api/nodes": {
            "get": {
                "operationId": "nodes",
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": _ref("Node")}},
                            },
                            "The nodes",
                        )
                    }
                ),
            }
        },
        "/api/session": {
            "get": {
                "operationId": "session",
                "summary": "The caller's scope and the CSRF token of its session (if any)",
                "responses": _responses(
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["scope", "csrf_token"],
                                "properties": {
                                    "scope": {"enum": ["read", "admin", None]},
                                    "csrf_token": _nullable({"type": "string"}),
                                },
                            },
                            "The session",
                        )
                    }
                ),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process answers (no token needed)",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "Up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store answers and the node runs (no token needed)",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Ready"),
                    "503": _json(_ref("Health"), "Not ready"),
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    responses = {
        f"E{code}": {
            "description": text,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code, text in _errors(400, 401, 403, 404, 409, 413, 415, 422, 503)
        .pop("x-descriptions")
        .items()
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
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    from tickwork import __version__  # noqa: PLC0415 - the package imports this module

    return __version__
