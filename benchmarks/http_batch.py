"""HTTP batch scheduling: ``POST /api/instances/batch`` beside ``schedule_many`` in the same
run (target: the HTTP path reaches at least half of ``schedule_many``'s rate).

Each repetition opens a fresh SQLite file (WAL, the store's own thread) with a node
whose look-ahead window is 1 s, so nothing it stores is claimed (the instances are due in
a year): only storing is measured. N instances are stored in batches of B, first with
``scheduler.schedule_many`` (the baseline), then through the node's HTTP app served by
hypercorn on a loopback port, from an httpx client in the same process. The request
bodies are JSON-encoded before the clock starts (a client's own encoding is not the
server's cost); the server decodes, validates every item, and stores each batch in one
transaction.

    python benchmarks/http_batch.py [--quick] [--repeat 3] [--count 100000] [--batch 10000]
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trio

import tickwork
from _common import Stat, base_parser, check, emit_json, print_table, temp_dir, write_result
from tickwork.http import serve

TARGET = 0.5


class Noop(tickwork.Task):
    name = "noop"

    async def run(self, params: bytes) -> object:
        del params
        return None


def _items(count: int, first: datetime) -> list[dict[str, object]]:
    return [
        {"task": "noop", "at": (first + timedelta(microseconds=k)).isoformat(), "params": {"n": k}}
        for k in range(count)
    ]


async def _once(db: Path, count: int, batch: int) -> tuple[float, float]:
    """(schedule_many per second, HTTP batch per second) on one fresh file."""
    first = datetime.now(UTC) + timedelta(days=365)
    news = [
        tickwork.NewInstance("noop", first + timedelta(microseconds=k), {"n": k})
        for k in range(count)
    ]
    items = _items(count, first + timedelta(days=1))
    bodies = [
        json.dumps({"instances": items[i : i + batch]}).encode() for i in range(0, count, batch)
    ]
    store = tickwork.SQLiteStore(db)
    async with tickwork.open_scheduler(store, tasks=[Noop()], window=timedelta(seconds=1)) as s:
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            await s.schedule_many(news[i : i + batch])
        direct = count / (time.perf_counter() - t0)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, s, "127.0.0.1", 0)
            url = f"http://{host}:{port}/api/instances/batch"
            headers = {"content-type": "application/json"}
            async with httpx.AsyncClient(timeout=60) as client:
                t0 = time.perf_counter()
                for body in bodies:
                    response = await client.post(url, content=body, headers=headers)
                    if response.status_code != 201:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
                over_http = count / (time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
        if await s.count() != 2 * count:
            raise RuntimeError("not every instance was stored")
    return direct, over_http


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--count", type=int, default=None, help="instances per path")
    parser.add_argument("--batch", type=int, default=10_000, help="instances per call/request")
    args = parser.parse_args()
    count = args.count or (2_000 if args.quick else 100_000)
    batch = min(args.batch, count)
    direct: list[float] = []
    http: list[float] = []
    with temp_dir(args.tmpdir) as tmp:
        for k in range(args.repeat):
            d, h = trio.run(_once, tmp / f"http{k}.db", count, batch)
            direct.append(d)
            http.append(h)
    d_stat, h_stat = Stat.of(direct), Stat.of(http)
    ratio = Stat.of([h / d for h, d in zip(http, direct, strict=True)])
    print_table(
        "HTTP batch scheduling (SQLite)",
        ["path", "instances per second", "ratio to schedule_many", "target"],
        [
            ["scheduler.schedule_many", d_stat.fmt(",.0f", "/s"), "1.00", ""],
            [
                "POST /api/instances/batch",
                h_stat.fmt(",.0f", "/s"),
                f"{ratio.median:.2f}",
                f">= {TARGET} {check(ratio.median, TARGET)}",
            ],
        ],
        [
            (
                f"{count:,} instances per path in batches of {batch:,}; {args.repeat} repetitions; "
                "median (min-max)"
            ),
            (
                "HTTP: hypercorn on loopback, an httpx client in the same process, bodies "
                "encoded before timing"
            ),
        ],
    )
    payload = {
        "count": count,
        "batch": batch,
        "schedule_many_per_s": d_stat.as_dict(),
        "http_batch_per_s": h_stat.as_dict(),
        "ratio": ratio.median,
        "target": TARGET,
        "pass": ratio.median >= TARGET,
    }
    write_result("http_batch", payload, write=not args.no_write)
    emit_json("http_batch", payload)


if __name__ == "__main__":
    main()
