"""The limits every other figure is held against, measured in this process, this run.

1. trio no-op task rate: spawn and finish no-op trio tasks, all at once (N into one
   nursery: the shape of N instances due at once) and in waves of 1,000 (the default
   ``max_concurrency``; faster, so a stricter ratio). A scheduler that started one trio
   task per instance could not beat this; throughputs are reported as ratios to the
   all-at-once figure, measured in the same process, and to the waves figure.
2. The store alone, no actors: ``insert`` N rows, ``claim`` them in batches of 5,000 and
   ``finish`` them (SUCCEEDED, with run history) in batches of 5,000, straight through
   the Store protocol, for SQLiteStore (WAL, synchronous=NORMAL) and MemoryStore. The
   combined rate, N / (insert + claim + finish time), is the ceiling of the fire
   throughput benchmark on that store: the actors add their cost on top.

    python benchmarks/limit.py [--quick] [--repeat 3] [-n 100000]
"""

from __future__ import annotations

import time
from typing import Any

import trio

import tickwork
from _common import (
    Stat,
    base_parser,
    emit_json,
    print_table,
    temp_dir,
    trio_noop_rate_async,
    write_result,
)
from tickwork.model import Finish, NewRow

BATCH = 5_000
LEASE_US = 60_000_000


async def store_alone(store: Any, n: int) -> dict[str, float]:
    """Seconds for insert, claim and finish of ``n`` instances through the Store API."""
    await store.open(node_id="bench-limit")
    try:
        now = time.time_ns() // 1000
        rows = [NewRow(task="noop", run_at_us=now, params=b"") for _ in range(n)]
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            await store.insert(rows[i : i + BATCH], now)
        t1 = time.perf_counter()
        claimed = []
        while len(claimed) < n:
            got = await store.claim("bench-limit", now, BATCH, now, LEASE_US)
            if not got:
                break
            claimed.extend(got)
        t2 = time.perf_counter()
        for i in range(0, len(claimed), BATCH):
            finishes = [
                Finish(
                    id=inst.id,
                    claim_token=inst.claim_token,
                    state=tickwork.State.SUCCEEDED,
                    attempts=1,
                    started_us=now,
                    finished_us=now,
                )
                for inst in claimed[i : i + BATCH]
            ]
            accepted = await store.finish("bench-limit", finishes, now)
            assert all(accepted)
        t3 = time.perf_counter()
        assert await store.count(state=tickwork.State.SUCCEEDED) == n
    finally:
        await store.aclose()
    return {"insert": t1 - t0, "claim": t2 - t1, "finish": t3 - t2, "total": t3 - t0}


async def measure(n: int, repeat: int, tmpdir: str | None) -> dict[str, Any]:
    waves, at_once = [], []
    stores: dict[str, dict[str, list[float]]] = {"sqlite": {}, "memory": {}}
    with temp_dir(tmpdir) as d:
        for rep in range(repeat):
            waves.append(await trio_noop_rate_async(n))
            at_once.append(await trio_noop_rate_async(n, wave=None))
            for kind, phases in stores.items():
                store = (
                    tickwork.SQLiteStore(d / f"limit-{rep}.db")
                    if kind == "sqlite"
                    else tickwork.MemoryStore()
                )
                for phase, secs in (await store_alone(store, n)).items():
                    phases.setdefault(phase, []).append(n / secs)
    return {
        "n": n,
        "noop_waves": Stat.of(waves),
        "noop_at_once": Stat.of(at_once),
        "store": {k: {p: Stat.of(v) for p, v in phases.items()} for k, phases in stores.items()},
    }


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="tasks / instances (default 100,000)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    res = trio.run(measure, n, args.repeat, args.tmpdir)
    rows = [
        [
            "trio no-op tasks, all in one nursery (the limit of the ratios)",
            res["noop_at_once"].fmt(unit="/s"),
        ],
        ["trio no-op tasks, waves of 1,000 (the stricter one)", res["noop_waves"].fmt(unit="/s")],
    ]
    for kind, phases in res["store"].items():
        for phase in ("insert", "claim", "finish", "total"):
            label = f"{kind} store alone: {phase}" + (
                " (insert+claim+finish)" if phase == "total" else ""
            )
            rows.append([label, phases[phase].fmt(unit="/s")])
    print_table(
        f"Limits (n = {n:,}, median (min-max) of {args.repeat})",
        ["what", "rate"],
        rows,
        [
            "store alone: the Store protocol called directly, batches of 5,000, no actors",
            "SQLiteStore: WAL journal, synchronous=NORMAL, one transaction per batch",
        ],
    )
    payload = {
        "n": n,
        "repeat": args.repeat,
        "noop_waves_per_s": res["noop_waves"].as_dict(),
        "noop_at_once_per_s": res["noop_at_once"].as_dict(),
        "store_alone_per_s": {
            k: {p: s.as_dict() for p, s in phases.items()} for k, phases in res["store"].items()
        },
    }
    write_result("limit", payload, write=not (args.no_write or args.quick))
    emit_json("limit", payload)


if __name__ == "__main__":
    main()
