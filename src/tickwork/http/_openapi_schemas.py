"""The OpenAPI document's building blocks and component schemas (see ``_openapi``)."""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ANY",
    "ERRORS",
    "IID",
    "SID",
    "STATES",
    "TIME",
    "component_schemas",
    "json_content",
    "nullable",
    "query",
    "ref",
    "responses",
]

STATES: Final = ["PENDING", "CLAIMED", "RUNNING", "SUCCEEDED", "FAILED", "ABORTED", "MISSED"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIME: Final = {"type": "string", "format": "date-time"}
ANY: Final[dict[str, Any]] = {}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: What each error status means (each is a response of the Error shape).
ERRORS: Final = {
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


def responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    """``ok`` and the error responses ``codes`` (401, 403 and 503 always)."""
    out = dict(ok)
    for c in (*codes, 401, 403, 503):
        out[str(c)] = {"$ref": f"#/components/responses/E{c}"}
    return out


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


IID: Final = {
    "name": "instance_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}
SID: Final = {
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


def component_schemas() -> dict[str, Any]:
    instance = {
        "type": "object",
        "required": ["id", "task", "state", "run_at", "params", "params_b64", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "task": {"type": "string"},
            "state": {"enum": STATES},
            "run_at": TIME,
            "started_at": {
                **nullable(TIME),
                "description": "when the run in progress started (RUNNING), else null",
            },
            "params": {"description": "params decoded from msgpack, null if not JSON"},
            "params_b64": {"type": "string"},
            "attempts": {"type": "integer"},
            "max_attempts": nullable({"type": "integer"}),
            "timeout_seconds": nullable({"type": "number"}),
            "error": nullable({"type": "string"}),
            "owner": nullable({"type": "string"}),
            "schedule_id": nullable({"type": "string"}),
            "fire_at": nullable(TIME),
            "dedup_key": nullable({"type": "string"}),
            "retry_of": nullable({"type": "integer"}),
            "run_now_of": nullable({"type": "string"}),
            "created_at": TIME,
            "updated_at": TIME,
        },
    }
    new_instance = {
        "type": "object",
        "additionalProperties": False,
        "required": ["task", "at"],
        "properties": {
            "task": {"type": "string", "minLength": 1},
            "at": TIME,
            "params": {"description": "any JSON value, packed with msgpack"},
            "dedup_key": nullable({"type": "string", "minLength": 1, "maxLength": 1000}),
            "max_attempts": nullable({"type": "integer", "minimum": 1, "maximum": 1000000}),
            "timeout_seconds": nullable({"type": "number", "exclusiveMinimum": 0}),
        },
    }
    schedule = {
        "type": "object",
        "required": ["id", "task", "description", "paused", "ended"],
        "properties": {
            "id": {"type": "string"},
            "task": {"type": "string"},
            "description": {"type": "string", "description": "the rule in plain English"},
            "cron": nullable(ref("CronRule")),
            "every_seconds": nullable({"type": "number"}),
            "params": ANY,
            "params_b64": {"type": "string"},
            "start_at": nullable(TIME),
            "end_at": nullable(TIME),
            "jitter_seconds": {"type": "number"},
            "misfire": {"enum": ["run_once", "run_all", "skip"]},
            "grace_seconds": {"type": "number"},
            "catchup_limit": {"type": "integer"},
            "overlap": {"enum": ["allow", "skip", "queue", "cancel_previous"]},
            "paused": {"type": "boolean"},
            "ended": {"type": "boolean"},
            "last_fire_at": nullable(TIME),
            "created_at": TIME,
            "updated_at": TIME,
            "notify": nullable(ref("Notify")),
        },
    }
    new_schedule = {
        "type": "object",
        "additionalProperties": False,
        "required": ["task"],
        "description": "exactly one of cron and every_seconds",
        "properties": {
            "id": nullable({"type": "string", "minLength": 1, "maxLength": 200}),
            "task": {"type": "string", "minLength": 1},
            "cron": nullable(ref("CronRule")),
            "every_seconds": nullable({"type": "number", "exclusiveMinimum": 0}),
            "params": ANY,
            "start_at": nullable(TIME),
            "end_at": nullable(TIME),
            "jitter_seconds": nullable({"type": "number", "minimum": 0}),
            "misfire": nullable({"enum": ["run_once", "run_all", "skip"]}),
            "grace_seconds": nullable({"type": "number", "minimum": 0}),
            "catchup_limit": nullable({"type": "integer", "minimum": 1}),
            "overlap": nullable({"enum": ["allow", "skip", "queue", "cancel_previous"]}),
            "paused": nullable({"type": "boolean"}),
            "notify": nullable(ref("NewNotify")),
        },
    }
    events = ["failed", "missed", "overdue"]
    seconds = {"type": "number", "exclusiveMinimum": 0, "maximum": 100 * 365 * 86400}
    new_notify = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "description": (
            "tickwork.Notify: post a notice to url when an occurrence fails for good, is "
            "missed or runs overdue (instead of the task's notify)"
        ),
        "properties": {
            "url": {"type": "string", "description": "an http:// or https:// URL"},
            "on": nullable(
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": events},
                    "default": events,
                }
            ),
            "overdue_after_seconds": nullable(
                {**seconds, "description": "null: no overdue notice"}
            ),
            "min_interval_seconds": nullable({**seconds, "default": 300}),
            "timeout_seconds": nullable({**seconds, "default": 10}),
        },
    }
    notify = {
        "type": "object",
        "required": [
            "url",
            "on",
            "overdue_after_seconds",
            "min_interval_seconds",
            "timeout_seconds",
        ],
        "properties": {
            "url": {"type": "string"},
            "on": {"type": "array", "items": {"enum": events}},
            "overdue_after_seconds": nullable({"type": "number"}),
            "min_interval_seconds": {"type": "number"},
            "timeout_seconds": {"type": "number"},
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
                "items": {"type": "array", "items": ref("Instance")},
                "next_before_id": nullable({"type": "integer"}),
            },
        },
        "Attempt": {
            "type": "object",
            "required": ["attempt", "state", "started_at", "finished_at"],
            "properties": {
                "attempt": {"type": "integer"},
                "node": nullable({"type": "string"}),
                "state": {"enum": STATES},
                "started_at": TIME,
                "finished_at": TIME,
                "duration_seconds": {"type": "number"},
                "error_type": nullable({"type": "string"}),
                "error": nullable({"type": "string"}),
                "result": nullable({"type": "string"}),
                "output": nullable(
                    {
                        "type": "object",
                        "description": "what the run printed (tails) and its exit code",
                        "required": ["exit_code", "stdout", "stderr"],
                        "properties": {
                            "exit_code": nullable({"type": "integer"}),
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
        "Notify": notify,
        "NewNotify": new_notify,
        "Node": {
            "type": "object",
            "required": ["node_id", "alive"],
            "properties": {
                "node_id": {"type": "string"},
                "started_at": TIME,
                "last_heartbeat_at": TIME,
                "stopped_at": nullable(TIME),
                "alive": {"type": "boolean"},
                "held": {"type": "integer"},
                "running": nullable({"type": "integer"}),
                "host": nullable({"type": "string"}),
                "pid": nullable({"type": "integer"}),
                "version": nullable({"type": "string"}),
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
