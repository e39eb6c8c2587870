"""How the UI shows values: times, durations, states, params, schedules in words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import cronsim
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.templating import Jinja2Templates

from tickwork._time import from_us
from tickwork.cli._format import format_duration
from tickwork.model import unpack
from tickwork.schedules.triggers import Cron

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.schedules.schedule import Schedule

__all__ = ["templates", "write_allowed"]

#: What a missing value shows (an en dash).
_NONE = "\u2013"


def _time(us: int | None) -> str:
    """UTC microseconds as ``2026-12-01 09:00:00 UTC`` (the page says UTC once)."""
    if us is None:
        return _NONE
    return from_us(us).strftime("%Y-%m-%d %H:%M:%S")


def _iso(us: int | None) -> str:
    return "" if us is None else from_us(us).isoformat().replace("+00:00", "Z")


def _ago(us: int | None, now_us: int) -> str:
    """``3m ago`` / ``in 5s`` relative to ``now_us``."""
    if us is None:
        return _NONE
    gap = now_us - us
    text = format_duration(timedelta(microseconds=abs(gap)))
    if abs(gap) < 1_000_000:
        return "now"
    return f"{text} ago" if gap > 0 else f"in {text}"


def _duration_us(us: int | None) -> str:
    return _NONE if us is None else format_duration(timedelta(microseconds=us))


def params_text(params: bytes) -> str:
    """Params as pretty JSON when they are msgpack, else their size and base64 head."""
    if not params:
        return ""
    try:
        value: Any = unpack(params)
    except Exception:  # noqa: BLE001 - params may be any bytes a user stored
        return f"<{len(params)} bytes, not msgpack>"
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr, sort_keys=False)


def params_short(params: bytes, width: int = 70) -> str:
    """One line: a bash command as ``$ cmd``, other params as compact JSON."""
    try:
        value: Any = unpack(params) if params else None
    except Exception:  # noqa: BLE001 - params may be any bytes a user stored
        value = None
    if isinstance(value, dict) and isinstance(value.get("cmd"), str):
        text = "$ " + " ".join(value["cmd"].split())
    else:
        text = " ".join(params_text(params).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def trigger_words(schedule: Schedule) -> str:
    """The schedule's rule in plain English (cronsim's explainer for cron)."""
    trigger = schedule.trigger
    if isinstance(trigger, Cron):
        try:
            return str(cronsim.CronSim(trigger.expr, datetime.now(UTC)).explain())
        except Exception:  # noqa: BLE001 - an expression the explainer does not cover
            return trigger.expr
    return f"Every {format_duration(trigger.every)}"


def trigger_text(schedule: Schedule) -> str:
    trigger = schedule.trigger
    if isinstance(trigger, Cron):
        return trigger.expr
    return f"every {format_duration(trigger.every)}"


def trigger_zone(schedule: Schedule) -> str:
    trigger = schedule.trigger
    return trigger.timezone if isinstance(trigger, Cron) else "UTC"


def _in_zone(moment: datetime, zone: str) -> str:
    """``moment`` as wall time in ``zone``: ``02:30 CET``."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%H:%M %Z")


def write_allowed(request: Request) -> bool:
    """Whether to show the buttons that change things: not for a read-scope token.

    Without the app's auth middleware (an embedder mounting the pages alone) there is no
    scope: the embedder decides who reaches them.
    """
    if not hasattr(request.state, "auth_scope"):
        return True
    return bool(request.state.auth_scope == "admin")


def csrf_token(request: Request) -> str:
    return str(getattr(request.state, "csrf_token", None) or "")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tickwork.http.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _time
    env.filters["iso"] = _iso
    env.filters["duration_us"] = _duration_us
    env.filters["params_short"] = params_short
    env.filters["params_text"] = params_text
    env.globals["ago"] = _ago
    env.globals["trigger_words"] = trigger_words
    env.globals["trigger_text"] = trigger_text
    env.globals["trigger_zone"] = trigger_zone
    env.globals["in_zone"] = _in_zone
    return env


templates = Jinja2Templates(env=_environment())
