"""Lateness: how late instances start at a steady rate, on SQLiteStore and the real clock.

For each rate (default 2,000/s and 10,000/s) and repetition: a fresh SQLiteStore (a tmp
file; WAL, synchronous=NORMAL) and node with default knobs on the real SystemClock; a
feeder schedules the instances in chunks of ``--chunk`` seconds, each chunk ``--ahead``
seconds before it is due (one ``schedule_many`` per chunk), with due times spread evenly
at the rate for ``--duration`` seconds. So storing, claiming, firing and recording all
happen at the same time, as in a steady state, while the feed is never the bottleneck.
The same again after ``gc.freeze()`` (feed ``chunks+freeze``: what ``tickwork run`` does
when it starts), and with everything stored first (feed ``upfront``).

Each instance's task records ``time.time_ns()`` when it starts; lateness = start - due.
Reported per rate: p50, p99, p99.9 and max in milliseconds (median (min-max) over the
repetitions), and the earliest start relative to due (never negative: nothing fires
early). Every instance must end SUCCEEDED.

    python benchmarks/lateness.py [--quick] [--rates 2000,10000] [--duration 10] [--feed all]
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

import tickwork
from _common import (
    Stat,
    base_parser,
    check,
    emit_json,
    open_node,
    percentile,
    print_table,
    temp_dir,
    wait_recorded,
    write_result,
)

TARGET_P99_MS = {2_000: 2.0, 10_000: 20.0}
_FROZEN = "+freeze"
FEEDS = ("chunks", f"chunks{_FROZEN}", "upfront")
#: the feeder builds NewInstance objects this many at a time, starting this long (per
#: instance: ~3 µs each here, so with room to spare) before the chunk is to be stored
_BUILD_SLICE = 500
_BUILD_LEAD_US_PER_ITEM = 20


class Stamp(tickwork.Task):
    """Records (due µs, start ns); params are the due time as 8 little-endian bytes."""

    name = "stamp"

    def __init__(self) -> None:
        self.starts: list[tuple[int, int]] = []

    async def run(self, params: bytes) -> None:
        self.starts.append((int.from_bytes(params, "little"), time.time_ns()))


def new_instances(due: list[int]) -> list[tickwork.NewInstance]:
    return [
        tickwork.NewInstance("stamp", datetime.fromtimestamp(d / 1e6, UTC), d.to_bytes(8, "little"))
        for d in due
    ]


async def run_rate(
    path: Path,
    rate: int,
    duration: float,
    feed: str,
    *,
    chunk: float,
    ahead: float,
    gc_freeze: bool = False,
) -> dict[str, Any]:
    """One run at ``rate``; ``feed`` is ``chunks`` (steady state: schedule_many of
    ``chunk`` seconds of instances, ``ahead`` seconds before they are due) or ``upfront``
    (everything stored and claimed before the first one is due)."""
    task = Stamp()
    total = int(rate * duration)
    report: dict[str, Any] = {}
    if feed == "upfront":
        # long enough to store and claim everything first (~50 µs per instance here)
        ahead = max(ahead, 2.0 + total / 15_000)
        chunk = duration
    async with open_node(tickwork.SQLiteStore(path), report, tasks=[task]) as scheduler:
        start_us = time.time_ns() // 1_000 + int(ahead * 1e6)
        step_us = 1e6 / rate
        per_chunk = max(1, int(rate * chunk))
        margins: list[float] = []

        # Each chunk's NewInstance objects are built just before it is stored, 500 at a
        # time between checkpoints, as a well-behaved caller would: the caller's work
        # falls inside the run without holding up due runs. (Building all of them first
        # and holding them for the whole run, as this benchmark once did, puts up to
        # 100,000 objects of the benchmark's own in every full GC pass, each pass a stall:
        # see docs/benchmarks.md, section 3.)
        dues = [
            [start_us + round(i * step_us) for i in range(first, min(total, first + per_chunk))]
            for first in range(0, total, per_chunk)
        ]

        async def build(due: list[int]) -> list[tickwork.NewInstance]:
            news: list[tickwork.NewInstance] = []
            for k in range(0, len(due), _BUILD_SLICE):
                await trio.lowlevel.checkpoint()
                news += new_instances(due[k : k + _BUILD_SLICE])
            return news

        async def feeder() -> None:
            clock = scheduler._clock  # noqa: SLF001
            for due in dues:
                # build, then store the chunk `ahead` seconds before its first one is due
                store_at = due[0] - int(ahead * 1e6)
                await clock.sleep_until_us(store_at - _BUILD_LEAD_US_PER_ITEM * len(due))
                news = await build(due)
                await clock.sleep_until_us(store_at)
                await scheduler.schedule_many(news)
                del news
                if feed == "upfront":  # wait until the node holds them all
                    while scheduler.statistics().in_memory < total:
                        await trio.sleep(0.01)
                # how long before its first due time the chunk was stored (and claimed)
                margins.append((due[0] - time.time_ns() // 1_000) / 1e3)

        gc.collect()
        if gc_freeze:  # what exists now stays out of the GC's full passes (tickwork run does)
            gc.freeze()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feeder)
                await wait_recorded(scheduler, total, poll=0.01)
        finally:
            gc.unfreeze()
        succeeded = await scheduler.count(state=tickwork.State.SUCCEEDED)
        stats = scheduler.statistics()
    if succeeded != total or len(task.starts) != total:
        raise RuntimeError(f"{succeeded} SUCCEEDED and {len(task.starts)} runs, expected {total}")
    late_ms = sorted((start_ns - due_us * 1_000) / 1e6 for due_us, start_ns in task.starts)
    return {
        "n": total,
        "p50_ms": percentile(late_ms, 0.50),
        "p99_ms": percentile(late_ms, 0.99),
        "p999_ms": percentile(late_ms, 0.999),
        "max_ms": late_ms[-1],
        "min_ms": late_ms[0],
        "mean_ms": sum(late_ms) / total,
        "min_feed_margin_ms": min(margins),
        "missed": stats.counts.get("MISSED", 0),
        **report,
    }


async def measure(
    rates: list[int], feeds: list[str], args: Any, duration: float
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with temp_dir(args.tmpdir) as d:
        for rep in range(args.repeat):
            for feed in feeds:
                for rate in rates:
                    path = d / f"lateness-{feed}-{rate}-{rep}.db"
                    run = await run_rate(
                        path,
                        rate,
                        duration,
                        feed.removesuffix(_FROZEN),
                        chunk=args.chunk,
                        ahead=args.ahead,
                        gc_freeze=feed.endswith(_FROZEN),
                    )
                    out.setdefault((feed, rate), []).append(run)
    return out


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="2000,10000", help="instances per second, comma-separated"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per rate (default 10)"
    )
    parser.add_argument(
        "--feed",
        default=None,
        help=f"comma-separated, of {', '.join(FEEDS)}; or all (default: all; --quick: chunks)",
    )
    parser.add_argument(
        "--chunk", type=float, default=1.0, help="seconds of instances per schedule_many"
    )
    parser.add_argument(
        "--ahead",
        type=float,
        default=None,
        help="seconds a chunk is stored before it is due (default 2; --quick 1)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval() for this run (seconds; Python's default is 0.005)",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    duration = args.duration or (1.0 if args.quick else 10.0)
    args.ahead = args.ahead or (1.0 if args.quick else 2.0)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    feeds = (args.feed or ("chunks" if args.quick else "all")).split(",")
    if feeds == ["all"]:
        feeds = list(FEEDS)
    if unknown := set(feeds) - set(FEEDS):
        parser.error(f"--feed: unknown {', '.join(sorted(unknown))}; choose from {FEEDS}")
    res = trio.run(measure, rates, feeds, args, duration)
    rows = []
    notes = [
        (
            f"{duration:g} s per rate on the real clock, SQLiteStore (WAL, synchronous=NORMAL), "
            f"default knobs; {args.repeat} repetitions: median (min-max) of each percentile; "
            "start time taken inside the task with time.time_ns()"
        ),
        (
            f"feed chunks: one schedule_many per {args.chunk:g} s of instances, "
            f"{args.ahead:g} s before they are due (storing, claiming, firing and recording "
            "overlap: the steady state); upfront: all stored and claimed before the first "
            "is due (firing and recording only)"
        ),
        (
            f"chunks{_FROZEN}: the same as chunks with gc.freeze() before the run, as "
            "`tickwork run` does when it starts: what the process holds then (modules, the "
            "benchmark's own objects) stays out of the garbage collector's full passes"
        ),
    ]
    if args.switch_interval is not None:
        notes.append(f"sys.setswitchinterval({args.switch_interval:g})")
    summary: dict[str, Any] = {}
    for (fd, rate), runs in res.items():
        s = {
            k: Stat.of(r[k] for r in runs)
            for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "min_ms")
        }
        summary[f"{fd}:{rate}"] = {k: v.as_dict() for k, v in s.items()} | {
            "feed": fd,
            "rate": rate,
            "n": runs[0]["n"],
            "missed": sum(r["missed"] for r in runs),
            "min_feed_margin_ms": min(r["min_feed_margin_ms"] for r in runs),
            "shutdown_hung": sum(bool(r["shutdown_hung"]) for r in runs),
        }
        target = TARGET_P99_MS.get(rate)
        verdict = (
            f"<= {target:g} ms: {check(s['p99_ms'].median, target, higher_is_better=False)}"
            if target
            else "-"
        )
        rows.append(
            [
                f"{rate:,}/s",
                fd,
                f"{runs[0]['n']:,}",
                s["p50_ms"].fmt(".2f"),
                s["p99_ms"].fmt(".2f"),
                s["p999_ms"].fmt(".1f"),
                s["max_ms"].fmt(".1f"),
                s["min_ms"].fmt(".2f"),
                verdict,
            ]
        )
        if min(r["min_feed_margin_ms"] for r in runs) < 0:
            notes.append(f"{rate:,}/s {fd}: the feed fell behind (stored after due) in some runs")
        if any(r["shutdown_hung"] for r in runs):
            notes.append(f"{rate:,}/s {fd}: leaving open_scheduler hung (cancelled) in some runs")
    print_table(
        "Lateness (start - due), milliseconds",
        ["rate", "feed", "instances", "p50", "p99", "p99.9", "max", "earliest", "p99 target"],
        rows,
        notes,
    )
    payload = {
        "duration_s": duration,
        "chunk_s": args.chunk,
        "ahead_s": args.ahead,
        "repeat": args.repeat,
        "switch_interval": args.switch_interval,
        "runs": summary,
    }
    write_result("lateness", payload, write=not (args.no_write or args.quick))
    emit_json("lateness", payload)


if __name__ == "__main__":
    main()
