"""``tickwork stats`` and ``tickwork nodes``: what the database holds (counts per state, the
next due time, its size) and which nodes run on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import trio

from tickwork._time import from_us
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
from tickwork.cli._db import DbTarget
from tickwork.cli._format import dump_json, node_dict, nodes_table, stats_text
from tickwork.clock import SystemClock
from tickwork.state import State
from tickwork.stores.cluster import NodeRegistry

if TYPE_CHECKING:
    from tickwork.stores.cluster import NodeInfo

_HOW_TO_START = "start a node with `tickwork run` or add an instance with `tickwork add`"

__all__ = ["nodes", "stats"]


@click.command()
@db_option
@json_option
@utc_option
@log_options
def stats(*, db: DbTarget, as_json: bool) -> None:
    """Counts per state, the next due time and the database size."""
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def fetch() -> tuple[dict[State, int], int | None]:
        async with client(db, read_only=True) as store:
            return await store.count_by_state(), await store.next_pending_at()

    counts, next_us = trio.run(fetch)
    now_us = SystemClock().now_us()
    size: int | None = None  # a PostgreSQL schema's size is the server's business
    wal_size = 0
    if isinstance(db, Path):
        size = db.stat().st_size
        wal = Path(f"{db}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    doc = {
        "db": str(db),
        "db_size_bytes": size,
        "wal_size_bytes": wal_size,
        "total": sum(counts.values()),
        "counts": {s.name: counts.get(s, 0) for s in State},
        "next_pending_at": None if next_us is None else from_us(next_us).isoformat(),
    }
    emit(doc, as_json, stats_text(doc, next_us, now_us))


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also nodes that stopped or went silent.")
@db_option
@json_option
@utc_option
@log_options
def nodes(*, show_all: bool, db: DbTarget, as_json: bool) -> None:
    """The nodes that run on the database: id, start, last heartbeat, work held, tasks.

    A node is "alive" while it runs (in a cluster: its heartbeats arrive within its
    lease; on SQLite: it holds the file's node lock), "stopped" once it shut down
    cleanly, and "silent" when it stopped without saying goodbye (it died, or lost the
    database): in a cluster its work is taken over when its leases lapse.
    """
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def fetch() -> list[NodeInfo]:
        async with client(db, read_only=True) as store:
            if not isinstance(store, NodeRegistry):  # pragma: no cover - open_store's choice
                raise click.ClickException(f"{db} keeps no table of nodes")
            return await store.nodes()

    found = trio.run(fetch)
    if not show_all:
        found = [n for n in found if n.alive or n.held]
    now_us = SystemClock().now_us()
    if as_json:
        click.echo(dump_json([node_dict(n) for n in found]))
        return
    click.echo(nodes_table(found, now_us) if found else "no live nodes (--all shows every node)")
