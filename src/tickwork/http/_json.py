"""How instances, attempts, schedules, nodes and events look in JSON.

Times are RFC 3339 strings in UTC (``2030-01-01T09:00:00Z``); durations are seconds.
``params`` is given twice: ``params_b64`` (the stored bytes, base64) always, and
``params`` decoded from msgpack when it decodes to a JSON value (else null).
"""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Any

import cronsim

from tickwork._time import from_us
from tickwork.events import TransitionEvent
from tickwork.model import Attempt, Instance, unpack
from tickwork.notify import Notify
from tickwork.schedules.schedule import Schedule
from tickwork.schedules.triggers import Cron
from tickwork.stores.cluster import NodeInfo

__all__ = [
    "attempt_doc",
    "event_doc",
    "explain",
    "instance_doc",
    "iso",
    "node_doc",
    "notify_doc",
    "schedule_doc",
]

_MAX_DEPTH = 32


def iso(value: int | datetime | None) -> str | None:
    """UTC microseconds or an aware datetime as RFC 3339 (``Z``), None as None."""
    if value is None:
        return None
    dt = from_us(value) if isinstance(value, int) else value
    return dt.isoformat().replace("+00:00", "Z")


class _NotJson(Exception):
    pass


def _jsonable(obj: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise _NotJson
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise _NotJson
        return obj
    if isinstance(obj, datetime):
        return iso(obj)
    if isinstance(obj, list | tuple):
        return [_jsonable(x, depth + 1) for x in obj]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {k: _jsonable(v, depth + 1) for k, v in obj.items()}
    raise _NotJson


def params_value(params: bytes) -> Any:
    """``params`` decoded from msgpack as a JSON value, or None."""
    if not params:
        return None
    try:
        return _jsonable(unpack(params))
    except (_NotJson, ValueError, TypeError, RecursionError, Exception):  # noqa: BLE001
        # msgpack raises several types (ExtraData, FormatError, StackError...) for bytes
        # that are not msgpack: they are shown as base64 only.
        return None


def instance_doc(inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.id,
        "task": inst.task,
        "state": inst.state.name,
        "run_at": iso(inst.run_at_us),
        "started_at": iso(inst.started_us),
        "params": params_value(inst.params),
        "params_b64": base64.b64encode(inst.params).decode("ascii"),
        "attempts": inst.attempts,
        "max_attempts": inst.max_attempts,
        "timeout_seconds": None if inst.timeout_us is None else inst.timeout_us / 1e6,
        "error": inst.error,
        "owner": inst.owner,
        "schedule_id": inst.schedule_id,
        "fire_at": iso(inst.fire_at_us),
        "dedup_key": inst.dedup_key,
        "retry_of": inst.retry_of,
        "run_now_of": inst.run_now_of,
        "created_at": iso(inst.created_us),
        "updated_at": iso(inst.updated_us),
    }


def attempt_doc(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "node": a.node,
        "state": a.state.name,
        "started_at": iso(a.started_us),
        "finished_at": iso(a.finished_us),
        "duration_seconds": (a.finished_us - a.started_us) / 1e6,
        "error_type": a.error_type,
        "error": a.error,
        "result": a.result,
        "output": None
        if a.output is None
        else {
            "exit_code": a.output.exit_code,
            "stdout": a.output.stdout,
            "stderr": a.output.stderr,
        },
    }


def explain(trigger: object) -> str:
    """A schedule's rule in plain English (cronsim's explainer for cron expressions)."""
    if isinstance(trigger, Cron):
        try:
            text = str(cronsim.CronSim(trigger.expr, datetime(2000, 1, 1)).explain())  # noqa: DTZ001 - only the text is used
        except Exception:  # noqa: BLE001 - an expression the explainer does not cover
            text = f"cron {trigger.expr}"
        return f"{text} ({trigger.timezone})"
    return trigger.describe() if hasattr(trigger, "describe") else str(trigger)


def schedule_doc(s: Schedule) -> dict[str, Any]:
    trig = s.trigger
    doc: dict[str, Any] = {
        "id": s.id,
        "task": s.task,
        "description": explain(trig),
        "params": params_value(s.params),
        "params_b64": base64.b64encode(s.params).decode("ascii"),
        "start_at": iso(s.start_at_us),
        "end_at": iso(s.end_at_us),
        "jitter_seconds": s.jitter_us / 1e6,
        "misfire": s.misfire.value,
        "grace_seconds": s.grace_us / 1e6,
        "catchup_limit": s.catchup_limit,
        "overlap": s.overlap.value,
        "paused": s.paused,
        "ended": s.ended,
        "last_fire_at": iso(s.last_fire_us),
        "created_at": iso(s.created_us),
        "updated_at": iso(s.updated_us),
        "notify": None if s.notify is None else notify_doc(s.notify),
    }
    if isinstance(trig, Cron):
        doc["cron"] = {"expr": trig.expr, "timezone": trig.timezone}
        doc["every_seconds"] = None
    else:
        doc["cron"] = None
        doc["every_seconds"] = trig.every.total_seconds()
    return doc


def notify_doc(n: Notify) -> dict[str, Any]:
    """A schedule's ``notify`` as the API reads and writes it (durations in seconds)."""
    return {
        "url": n.url,
        "on": list(n.on),
        "overdue_after_seconds": None
        if n.overdue_after is None
        else n.overdue_after.total_seconds(),
        "min_interval_seconds": n.min_interval.total_seconds(),
        "timeout_seconds": n.timeout,
    }


def node_doc(n: NodeInfo) -> dict[str, Any]:
    return {
        "node_id": n.node_id,
        "started_at": iso(n.started_us),
        "last_heartbeat_at": iso(n.last_heartbeat_us),
        "stopped_at": iso(n.stopped_us),
        "alive": n.alive,
        "held": n.held,
        "running": n.running,
        "host": n.host,
        "pid": n.pid,
        "version": n.version,
    }


def event_doc(e: TransitionEvent) -> dict[str, Any]:
    return {
        "instance_id": e.instance_id,
        "task": e.task,
        "from": e.from_state.name,
        "to": e.to_state.name,
        "time": iso(e.at_us),
        "node": e.node,
    }
