"""Output of the command line: aligned tables for people, JSON for machines.

Instances and attempts become plain dicts (:func:`instance_dict`, :func:`attempt_dict`)
that ``--json`` prints as they are and the text views render from, so both forms always
show the same facts. Log lines and errors are :mod:`tickwork.cli._reporting`'s.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickwork._time import from_us
from tickwork.model import unpack

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from tickwork.model import Attempt, Instance
    from tickwork.stores.cluster import NodeInfo

__all__ = [
    "attempt_dict",
    "dump_json",
    "format_duration",
    "instance_dict",
    "instances_table",
    "key_values",
    "node_dict",
    "nodes_table",
    "show_text",
    "stats_text",
    "table",
    "when",
]

log = logging.getLogger("tickwork.cli")

# -- values ---------------------------------------------------------------------------------


def iso(us: int | None) -> str | None:
    """UTC microseconds as ISO-8601 with offset (what ``--json`` prints), or None."""
    return None if us is None else from_us(us).isoformat()


#: Text views show times in the local time zone unless ``--utc`` set this (``--json``
#: always gives ISO-8601 UTC).
_display = {"utc": False}


def display_utc(flag: bool) -> None:
    """Show times in UTC (True) or in the local time zone (False) in text views."""
    _display["utc"] = flag


def when(us: int | None) -> str:
    """UTC microseconds as a short, sortable time for tables (``-`` for None): local time
    with its zone's abbreviation (``2030-01-01 09:00:00 CET``), or UTC with ``--utc``
    (``2030-01-01T08:00:00Z``)."""
    if us is None:
        return "-"
    if _display["utc"]:
        return from_us(us).strftime("%Y-%m-%dT%H:%M:%SZ")
    return from_us(us).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def format_duration(td: timedelta) -> str:
    """A short human form of ``td``: ``1h30m``, ``2.5s``, ``250ms`` (the parser reads it)."""
    us = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    if us < 0:
        return "-" + format_duration(-td)
    if us < 1_000_000:
        return f"{us / 1000:g}ms"
    seconds = us / 1_000_000
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join([f"{n}{unit}" for n, unit in parts if n][:2])


def size_text(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def short(value: object, width: int = 60) -> str:
    """``value`` on one line, cut to ``width`` characters with an ellipsis."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else dump_json(value, indent=None)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- JSON -------------------------------------------------------------------------------------


def _decode_params(params: bytes) -> tuple[Any, str | None]:
    """``(decoded, None)`` for msgpack params, ``(None, base64)`` for other bytes."""
    if not params:
        return None, None
    try:
        return unpack(params), None
    except Exception:  # noqa: BLE001 - params may be any bytes a user stored
        return None, base64.b64encode(params).decode("ascii")


def instance_dict(inst: Instance) -> dict[str, Any]:
    """Every stored field of ``inst`` in JSON-friendly form (times ISO-8601 UTC).

    ``params`` is the unpacked msgpack value; params that are not msgpack are given as
    ``params_base64`` instead.
    """
    params, raw = _decode_params(inst.params)
    out: dict[str, Any] = {
        "id": inst.id,
        "task": inst.task,
        "state": inst.state.name,
        "run_at": iso(inst.run_at_us),
        "started_at": iso(inst.started_us),  # the run in progress (RUNNING), else None
        "params": params,
    }
    if raw is not None:
        out["params_base64"] = raw
    if inst.params_size is not None:  # a listing left big params out: `show` has them
        out["params"] = None
        out["params_size"] = inst.params_size
    out.update(
        {
            "attempts": inst.attempts,
            "max_attempts": inst.max_attempts,
            "timeout": None if inst.timeout_us is None else inst.timeout_us / 1e6,
            "error": inst.error,
            "dedup_key": inst.dedup_key,
            "retry_of": inst.retry_of,
            "run_now_of": inst.run_now_of,
            "schedule_id": inst.schedule_id,
            "fire_at": iso(inst.fire_at_us),
            "owner": inst.owner,
            "claim_token": inst.claim_token,
            "lease_until": iso(inst.lease_until_us),
            "created_at": iso(inst.created_us),
            "updated_at": iso(inst.updated_us),
        }
    )
    return out


def attempt_dict(attempt: Attempt) -> dict[str, Any]:
    """One run-history row in JSON-friendly form (``duration`` in seconds).

    ``exit_code``, ``stdout`` and ``stderr`` are the run's output (None for a task that
    reports none).
    """
    output = attempt.output
    return {
        "attempt": attempt.attempt,
        "node": attempt.node,
        "state": attempt.state.name,
        "started_at": iso(attempt.started_us),
        "finished_at": iso(attempt.finished_us),
        "duration": (attempt.finished_us - attempt.started_us) / 1e6,
        "error_type": attempt.error_type,
        "error": attempt.error,
        "result": attempt.result,
        "exit_code": None if output is None else output.exit_code,
        "stdout": None if output is None else output.stdout,
        "stderr": None if output is None else output.stderr,
    }


def _json_default(obj: object) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, datetime):
        return obj.isoformat()
    return repr(obj)


def dump_json(doc: object, *, indent: int | None = 2) -> str:
    """``doc`` as JSON; bytes inside params become ``{"base64": ...}``, datetimes ISO."""
    return json.dumps(doc, indent=indent, default=_json_default, ensure_ascii=False)


# -- text views ---------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None
) -> str:
    """An aligned text table; ``align`` holds ``<`` or ``>`` per column (default: left)."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    aligns = align or "<" * len(headers)
    lines = []
    for row in cells:
        parts = [f"{cell:{aligns[i]}{widths[i]}}" for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def key_values(pairs: Mapping[str, object]) -> str:
    """``key: value`` lines with the values aligned (a multi-line value stays indented)."""
    width = max((len(k) for k in pairs), default=0) + 1
    indent = "\n" + " " * (width + 1)
    return "\n".join(
        f"{k + ':':<{width}} {indent.join(str(v).splitlines() or [''])}" for k, v in pairs.items()
    )


def _state_text(inst: Instance) -> str:
    """The state, and for a run in progress when it started (``RUNNING since ...``)."""
    if inst.started_us is None:
        return inst.state.name
    return f"{inst.state.name} since {when(inst.started_us)}"


def instances_table(page: Sequence[Instance]) -> str:
    """``tickwork ls``: one line per instance."""
    rows = []
    for inst in page:
        doc = instance_dict(inst)
        params = "<bytes>" if "params_base64" in doc else doc["params"]
        if inst.params_size is not None:
            params = f"<{inst.params_size:,} bytes>"
        rows.append(
            (
                inst.id,
                inst.task,
                _state_text(inst),
                when(inst.run_at_us),
                inst.attempts,
                short(params, 40),
                short(inst.error, 50),
            )
        )
    headers = ("ID", "TASK", "STATE", "RUN AT", "ATTEMPTS", "PARAMS", "ERROR")
    return table(headers, rows, align="><<<><<")


def node_state(node: NodeInfo) -> str:
    """``alive``, ``stopped`` (shut down cleanly) or ``silent`` (stopped beating)."""
    if node.alive:
        return "alive"
    return "stopped" if node.stopped_us is not None else "silent"


def node_dict(node: NodeInfo) -> dict[str, Any]:
    """One cluster node as ``tickwork nodes --json`` prints it."""
    return {
        "node_id": node.node_id,
        "state": node_state(node),
        "started": iso(node.started_us),
        "last_heartbeat": iso(node.last_heartbeat_us),
        "stopped": iso(node.stopped_us),
        "held": node.held,
        "running": node.running,
        "host": node.host,
        "pid": node.pid,
        "version": node.version,
        "tasks": None if node.tasks is None else list(node.tasks),
        "max_params_bytes": node.max_params_bytes,
    }


def nodes_table(found: Sequence[NodeInfo], now_us: int) -> str:
    """``tickwork nodes``: one line per node."""
    rows = []
    for node in found:
        age = format_duration(timedelta(microseconds=max(now_us - node.last_heartbeat_us, 0)))
        rows.append(
            (
                node.node_id,
                node_state(node),
                when(node.started_us),
                f"{age} ago",
                node.held,
                "-" if node.running is None else node.running,
                node.host or "-",
                node.pid or "-",
                "-" if node.tasks is None else short(",".join(node.tasks), 40),
            )
        )
    headers = (
        "NODE",
        "STATE",
        "STARTED",
        "LAST HEARTBEAT",
        "HELD",
        "RUNNING",
        "HOST",
        "PID",
        "TASKS",
    )
    return table(headers, rows, align="<<<>>><><")


def show_text(inst: Instance, history: Sequence[Attempt]) -> str:
    """``tickwork show``: every field (named as in ``--json``), then the run history."""
    fields = {k: "-" if v is None else v for k, v in instance_dict(inst).items()}
    if "params_base64" not in fields and fields["params"] != "-":
        fields["params"] = dump_json(fields["params"], indent=None)
    text = key_values(fields)
    if not history:
        if inst.started_us is not None:
            return text + "\n\nhistory: none yet (the first attempt is running)"
        return text + "\n\nhistory: none (never ran)"
    rows = [
        (
            a.attempt,
            a.state.name,
            a.node or "-",
            when(a.started_us),
            format_duration(a.duration),
            short(a.error if a.error is not None else a.result or _output_note(a), 60),
        )
        for a in history
    ]
    headers = ("ATTEMPT", "STATE", "NODE", "STARTED", "TOOK", "RESULT / ERROR")
    return text + "\n\nhistory:\n" + table(headers, rows, align="><<<><")


def _output_note(attempt: Attempt) -> str | None:
    output = attempt.output
    if output is None:
        return None
    size = len(output.stdout.encode()) + len(output.stderr.encode())
    return f"exit {output.exit_code}, {size_text(size)} of output (tickwork logs)"


def stats_text(doc: Mapping[str, Any], next_us: int | None, now_us: int) -> str:
    """``tickwork stats``: a summary, then the count of each state."""
    if next_us is None:
        due = "nothing pending"
    else:
        gap = format_duration(timedelta(microseconds=abs(next_us - now_us)))
        due = f"{when(next_us)} ({'overdue by' if next_us <= now_us else 'in'} {gap})"
    size = "PostgreSQL" if doc["db_size_bytes"] is None else size_text(doc["db_size_bytes"])
    if doc["wal_size_bytes"]:
        size += f", WAL {size_text(doc['wal_size_bytes'])}"
    summary = {
        "database": f"{doc['db']} ({size})",
        "instances": doc["total"],
        "next due": due,
    }
    rows = list(doc["counts"].items())
    return key_values(summary) + "\n\n" + table(("STATE", "COUNT"), rows, align="<>")
