"""``tickwork status``: is a node running on this database, what does it hold, and what is
stored. Works on SQLite (one node at a time) and on PostgreSQL (a cluster's nodes).

A store that keeps a nodes table (``nodes()``: PostgreSQL, and every built-in store once it
records its nodes) says which nodes are alive and what each holds. Otherwise, on SQLite,
the node lock file names the node holding the database: its process is looked up (no
lock is taken, so a node starting at that moment is never refused).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import trio

from tickwork.cli._common import (
    client,
    db_option,
    emit,
    json_option,
    log_options,
    require_db,
    setup_cli_logging,
    utc_option,
)
from tickwork.cli._format import format_duration, iso, key_values, node_dict, size_text, table, when
from tickwork.clock import SystemClock
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.cli._db import DbTarget
    from tickwork.stores.base import Store
    from tickwork.stores.cluster import NodeInfo

__all__ = ["status"]

#: Schedules counted at most (the page is read whole); more is shown as "N+".
_SCHEDULES_READ = 10_000


def _lock_holder(db: Path) -> dict[str, Any] | None:
    """The node named in ``<db>.lock`` if its process still runs on this host, else None."""
    try:
        words = (Path(f"{db}.lock").read_text(errors="replace")).split()
    except OSError:
        return None
    if not words or not (words[0].isascii() and words[0].isdigit()):
        return None
    pid = int(words[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    return {"node_id": words[1] if len(words) > 1 else None, "pid": pid, "state": "alive"}


async def _nodes(store: Store, db: DbTarget) -> list[dict[str, Any]]:
    listing = getattr(store, "nodes", None)
    if listing is not None:
        found: list[NodeInfo] = await listing()
        return [node_dict(n) for n in found if n.alive or n.held]
    if isinstance(db, Path):
        holder = _lock_holder(db)
        return [holder] if holder is not None else []
    return []


async def _gather(db: DbTarget) -> dict[str, Any]:
    async with client(db) as store:
        counts = await store.count_by_state()
        next_us = await store.next_pending_at()
        nodes = await _nodes(store, db)
        schedules = await store.list_schedules(limit=_SCHEDULES_READ, after_id=None)
    return {
        "counts": {s.name: counts.get(s, 0) for s in State},
        "next_us": next_us,
        "nodes": nodes,
        "schedules": len(schedules),
        "schedules_more": len(schedules) >= _SCHEDULES_READ,
        "paused": sum(1 for s in schedules if s.paused and not s.ended),
    }


@click.command()
@db_option
@json_option
@utc_option
@log_options
def status(*, db: DbTarget, as_json: bool) -> None:
    """Whether a node runs on the database, what it holds, and what is stored.

    Exit status 0 when at least one node is running, 3 when none is (for scripts and
    health checks: `tickwork status >/dev/null || alert`).
    """
    setup_cli_logging("WARNING")
    require_db(db, "start a node with `tickwork run` or add an instance with `tickwork add`")
    found = trio.run(_gather, db)
    now_us = SystemClock().now_us()
    counts = found["counts"]
    held = counts["CLAIMED"] + counts["RUNNING"]
    doc = {
        "db": str(db),
        "db_size_bytes": Path(db).stat().st_size if isinstance(db, Path) else None,
        "running": bool(found["nodes"]),
        "nodes": found["nodes"],
        "held": held,
        "total": sum(counts.values()),
        "counts": counts,
        "next_pending_at": iso(found["next_us"]),
        "schedules": found["schedules"],
        "schedules_paused": found["paused"],
    }
    emit(doc, as_json, _text(doc, found, now_us))
    if not found["nodes"]:
        raise SystemExit(3)


def _text(doc: dict[str, Any], found: dict[str, Any], now_us: int) -> str:
    nodes = doc["nodes"]
    size = "PostgreSQL" if doc["db_size_bytes"] is None else size_text(doc["db_size_bytes"])
    next_us = found["next_us"]
    if next_us is None:
        due = "nothing pending"
    else:
        gap = format_duration(timedelta(microseconds=abs(next_us - now_us)))
        due = f"{when(next_us)} ({'overdue by' if next_us <= now_us else 'in'} {gap})"
    counts = doc["counts"]
    stored = ", ".join(f"{n:,} {name.lower()}" for name, n in counts.items() if n)
    schedules = f"{doc['schedules']:,}{'+' if found['schedules_more'] else ''}"
    if doc["schedules_paused"]:
        schedules += f" ({doc['schedules_paused']} paused)"
    summary = {
        "database": f"{doc['db']} ({size})",
        "node": f"{len(nodes)} running" if nodes else "none running (start one: tickwork run)",
        "held": f"{doc['held']:,} claimed or running",
        "instances": f"{doc['total']:,}" + (f": {stored}" if stored else ""),
        "next due": due,
        "schedules": schedules,
    }
    text = key_values(summary)
    if nodes:
        rows = [
            (
                n.get("node_id") or "-",
                n.get("state", "alive"),
                n.get("pid") or "-",
                "-" if n.get("held") is None else n["held"],
                "-" if n.get("running") is None else n["running"],
                ", ".join(n.get("tasks") or []) or "-",
            )
            for n in nodes
        ]
        headers = ("NODE", "STATE", "PID", "HELD", "RUNNING", "TASKS")
        text += "\n\n" + table(headers, rows, align="<<>>><")
    return text
