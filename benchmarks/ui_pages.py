"""The web UI's pages with many stored instances: each page's latency (target: p99 under
50 ms at 10,000,000 stored, on SQLite and PostgreSQL).

A SQLite file gets N ended instances written straight through the store (1 in 100 FAILED,
1 in 10 an occurrence of the schedule ``tick``), plus 1,000 instances due tomorrow. A node
opens it and serves its HTTP app on loopback; a client asks each page R times in a row:
the dashboard, the history and upcoming lists, a filtered list, one instance, the
schedules, one schedule and the nodes. The first request of each page is not counted
(template compilation).

The JSON API's list endpoints are asked the same way (newest, a state, a rare task, a
schedule's runs, an older page), and the task filter both in the UI and the API: 1 in
10,000 of the stored instances belong to the task ``rare``.

    python benchmarks/ui_pages.py [--quick] [--stored 10000000] [--repeats 30] [--db FILE]
        [--store sqlite|postgres] [--dsn URI] [--schema NAME]

``--db FILE`` keeps the filled file there and reuses it when it exists (filling 10,000,000
rows takes minutes).

``--store postgres`` does the same on a ``PostgresStore`` (the DSN defaults to
``$TICKWORK_PG_DSN`` or the local trust server of the tests): the rows go through the
store's ``insert`` in batches of 100,000 (so its maintained counts stay right) into a
schema of their own. ``--schema NAME`` keeps that schema and reuses it when it already
holds the wanted count (else it is dropped and filled again); without it a fresh schema
is filled and dropped at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

import tickwork
from _common import base_parser, check, emit_json, percentile, print_table, temp_dir, write_result
from tickwork._time import to_us
from tickwork.http import serve
from tickwork.model import NewRow
from tickwork.state import State

CHUNK = 100_000
DEFAULT_DSN = os.environ.get("TICKWORK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
UPCOMING = 1000
TARGET_MS = 50.0
S = 1_000_000


class Noop(tickwork.Task):
    name = "noop"

    async def run(self, params: bytes) -> object:
        del params
        return None


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def pg_holds(dsn: str, schema: str, stored: int) -> bool:
    """Whether ``schema`` holds a fill of ``stored``: its rows are the ids up to
    ``stored + UPCOMING``; a node adds only occurrences of the schedules after them."""
    found = sql(dsn, "SELECT to_regclass(%s) IS NOT NULL", f'"{schema}".instances')
    if not found[0][0]:
        return False
    last = stored + UPCOMING
    [(n, more)] = sql(
        dsn,
        f'SELECT count(*), EXISTS (SELECT FROM "{schema}".instances WHERE id > %s '
        f'AND schedule_id IS NULL) FROM "{schema}".instances WHERE id <= %s',
        last,
        last,
    )
    return bool(n == last and not more)


def pg_drop(dsn: str, schema: str) -> None:
    sql(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _fill(make_store: Callable[[], tickwork.Store], n: int) -> None:
    """N ended rows, oldest first, written by a client (no node yet)."""
    store = make_store()
    await store.open()
    try:
        start = to_us(datetime.now(UTC) - timedelta(days=30))
        for i in range(0, n, CHUNK):
            rows = []
            for j in range(i, min(i + CHUNK, n)):
                at = start + j * 100
                state = State.FAILED if j % 100 == 7 else State.SUCCEEDED
                if j % 10_000 == 5:
                    rows.append(NewRow("rare", at, b"", state=state))
                elif j % 10 == 3:
                    rows.append(NewRow("noop", at, b"", schedule_id="tick", fire_at_us=at,
                                       state=state))  # fmt: skip
                else:
                    rows.append(NewRow("noop", at, b"", state=state))
            await store.insert(rows, start + i * 100)
    finally:
        await store.aclose()


class Rare(Noop):
    name = "rare"


async def _measure(
    make_store: Callable[[], tickwork.Store],
    stored: int,
    repeats: int,
    *,
    fill: bool = True,
    only: str | None = None,
) -> dict[str, Any]:
    fill_s = None
    if fill:
        t0 = time.perf_counter()
        await _fill(make_store, stored)
        fill_s = time.perf_counter() - t0
    async with tickwork.open_scheduler(make_store(), tasks=[Noop(), Rare()]) as s:
        tomorrow = s.now() + timedelta(days=1)
        if fill:
            await s.schedule_many([tickwork.NewInstance("noop", tomorrow)] * UPCOMING)
        await s.add_schedule("noop", tickwork.Cron("0 4 * * *"), schedule_id="daily")
        await s.add_schedule("noop", tickwork.Cron("*/5 * * * *"), schedule_id="tick")
        pages = {
            "dashboard": "/",
            "history": "/instances",
            "upcoming": "/instances?tab=upcoming",
            "failed": "/instances?state=FAILED",
            "older page": f"/instances?before={stored // 2}",
            "schedule's runs": "/instances?schedule=tick",
            "instance": f"/instances/{stored // 2}",
            "schedules": "/schedules",
            "schedule": "/schedules/tick",
            "nodes": "/nodes",
            "rare task": "/instances?task=rare",
            "rare task, failed": "/instances?task=rare&state=FAILED",
            "API: instances": "/api/instances",
            "API: failed": "/api/instances?state=FAILED",
            "API: rare task": "/api/instances?task=rare",
            "API: older page": f"/api/instances?before_id={stored // 2}",
            "API: schedule's runs": "/api/schedules/tick/runs",
            "API: upcoming": "/api/instances?upcoming=true",
            "API: schedules": "/api/schedules",
            "API: stats": "/api/stats",
        }
        if only:
            pages = {k: v for k, v in pages.items() if any(o in k for o in only.split(","))}
        out: dict[str, dict[str, float]] = {}
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, s, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=600) as client:
                for name, path in pages.items():
                    took: list[float] = []
                    for k in range(repeats + 1):
                        t0 = time.perf_counter()
                        response = await client.get(path)
                        if k:
                            took.append(time.perf_counter() - t0)
                        if response.status_code != 200:
                            raise RuntimeError(f"{path}: {response.status_code}")
                    took.sort()
                    out[name] = {
                        "p50_ms": 1000 * percentile(took, 0.5),
                        "p99_ms": 1000 * percentile(took, 0.99),
                    }
            nursery.cancel_scope.cancel()
    return {"pages": out, "fill_s": fill_s}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--stored", type=int, default=None, help="instances stored")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--db", default=None, help="SQLite: keep (and reuse) the filled file here")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL: the server")
    parser.add_argument(
        "--schema", default=None, help="PostgreSQL: keep (and reuse) the filled schema here"
    )
    parser.add_argument("--only", default=None, help="pages whose name contains one of these")
    args = parser.parse_args()
    stored = args.stored or (50_000 if args.quick else 10_000_000)
    repeats = 5 if args.quick else args.repeats
    if args.store == "postgres":
        schema = args.schema or f"ui_bench_{uuid.uuid4().hex[:10]}"
        fill = not (args.schema is not None and pg_holds(args.dsn, schema, stored))
        if fill:
            pg_drop(args.dsn, schema)
        make_pg = partial(tickwork.PostgresStore, args.dsn, schema=schema)
        try:
            res = trio.run(partial(_measure, make_pg, stored, repeats, fill=fill, only=args.only))
        finally:
            if args.schema is None:
                pg_drop(args.dsn, schema)
    elif args.db is not None:
        fill = not Path(args.db).exists()
        make_lite = partial(tickwork.SQLiteStore, args.db)
        res = trio.run(partial(_measure, make_lite, stored, repeats, fill=fill, only=args.only))
    else:
        with temp_dir(args.tmpdir) as tmp:
            make_lite = partial(tickwork.SQLiteStore, str(tmp / "ui.db"))
            res = trio.run(partial(_measure, make_lite, stored, repeats, only=args.only))
    r: dict[str, dict[str, float]] = res["pages"]
    fill_s: float | None = res["fill_s"]
    rows = [
        [
            name,
            f"{v['p50_ms']:.1f} ms",
            f"{v['p99_ms']:.1f} ms",
            check(v["p99_ms"], TARGET_MS, higher_is_better=False),
        ]
        for name, v in r.items()
    ]
    notes = [
        f"{repeats} requests per page in a row, over loopback, the client in the node's process"
    ]
    if fill_s is not None:
        notes.append(f"filled {stored:,} rows in {fill_s:.1f} s ({stored / fill_s:,.0f} rows/s)")
    store_name = "PostgreSQL" if args.store == "postgres" else "SQLite"
    print_table(
        f"web UI pages with {stored:,} stored ({store_name})",
        ["page", "p50", "p99", f"p99 <= {TARGET_MS:.0f} ms"],
        rows,
        notes,
    )
    payload = {
        "store": args.store,
        "stored": stored,
        "repeats": repeats,
        "pages": r,
        "target_ms": TARGET_MS,
        "fill_s": fill_s,
    }
    name = "ui_pages" if args.store == "sqlite" else "ui_pages_postgres"
    write_result(name, payload, write=not args.no_write)
    emit_json("ui_pages", payload)


if __name__ == "__main__":
    main()
