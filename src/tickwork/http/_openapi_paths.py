"""The OpenAPI document's operations on schedules, and the node's (see ``_openapi``)."""

from __future__ import annotations

from typing import Any

from tickwork.http._openapi_schemas import (
    SID,
    TIME,
    json_content,
    nullable,
    query,
    ref,
    responses,
)

__all__ = ["other_paths"]


def other_paths() -> dict[str, Any]:
    """The operations on schedules, and the node's."""
    inst = json_content(ref("Instance"), "The instance")
    sched = json_content(ref("Schedule"), "The schedule")
    page = json_content(ref("InstancePage"), "A page, newest first")
    return {
        "/api/schedules": {
            "get": {
                "operationId": "listSchedules",
                "parameters": [
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
                    query("after_id", {"type": "string"}, "Only ids after (next_after_id)"),
                ],
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["items", "next_after_id"],
                                "properties": {
                                    "items": {"type": "array", "items": ref("Schedule")},
                                    "next_after_id": nullable({"type": "string"}),
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
                    "content": {"application/json": {"schema": ref("NewSchedule")}},
                },
                "responses": responses(
                    {
                        "201": sched,
                        "200": json_content(ref("Schedule"), "Unchanged: it existed as given"),
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
                "parameters": [SID],
                "responses": responses({"200": sched}, 404),
            },
            "put": {
                "operationId": "replaceSchedule",
                "summary": "Create or replace (its pending occurrences are aborted)",
                "parameters": [SID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("NewSchedule")}},
                },
                "responses": responses(
                    {"200": sched, "201": json_content(ref("Schedule"), "Created")},
                    400,
                    404,
                    413,
                    415,
                    422,
                ),
            },
            "delete": {
                "operationId": "removeSchedule",
                "parameters": [SID],
                "responses": responses({"204": {"description": "Removed"}}, 404),
            },
        },
        "/api/schedules/{schedule_id}/pause": {
            "post": {
                "operationId": "pauseSchedule",
                "parameters": [SID],
                "responses": responses({"200": sched}, 404),
            }
        },
        "/api/schedules/{schedule_id}/resume": {
            "post": {
                "operationId": "resumeSchedule",
                "parameters": [SID],
                "responses": responses({"200": sched}, 404),
            }
        },
        "/api/schedules/{schedule_id}/run-now": {
            "post": {
                "operationId": "runScheduleNow",
                "summary": "A one-off instance of the schedule's task and params, due now",
                "parameters": [SID],
                "responses": responses({"201": inst}, 404, 422),
            }
        },
        "/api/schedules/{schedule_id}/next": {
            "get": {
                "operationId": "nextFireTimes",
                "parameters": [
                    SID,
                    query("n", {"type": "integer", "minimum": 1, "maximum": 1000}, "How many"),
                ],
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["times"],
                                "properties": {"times": {"type": "array", "items": TIME}},
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
                    SID,
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
                    query(
                        "before_id",
                        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "Keyset page",
                    ),
                ],
                "responses": responses({"200": page}, 400, 404),
            }
        },
        "/api/stats": {
            "get": {
                "operationId": "stats",
                "summary": "This node's statistics and the stored counts per state",
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["node_id", "stored", "in_memory", "running"],
                                "properties": {
                                    "node_id": {"type": "string"},
                                    "stored": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "counted_at": nullable(TIME),
                                    "missed_last_hour": {
                                        "description": (
                                            "instances recorded MISSED in the last hour by "
                                            "reason (misfire, overlap, paused, other), among "
                                            "the newest 500 MISSED"
                                        ),
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "missed_last_hour_more": {"type": "boolean"},
                                    "in_memory": {"type": "integer"},
                                    "running": {"type": "integer"},
                                    "gauges": {
                                        "description": (
                                            "current values, which go up and down "
                                            "(SchedulerStatistics.gauges)"
                                        ),
                                        "type": "object",
                                    },
                                    "counters": {
                                        "description": (
                                            "totals since the node started, which only "
                                            "grow (SchedulerStatistics.counters)"
                                        ),
                                        "type": "object",
                                    },
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
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": ref("Node")}},
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
                "responses": responses(
                    {
                        "200": json_content(
                            {
                                "type": "object",
                                "required": ["scope", "csrf_token"],
                                "properties": {
                                    "scope": {"enum": ["read", "admin", None]},
                                    "csrf_token": nullable({"type": "string"}),
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
                "responses": {"200": json_content(ref("Health"), "Up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store answers and the node runs (no token needed)",
                "security": [],
                "responses": {
                    "200": json_content(ref("Health"), "Ready"),
                    "503": json_content(ref("Health"), "Not ready"),
                },
            }
        },
    }
