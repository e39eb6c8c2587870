"""How ``tickwork cron`` shows schedules: one dict per schedule (what ``--json`` prints), the
table of ``cron ls``, and fire times in the schedule's zone."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from tickwork._time import from_us
from tickwork.cli._format import dump_json, short, table
from tickwork.model import unpack
from tickwork.notify import notify_to_json
from tickwork.schedules.plan import due_at
from tickwork.schedules.schedule import Schedule
from tickwork.schedules.triggers import Cron
from tickwork.tasks.bash import BashTask

__all__ = [
    "local_iso",
    "local_time",
    "next_fire",
    "rule_text",
    "schedule_dict",
    "schedules_table",
    "utc_text",
    "zone_of",
]


def next_fire(s: Schedule, now_us: int) -> int | None:
    if s.paused or s.ended:
        return None
    fire = s.next_fire_after(now_us)
    return None if fire is None else due_at(s, fire)


def local_time(us: int, zone: str) -> str:
    return from_us(us).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def utc_text(us: int) -> str:
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%SZ")


def zone_of(s: Schedule) -> str:
    return s.trigger.timezone if isinstance(s.trigger, Cron) else "UTC"


def rule_text(s: Schedule) -> str:
    if isinstance(s.trigger, Cron):
        return s.trigger.expr
    return s.trigger.describe()


def _command(s: Schedule) -> str:
    try:
        params = unpack(s.params) if s.params else None
    except Exception:  # noqa: BLE001 - params a user stored as raw bytes
        return "<bytes>"
    if s.task == BashTask.name and isinstance(params, dict) and "cmd" in params:
        user = params.get("user")
        return str(params["cmd"]) if user is None else f"(as {user}) {params['cmd']}"
    return f"{s.task} {dump_json(params, indent=None)}"


def _state(s: Schedule) -> str:
    return "paused" if s.paused else "ended" if s.ended else "active"


def schedule_dict(s: Schedule, now_us: int) -> dict[str, Any]:
    """One schedule as ``--json`` prints it (times ISO-8601 with offset)."""
    trigger: dict[str, Any]
    if isinstance(s.trigger, Cron):
        trigger = {"kind": "cron", "expr": s.trigger.expr, "timezone": s.trigger.timezone}
    else:
        trigger = {
            "kind": "interval",
            "every_seconds": s.trigger.every.total_seconds(),
            "start": None if s.trigger.start is None else s.trigger.start.isoformat(),
        }
    try:
        params: Any = unpack(s.params) if s.params else None
    except Exception:  # noqa: BLE001 - raw bytes
        params = {"bytes": len(s.params)}
    nxt = next_fire(s, now_us)

    def iso(us: int | None) -> str | None:
        return None if us is None else from_us(us).isoformat()

    return {
        "id": s.id,
        "task": s.task,
        "trigger": trigger,
        "describe": s.trigger.describe(),
        "params": params,
        "state": _state(s),
        "next_fire_at": iso(nxt),
        "next_fire_local": None if nxt is None else from_us(nxt).astimezone(ZoneInfo(zone_of(s))),
        "misfire": s.misfire.value,
        "overlap": s.overlap.value,
        "grace_seconds": s.grace.total_seconds(),
        "catchup_limit": s.catchup_limit,
        "jitter_seconds": s.jitter.total_seconds(),
        "start_at": iso(s.start_at_us),
        "end_at": iso(s.end_at_us),
        "last_fire_at": iso(s.last_fire_us),
        "created_at": iso(s.created_us),
        "updated_at": iso(s.updated_us),
        "notify": None if s.notify is None else json.loads(notify_to_json(s.notify)),
    }


def schedules_table(schedules: list[Schedule], now_us: int) -> str:
    rows = []
    for s in schedules:
        nxt = next_fire(s, now_us)
        rows.append(
            (
                s.id,
                rule_text(s),
                zone_of(s),
                "-" if nxt is None else local_time(nxt, zone_of(s)),
                "-" if nxt is None else utc_text(nxt),
                _state(s),
                s.misfire.value,
                s.overlap.value,
                short(_command(s), 50),
            )
        )
    headers = ("ID", "SCHEDULE", "ZONE", "NEXT (ZONE)", "NEXT (UTC)", "STATE", "MISFIRE")
    return table((*headers, "OVERLAP", "COMMAND"), rows)


def local_iso(us: int, zone: str) -> str:
    return from_us(us).astimezone(ZoneInfo(zone)).isoformat()
