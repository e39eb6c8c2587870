"""Fire throughput: N no-op instances due at once, from schedule_many to N SUCCEEDED.

For each store (SQLiteStore on a temporary file, durable: WAL with synchronous=NORMAL;
and MemoryStore) and each repetition, in one process and one trio run:

1. the limit: spawn and finish N no-op trio tasks (all at once, and in waves of 1,000);
2. a fresh store and node (``open_scheduler`` with its default knobs, the real
   SystemClock), then N ``NewInstance`` objects due now (built before the clock starts);
3. the clock runs from ``schedule_many`` until the node has durably recorded N SUCCEEDED
   (the recorder counts an outcome only once its transaction committed); the store's
   own count is checked afterwards.

Reported: end-to-end rate, and its two parts (schedule_many alone; draining from when
schedule_many returned), each as median (min-max), and the end-to-end rate as a ratio to
the limit measured just before it (paired per repetition).

    python benchmarks/fire_throughput.py [--quick] [--repeat 3] [-n 100000]
"""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

import tickwork
from _common import (
    SHUTDOWN_LIMIT_S,
    Stat,
    base_parser,
    check,
    emit_json,
    open_node,
    print_table,
    ratio_stat,
    temp_dir,
    trio_noop_rate_async,
    wait_recorded,
    write_result,
)

TARGET_RATE = 25_000
TARGET_RATIO = 0.35


def make_store(kind: str, directory: Path, rep: int) -> tickwork.Store:
    if kind == "sqlite":
        return tickwork.SQLiteStore(directory / f"fire-{rep}.db")
    return tickwork.MemoryStore()


async def fire_once(store: tickwork.Store, n: int, knobs: dict[str, Any]) -> dict[str, Any]:
    """One measurement on a fresh store; returns seconds (and how shutdown went)."""
    out: dict[str, Any] = {}
    async with open_node(store, out, **knobs) as scheduler:
        due = datetime.now(UTC)
        news = [tickwork.NewInstance("noop", due, b"") for _ in range(n)]
        gc.collect()
        t0 = time.perf_counter()
        await scheduler.schedule_many(news)
        t1 = time.perf_counter()
        t2 = await wait_recorded(scheduler, n)
        succeeded = await scheduler.count(state=tickwork.State.SUCCEEDED)
        if succeeded != n:
            raise RuntimeError(f"the store counts {succeeded} SUCCEEDED, expected {n}")
        out.update(total_s=t2 - t0, insert_s=t1 - t0, drain_s=t2 - t1)
    return out


async def measure(
    kinds: list[str], n: int, repeat: int, tmpdir: str | None, knobs: dict[str, Any]
) -> dict[str, Any]:
    per: dict[str, dict[str, list[Any]]] = {k: {} for k in kinds}
    with temp_dir(tmpdir) as d:
        for rep in range(repeat):
            for kind in kinds:
                rec = per[kind]
                rec.setdefault("limit_at_once", []).append(await trio_noop_rate_async(n, wave=None))
                rec.setdefault("limit_waves", []).append(await trio_noop_rate_async(n))
                r = await fire_once(make_store(kind, d, rep), n, knobs)
                for key, value in r.items():
                    rec.setdefault(key, []).append(value)
                gc.collect()
    return per


def summarise(kind: str, rec: dict[str, list[Any]], n: int) -> dict[str, Any]:
    total = [n / s for s in rec["total_s"]]
    return {
        "store": kind,
        "fire_per_s": Stat.of(total),
        "insert_per_s": Stat.of(n / s for s in rec["insert_s"]),
        "drain_per_s": Stat.of(n / s for s in rec["drain_s"]),
        "limit_at_once_per_s": Stat.of(rec["limit_at_once"]),
        "limit_waves_per_s": Stat.of(rec["limit_waves"]),
        "ratio_at_once": ratio_stat(total, rec["limit_at_once"]),
        "ratio_waves": ratio_stat(total, rec["limit_waves"]),
        "shutdown_s": Stat.of(rec["shutdown_s"]),
        "shutdown_hung": sum(bool(h) for h in rec["shutdown_hung"]),
    }


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="instances (default 100,000)")
    parser.add_argument("--stores", default="sqlite,memory", help="comma-separated: sqlite, memory")
    parser.add_argument("--max-concurrency", type=int, default=None, help="open_scheduler knob")
    parser.add_argument("--batch-size", type=int, default=None, help="open_scheduler knob")
    parser.add_argument("--max-in-memory", type=int, default=None, help="open_scheduler knob")
    args = parser.parse_args()
    n = args.n or (5_000 if args.quick else 100_000)
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    knobs = {
        name: value
        for name, value in (
            ("max_concurrency", args.max_concurrency),
            ("batch_size", args.batch_size),
            ("max_in_memory", args.max_in_memory),
        )
        if value is not None
    }
    per = trio.run(measure, kinds, n, args.repeat, args.tmpdir, knobs)
    results = [summarise(kind, per[kind], n) for kind in kinds]
    rows = []
    for r in results:
        fire = r["fire_per_s"]
        rows.append(
            [
                r["store"],
                fire.fmt(unit="/s"),
                r["insert_per_s"].fmt(unit="/s"),
                r["drain_per_s"].fmt(unit="/s"),
                r["limit_at_once_per_s"].fmt(unit="/s"),
                r["ratio_at_once"].fmt(".2f", "x"),
                r["ratio_waves"].fmt(".2f", "x"),
                f"{r['shutdown_s'].median:.2f} s" + (" HUNG" if r["shutdown_hung"] else ""),
            ]
        )
    notes = [
        f"N = {n:,} no-op instances due at once; {args.repeat} repetitions; median (min-max)",
        "fire/s = N / (schedule_many start -> N SUCCEEDED durable); it includes schedule_many",
        (
            "limit = trio no-op tasks spawned and finished per second, all N in one nursery, "
            "measured just before each repetition; the waves ratio uses waves of 1,000 instead"
        ),
        f"knobs: defaults of open_scheduler{' + ' + str(knobs) if knobs else ''}; SystemClock",
    ]
    for r in results:
        if r["store"] == "sqlite":
            fire, ratio = r["fire_per_s"].median, r["ratio_at_once"].median
            notes.append(
                f"target sqlite >= {TARGET_RATE:,}/s: {check(fire, TARGET_RATE)}; "
                f">= {TARGET_RATIO}x limit: {check(ratio, TARGET_RATIO)}"
            )
        if r["shutdown_hung"]:
            notes.append(
                f"{r['store']}: leaving open_scheduler hung in {r['shutdown_hung']} of "
                f"{args.repeat} runs (cancelled after {SHUTDOWN_LIMIT_S:.0f} s)"
            )
    print_table(
        "Fire throughput",
        [
            "store",
            "fire (end to end)",
            "schedule_many",
            "drain",
            "limit: trio no-op",
            "ratio",
            "ratio (waves)",
            "shutdown",
        ],
        rows,
        notes,
    )
    payload = {
        "n": n,
        "repeat": args.repeat,
        "knobs": knobs,
        "results": [
            {k: (v.as_dict() if isinstance(v, Stat) else v) for k, v in r.items()} for r in results
        ],
    }
    write_result("fire_throughput", payload, write=not (args.no_write or args.quick))
    emit_json("fire_throughput", payload)


if __name__ == "__main__":
    main()
