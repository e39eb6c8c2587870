"""The SQLite store's fire path in a process of its own vs on the store thread (issue 15).

In one process and one trio run, interleaved per repetition, for each variant: the trio
no-op limit (N tasks at once), then N no-op instances due at once on a fresh store,
durable (as ``fire_throughput.py``), from ``schedule_many`` until N are recorded
SUCCEEDED. Variants:

- ``thread``: ``SQLiteStore`` as shipped (SQL on the store's thread, one GIL);
- ``process``: the prototype ``_store_process.ProcessSQLiteStore`` (insert, claim, start,
  finish and next_pending_at in a child process, msgpack frames over a socketpair).

Reported per variant (medians): the fire rate, the limit, their ratio; CPU per instance:
the trio thread's own (``main``), the rest of this process (``thread``: the store thread),
the child's (``child``) and their sum; store round trips per 1,000 instances.

    python benchmarks/store_process_ab.py [-n 50000] [--repeat 3] [--variants thread,process]

Instructions per instance, immune to load (``--trace-children=yes`` counts the child in a
file of its own; per instance = the difference between N = 6,000 and N = 2,000 / 4,000):

    valgrind --tool=callgrind --trace-children=yes python benchmarks/store_process_ab.py \
        -n N --repeat 1 --variants V --poll 0.05 --no-write
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

import tickwork
from _common import base_parser, emit_json, open_node, print_table, temp_dir, wait_recorded
from _common import trio_noop_rate_async as noop_rate
from _store_process import ProcessSQLiteStore
from store_thread_ab import _timings, variant

VARIANTS = ("thread", "process")


async def fire(path: Path, kind: str, n: int, poll: float = 0.001) -> dict[str, float]:
    store: tickwork.SQLiteStore
    store = ProcessSQLiteStore(path) if kind == "process" else tickwork.SQLiteStore(path)
    out: dict[str, Any] = {}
    async with open_node(store, out) as scheduler:
        news = [tickwork.NewInstance("noop", datetime.now(UTC), b"") for _ in range(n)]
        gc.collect()
        child0 = await store.child_cpu() if isinstance(store, ProcessSQLiteStore) else (0, 0, 0)
        calls0 = store.rpc_calls if isinstance(store, ProcessSQLiteStore) else 0
        timings = _timings[0]  # the store thread's calls (store_thread_ab's timer)
        thread0 = (timings.run, timings.cpu, timings.calls)
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        await scheduler.schedule_many(news)
        await wait_recorded(scheduler, n, poll=poll)
        wall = time.perf_counter() - t0
        cpu, main = time.process_time() - c0, time.thread_time() - m0
        child = busy = busy_cpu = 0.0
        calls = 0
        if isinstance(store, ProcessSQLiteStore):
            calls = store.rpc_calls - calls0
            child1 = await store.child_cpu()
            child, busy, busy_cpu = (a - b for a, b in zip(child1, child0, strict=True))
        else:
            busy, busy_cpu = timings.run - thread0[0], timings.cpu - thread0[1]
            calls = timings.calls - thread0[2]
        succeeded = await scheduler.count(state=tickwork.State.SUCCEEDED)
        if succeeded != n:
            raise RuntimeError(f"{kind}: the store counts {succeeded} SUCCEEDED, not {n}")
    us = 1e6 / n
    return {
        "rate": n / wall,
        "main_us": main * us,
        "thread_us": (cpu - main) * us,
        "child_us": child * us,
        "cpu_us": (cpu + child) * us,
        "calls_per_k": calls / n * 1000,
        # the store's side (its thread, or the child): share of the wall time inside a
        # call, and the share of that time it was not on a CPU
        "store_busy": busy / wall,
        "store_off_cpu": (busy - busy_cpu) / busy if busy else 0.0,
        "shutdown_s": out.get("shutdown_s", float("nan")),
    }


async def measure(
    names: list[str], n: int, repeat: int, tmp: str | None, poll: float
) -> dict[str, Any]:
    per: dict[str, list[dict[str, float]]] = {v: [] for v in names}
    with temp_dir(tmp) as d:
        for rep in range(repeat):
            for v in names:
                limit = await noop_rate(n, wave=None)
                with variant("thread"):  # times the store thread's calls (unused: process)
                    _timings[0] = type(_timings[0])()
                    r = await fire(d / f"{v}-{rep}.db", v, n, poll)
                r["limit"] = limit
                r["ratio"] = r["rate"] / limit
                per[v].append(r)
                print(v, {k: round(x, 3) for k, x in r.items()}, file=sys.stderr, flush=True)
                gc.collect()
    return per


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="default 50,000; --quick 2,000")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--poll",
        type=float,
        default=0.001,
        help=(
            "how often the end is polled, s; under valgrind use 0.05 or more: each poll "
            "costs instructions, so a run that waits longer would count more"
        ),
    )
    args = parser.parse_args()
    args.n = args.n or (2_000 if args.quick else 50_000)
    names = [v for v in args.variants.split(",") if v]
    per = trio.run(measure, names, args.n, args.repeat, args.tmpdir, args.poll)
    keys = ["rate", "limit", "ratio", "main_us", "thread_us", "child_us", "cpu_us"]
    keys += ["calls_per_k", "store_busy", "store_off_cpu"]
    med = {v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in per.items()}
    rows = [[v, *(f"{med[v][k]:,.3g}" for k in keys)] for v in names]
    print_table(
        "SQLite store: process vs thread (medians)",
        ["variant", *keys],
        rows,
        [
            (
                f"N = {args.n:,} no-op instances due at once, {args.repeat} reps, variants "
                "interleaved in one process, each with the trio no-op limit just before it"
            ),
            "ratio: rate / limit, per repetition, then the median",
            (
                "CPU µs per instance: main = the trio thread, thread = the rest of this "
                "process (the store thread), child = the store process, cpu_us = all"
            ),
            "calls_per_k: store calls (hand-offs, or round trips) per 1,000 instances",
            (
                "store_busy: share of the wall time the store thread (thread) or the child "
                "(process) spent inside store calls; store_off_cpu: share of that time it "
                "was not on a CPU (the thread: the GIL or no free CPU; the child: no free "
                "CPU, it has a GIL of its own)"
            ),
        ],
    )
    emit_json("store_process_ab", {"n": args.n, "repeat": args.repeat, "medians": med, "runs": per})


if __name__ == "__main__":
    main()
