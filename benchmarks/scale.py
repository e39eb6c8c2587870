"""Scale: millions of stored future instances on one SQLite node, and a million due at once.

Part 1, stored future instances. One SQLite file grows through the checkpoints
(default 0, 100k, 1M, 3M, 10M stored instances, all due beyond the 1 h window, 4 per
second from 2 h ahead on, inserted in due order) with ``schedule_many`` batches of
``--batch`` on a node with default knobs. At each checkpoint that node is closed and a
fresh child process (``_common.py node-probe``) opens a node on the file and reports:
its RSS once ready and after idling (the growth is against the empty store), the time
until ``open_scheduler`` entered its block (ready), and its CPU while idle for
``--idle`` seconds (30 at the two largest checkpoints, 5 elsewhere). Also reported: the
insert rate of each stretch and the file size.

Part 2, due at once. A second file gets ``--drain`` instances due now (through the Store
API, as a client), then a child process opens a node with ``max_in_memory=20,000`` and
runs them all: drain rate (from the call to open_scheduler until all SUCCEEDED), its
ratio to the child's trio no-op task rate, and the peak RSS growth over the RSS before
the node opened.

Writes the plot ``benchmarks/results/rss_vs_stored.png`` (matplotlib, Agg).

    python benchmarks/scale.py [--quick] [--sizes 0,100000,1000000,3000000,10000000]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

import tickwork
from _common import (
    MIB,
    RESULTS_DIR,
    Stat,
    base_parser,
    check,
    drain_probe,
    emit_json,
    node_probe,
    open_node,
    print_table,
    temp_dir,
    write_result,
)
from tickwork.model import NewRow

FULL_SIZES = (0, 100_000, 1_000_000, 3_000_000, 10_000_000)
QUICK_SIZES = (0, 5_000, 20_000)
#: stored instances are due from this far ahead (beyond the default 1 h window) ...
LEAD = timedelta(hours=2)
#: ... one every this many microseconds (10M instances span ~29 days)
STEP_US = 250_000

TARGET_RSS_GROWTH_MIB = 40
TARGET_READY_S = 1.0
TARGET_IDLE_CPU_PCT = 1.0
TARGET_DRAIN_RSS_MIB = 100
TARGET_DRAIN_PER_S = 20_000
TARGET_INSERT_PER_S = 150_000


def file_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


async def grow(path: Path, have: int, target: int, batch: int, base: datetime) -> list[float]:
    """Insert instances ``have..target-1`` with schedule_many; per-batch rates."""
    rates = []
    async with open_node(tickwork.SQLiteStore(path)) as scheduler:
        for first in range(have, target, batch):
            k = min(batch, target - first)
            news = [
                tickwork.NewInstance("noop", base + timedelta(microseconds=(first + i) * STEP_US))
                for i in range(k)
            ]
            t0 = time.perf_counter()
            await scheduler.schedule_many(news)
            rates.append(k / (time.perf_counter() - t0))
            del news
    return rates


async def fill_due(path: Path, n: int, batch: int) -> None:
    """Store ``n`` instances due now, as a client (no node runs them yet)."""
    store = tickwork.SQLiteStore(path)
    await store.open()
    try:
        now = time.time_ns() // 1000
        for first in range(0, n, batch):
            rows = [NewRow(task="noop", run_at_us=now, params=b"")] * min(batch, n - first)
            await store.insert(rows, now)
    finally:
        await store.aclose()


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["stored"] / 1e6 for p in points]
    ready = [p["rss_ready"] / MIB for p in points]
    idle = [p["rss_after_idle"] / MIB for p in points]
    base = ready[0]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(xs, ready, "o-", label="node RSS once ready")
    ax.plot(xs, idle, "s--", label="node RSS after idling")
    ax.axhline(
        base + TARGET_RSS_GROWTH_MIB,
        color="tab:red",
        linestyle=":",
        label=f"target: empty store + {TARGET_RSS_GROWTH_MIB} MiB",
    )
    files = [p["file_bytes"] / MIB for p in points]
    ax2 = ax.twinx()
    ax2.plot(xs, files, "^:", color="tab:gray", label="database file (right axis)")
    ax2.set_ylabel("database file (MiB)", color="tab:gray")
    ax2.tick_params(axis="y", colors="tab:gray")
    ax2.set_ylim(0, max(files) * 1.15 or 1)
    ax.set_xlabel("stored future instances (millions)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("tickwork node RSS against stored instances (SQLiteStore)")
    ax.set_ylim(0, max([*idle, *ready, base + TARGET_RSS_GROWTH_MIB]) * 1.15)
    ax.grid(visible=True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=None, help="checkpoints (stored instances), comma-separated"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="instances per schedule_many (default 100,000)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=None,
        help="idle seconds at the largest two sizes (default 30)",
    )
    parser.add_argument(
        "--drain", type=int, default=None, help="instances due at once (default 1,000,000)"
    )
    parser.add_argument("--max-in-memory", type=int, default=20_000, help="for the drain")
    args = parser.parse_args()
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    if sizes[0] != 0:
        sizes = (0, *sizes)
    batch = args.batch or (5_000 if args.quick else 100_000)
    idle_big = args.idle or (1.0 if args.quick else 30.0)
    idle_small = min(idle_big, 5.0)
    drain_n = args.drain or (20_000 if args.quick else 1_000_000)
    max_in_memory = (
        min(args.max_in_memory, max(1, drain_n // 10)) if args.quick else args.max_in_memory
    )

    points: list[dict[str, Any]] = []
    with temp_dir(args.tmpdir) as d:
        db = d / "scale.db"
        base = datetime.now(UTC) + LEAD
        have = 0
        for size in sizes:
            insert_rates: list[float] = []
            t0 = time.perf_counter()
            if size > have or size == 0:
                insert_rates = trio.run(grow, db, have, size, batch, base)
            wall = time.perf_counter() - t0
            idle = idle_big if size in sizes[-2:] and size else idle_small
            probe = node_probe(str(db), idle_s=idle)
            point = {
                "stored": size,
                "file_bytes": file_bytes(db),
                "insert_per_s": Stat.of(insert_rates).as_dict() if insert_rates else None,
                "insert_overall_per_s": (size - have) / wall if size > have else None,
                **probe,
            }
            points.append(point)
            print(
                f"  stored {size:>12,}: file {point['file_bytes'] / MIB:8.1f} MiB, "
                f"RSS {probe['rss_ready'] / MIB:6.1f} MiB, ready {probe['ready_s']:.3f} s, "
                f"idle CPU {probe['idle_cpu_pct']:.2f} %",
                flush=True,
            )
            have = size
        drain_db = d / "drain.db"
        trio.run(fill_due, drain_db, drain_n, batch)
        drain = drain_probe(str(drain_db), n=drain_n, max_in_memory=max_in_memory)

    empty = points[0]
    base_rss = max(empty["rss_ready"], empty["rss_after_idle"])
    rows = []
    for p in points:
        rss = max(p["rss_ready"], p["rss_after_idle"])
        ins = p["insert_per_s"]
        rows.append(
            [
                f"{p['stored']:,}",
                "-" if ins is None else Stat(**ins).fmt(unit="/s"),
                "-" if ins is None else f"{p['insert_overall_per_s']:,.0f}/s",
                f"{p['file_bytes'] / MIB:,.1f} MiB",
                f"{rss / MIB:.1f} MiB",
                f"{(rss - base_rss) / MIB:+.1f} MiB",
                f"{p['ready_s'] * 1000:.0f} ms",
                f"{p['idle_cpu_pct']:.2f} % ({p['idle_s']:.0f} s)",
            ]
        )
    biggest = points[-1]
    growth = (max(biggest["rss_ready"], biggest["rss_after_idle"]) - base_rss) / MIB
    overall = [p["insert_per_s"]["median"] for p in points if p["insert_per_s"]]
    notes = [
        (
            f"schedule_many: median (min-max) rate of the calls (batches of {batch:,}) "
            "growing the store to this size, on a node with default knobs; with building the "
            "batches: the stretch's size / its wall time, NewInstance objects included"
        ),
        (
            "RSS: a fresh child process opening a node on the file (the larger of once-ready "
            "and after idling); growth against the empty store"
        ),
        (
            "ready: from calling open_scheduler until its block is entered; idle CPU: "
            "user+system of the whole child (trio and store threads) over the idle time"
        ),
        (
            f"largest ({biggest['stored']:,}): RSS growth {growth:+.1f} MiB "
            f"(target <= {TARGET_RSS_GROWTH_MIB}: "
            f"{check(growth, TARGET_RSS_GROWTH_MIB, higher_is_better=False)}), ready "
            f"{biggest['ready_s']:.3f} s "
            f"({check(biggest['ready_s'], TARGET_READY_S, higher_is_better=False)}), "
            f"idle CPU {biggest['idle_cpu_pct']:.2f} % "
            f"({check(biggest['idle_cpu_pct'], TARGET_IDLE_CPU_PCT, higher_is_better=False)}); "
            f"schedule_many (slowest stretch) {min(overall, default=0):,.0f}/s "
            f"({check(min(overall, default=0), TARGET_INSERT_PER_S)} vs {TARGET_INSERT_PER_S:,}/s)"
        ),
    ]
    print_table(
        "Scale: stored future instances (SQLiteStore)",
        [
            "stored",
            "schedule_many",
            "with building the batches",
            "file",
            "node RSS",
            "growth",
            "ready",
            "idle CPU",
        ],
        rows,
        notes,
    )
    drain_growth = drain["rss_growth"] / MIB
    print_table(
        f"Scale: {drain_n:,} due at once, max_in_memory={max_in_memory:,}",
        ["drain", "ratio to trio no-op", "peak RSS growth", "most held at once", "ready"],
        [
            [
                f"{drain['drain_per_s']:,.0f}/s",
                f"{drain['drain_per_s'] / drain['limit_at_once_per_s']:.2f}x",
                f"{drain_growth:+.1f} MiB",
                f"{drain['max_in_memory_seen']:,}",
                f"{drain['ready_s'] * 1000:.0f} ms",
            ]
        ],
        [
            (
                "drain = N / (call of open_scheduler -> N SUCCEEDED), in a fresh child process; "
                "one run (it is long); the limit is that child's trio no-op rate (all at once)"
            ),
            "peak RSS growth = VmHWM during the run - RSS before open_scheduler",
            (
                f"targets: drain >= {TARGET_DRAIN_PER_S:,}/s: "
                f"{check(drain['drain_per_s'], TARGET_DRAIN_PER_S)}; growth <= "
                f"{TARGET_DRAIN_RSS_MIB} MiB: "
                f"{check(drain_growth, TARGET_DRAIN_RSS_MIB, higher_is_better=False)}"
            ),
        ],
    )
    payload = {
        "sizes": list(sizes),
        "batch": batch,
        "idle_s": idle_big,
        "points": points,
        "drain": drain,
    }
    write = not (args.no_write or args.quick)
    if write:
        plot(points, RESULTS_DIR / "rss_vs_stored.png")
    elif args.quick:
        with temp_dir(args.tmpdir) as d:  # exercise the plot code, keep nothing
            plot(points, d / "rss_vs_stored.png")
    write_result("scale", payload, write=write)
    emit_json("scale", payload)


if __name__ == "__main__":
    main()
