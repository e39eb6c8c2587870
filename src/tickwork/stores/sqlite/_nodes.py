"""The SQLite store's nodes table: who ran on the file, and which tasks they run.

One node at a time holds the file (its node lock, :mod:`tickwork.stores.sqlite._lock`),
so a node is *alive* when the lock is held and its row is the newest one not marked
stopped; a node that died (kill -9) keeps ``stopped`` NULL and is "silent" once another
started or nobody holds the lock. Times are the node's wall clock (UTC microseconds).
"""

from __future__ import annotations

import json
import os
import socket
import time
from importlib import metadata
from typing import TYPE_CHECKING

from tickwork.stores.cluster import NodeInfo

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

__all__ = ["holder", "nodes", "record", "register", "unregister"]


def _now_us() -> int:
    return time.time_ns() // 1000


def _version() -> str:
    try:
        return metadata.version("tickwork")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def register(conn: sqlite3.Connection, node_id: str) -> None:
    """Write the row of a node that just took the lock (autocommit: one statement)."""
    conn.execute(
        "INSERT OR REPLACE INTO nodes (node_id, started, stopped, host, pid, version) "
        "VALUES (?, ?, NULL, ?, ?, ?)",
        (node_id, _now_us(), socket.gethostname(), os.getpid(), _version()),
    )


def unregister(conn: sqlite3.Connection, node_id: str) -> None:
    """Mark the node stopped (a clean close)."""
    conn.execute("UPDATE nodes SET stopped = ? WHERE node_id = ?", (_now_us(), node_id))


def record(
    conn: sqlite3.Connection, node_id: str, tasks: Sequence[str], max_params_bytes: int
) -> None:
    """Record the tasks (and params limit) of a registered node."""
    conn.execute(
        "UPDATE nodes SET tasks = ?, max_params_bytes = ? WHERE node_id = ?",
        (json.dumps(sorted(set(tasks))), max_params_bytes, node_id),
    )


def holder(conn: sqlite3.Connection) -> tuple[int | None, str | None]:
    """(pid, node id) of the newest node not marked stopped: the lock's holder."""
    row = conn.execute(
        "SELECT pid, node_id FROM nodes WHERE stopped IS NULL ORDER BY started DESC LIMIT 1"
    ).fetchone()
    return (None, None) if row is None else (row[0], row[1])


def nodes(conn: sqlite3.Connection, *, locked: bool, held: int) -> list[NodeInfo]:
    """Every node row, newest first. ``locked``: a node holds the lock now; ``held``: the
    instances held (CLAIMED or RUNNING) in the file, all the live node's."""
    rows = conn.execute(
        "SELECT node_id, started, stopped, host, pid, version, tasks, max_params_bytes "
        "FROM nodes ORDER BY started DESC, node_id"
    ).fetchall()
    now = _now_us()
    out: list[NodeInfo] = []
    live_found = False
    for node_id, started, stopped, host, pid, version, tasks, limit in rows:
        alive = locked and stopped is None and not live_found
        live_found = live_found or alive
        out.append(
            NodeInfo(
                node_id=node_id,
                started_us=started,
                # no heartbeats on one node: the lock held is the proof of life, now
                last_heartbeat_us=now if alive else (stopped or started),
                stopped_us=stopped,
                alive=alive,
                held=held if alive else 0,
                running=None,
                host=host,
                pid=pid,
                version=version,
                tasks=None if tasks is None else tuple(json.loads(tasks)),
                max_params_bytes=limit,
            )
        )
    return out
