"""The web UI's pages with many stored instances: each page's latency (target: p99 under
50 ms at 10,000,000 stored, on SQLite).

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

``--db FILE`` keeps the filled file there and reuses it when it exists (filling 10,000,000
rows takes minutes).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import trio

import tickwork
from _common import base_parser, check, emit_json, percentile, print_table, temp_dir, write_result
from tickwork._time import to_us
from tickwork.http import serve
from tickwork.model import NewRow
from tickwork.state import State

CHUNK = 100_000
TARGET_MS = 50.0
S = 1_000_000


class Noop(tickwork.Task):
    name = "noop"

    async def run(self, params: bytes) -> object:
        del params
        return None


async def _fill(db: str, n: int) -> None:
    """N ended rows, oldest first, written by a client (no node yet)."""
    store = tickwork.SQLiteStore(db)
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
    db: str, stored: int, repeats: int, *, fill: bool = True, only: str | None = None
) -> dict[str, dict[str, float]]:
    if fill:
        await _fill(db, stored)
    async with tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[Noop(), Rare()]) as s:
        tomorrow = s.now() + timedelta(days=1)
        if fill:
            await s.schedule_many([tickwork.NewInstance("noop", tomorrow)] * 1000)
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
    return out


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--stored", type=int, default=None, help="instances stored")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--db", default=None, help="keep (and reuse) the filled file here")
    parser.add_argument("--only", default=None, help="pages whose name contains one of these")
    args = parser.parse_args()
    stored = args.stored or (50_000 if args.quick else 10_000_000)
    repeats = 5 if args.quick else args.repeats
    if args.db is not None:
        fill = not Path(args.db).exists()
        r = trio.run(partial(_measure, args.db, stored, repeats, fill=fill, only=args.only))
    else:
        with temp_dir(args.tmpdir) as tmp:
            r = trio.run(partial(_measure, str(tmp / "ui.db"), stored, repeats, only=args.only))
    rows = [
        [
            name,
            f"{v['p50_ms']:.1f} ms",
            f"{v['p99_ms']:.1f} ms",
            check(v["p99_ms"], TARGET_MS, higher_is_better=False),
        ]
        for name, v in r.items()
    ]
    print_table(
        f"web UI pages with {stored:,} stored (SQLite)",
        ["page", "p50", "p99", f"p99 <= {TARGET_MS:.0f} ms"],
        rows,
        [f"{repeats} requests per page in a row, over loopback, the client in the node's process"],
    )
    payload = {"stored": stored, "repeats": repeats, "pages": r, "target_ms": TARGET_MS}
    write_result("ui_pages", payload, write=not args.no_write)
    emit_json("ui_pages", payload)


if __name__ == "__main__":
    main()
