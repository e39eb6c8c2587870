"""Where the durable SQLite fire rate loses to the trio limit: the store thread's hand-offs.

In one process and one trio run, interleaved per repetition, for each variant: the trio
no-op limit (N tasks at once), then N no-op instances due at once on a fresh SQLiteStore
(durable, as ``fire_throughput.py``). Every store call is timed on both sides:

- ``queue``: from the trio task submitting the call to the store thread starting it
  (the thread's wake-up and its first GIL acquisition);
- ``run``: the call on the store thread, wall time, and of it ``cpu`` (the thread's own
  CPU time): ``run - cpu`` is time the thread waited (for the GIL after each
  ``sqlite3_step``, or for a CPU);
- ``back``: from the call's end to the trio task running again.

Variants: ``thread`` (the store as shipped), ``inline`` (every store call on the trio
thread, no hand-off: an upper bound for that option), ``switch`` (``sys.setswitchinterval``
0.5 ms instead of 5 ms), ``rows=K`` (calls of at most K rows on the trio thread when
the store thread is idle, as shipped with ``INLINE_ROWS``), ``onecpu`` (the process
pinned to one CPU: no cross-core wake-ups). ``--lateness RATE`` measures lateness.py's
chunked feed instead of the burst.

    python benchmarks/store_thread_ab.py [-n 50000] [--repeat 3] [--variants thread,inline]
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

import tickwork
from _common import base_parser, emit_json, open_node, print_table, temp_dir, wait_recorded
from _common import trio_noop_rate_async as noop_rate
from tickwork.stores.sqlite import _worker

VARIANTS = ("thread", "inline", "switch", "onecpu")


class _Timings:
    def __init__(self) -> None:
        self.calls = 0
        self.queue = 0.0
        self.run = 0.0
        self.cpu = 0.0
        self.back = 0.0


_timings = [_Timings()]  # the current run's (replaced per run)
_original_call = _worker.Worker.call


async def _timed_call(self: _worker.Worker, fn: Callable[[], Any]) -> Any:
    t = _timings[0]
    marks: list[float] = []

    def run() -> Any:
        marks.append(time.perf_counter())
        c0 = time.thread_time()
        try:
            return fn()
        finally:
            t.cpu += time.thread_time() - c0
            marks.append(time.perf_counter())

    t0 = time.perf_counter()
    result = await _original_call(self, run)
    t3 = time.perf_counter()
    t.calls += 1
    if len(marks) == 2:
        t.queue += marks[0] - t0
        t.run += marks[1] - marks[0]
        t.back += t3 - marks[1]
    return result


async def _inline_call(_self: _worker.Worker, fn: Callable[[], Any]) -> Any:
    await trio.lowlevel.checkpoint_if_cancelled()
    t = _timings[0]
    t.calls += 1
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        return fn()
    finally:
        t.cpu += time.thread_time() - c0
        t.run += time.perf_counter() - t0


class _InlineWorker:
    """A Worker with no thread: every call runs on the caller's (trio) thread."""

    def __init__(self, name: str) -> None:
        self.name = name

    call = _inline_call

    def stop(self) -> None:
        pass


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    saved_switch = sys.getswitchinterval()
    saved_cpus = os.sched_getaffinity(0)
    store_mod = sys.modules["tickwork.stores.sqlite._store"]
    saved_worker = store_mod.Worker  # type: ignore[attr-defined]
    saved_rows = store_mod.INLINE_ROWS  # type: ignore[attr-defined]
    try:
        store_mod.INLINE_ROWS = -1  # type: ignore[attr-defined]  # every call handed off
        if name.startswith("rows="):  # the shipped hybrid, with this threshold
            store_mod.INLINE_ROWS = int(name[5:])  # type: ignore[attr-defined]
        if name == "inline":
            store_mod.Worker = _InlineWorker  # type: ignore[attr-defined]
        else:
            _worker.Worker.call = _timed_call  # type: ignore[method-assign]
        if name == "switch":
            sys.setswitchinterval(0.0005)
        if name == "onecpu":
            os.sched_setaffinity(0, {min(saved_cpus)})  # threads started later inherit it
        yield
    finally:
        store_mod.Worker = saved_worker  # type: ignore[attr-defined]
        store_mod.INLINE_ROWS = saved_rows  # type: ignore[attr-defined]
        _worker.Worker.call = _original_call  # type: ignore[method-assign]
        sys.setswitchinterval(saved_switch)
        os.sched_setaffinity(0, saved_cpus)


async def fire(path: Path, n: int) -> dict[str, float]:
    _timings[0] = _Timings()
    out: dict[str, Any] = {}
    store = tickwork.SQLiteStore(path)
    async with open_node(store, out) as scheduler:
        news = [tickwork.NewInstance("noop", datetime.now(UTC), b"") for _ in range(n)]
        gc.collect()
        _timings[0] = _Timings()
        t0, c0 = time.perf_counter(), time.process_time()
        await scheduler.schedule_many(news)
        await wait_recorded(scheduler, n)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = _timings[0]
    return {
        "rate": n / wall,
        "cpu_us": cpu / n * 1e6,
        "calls_per_k": t.calls / n * 1000,
        "queue_ms": t.queue / max(t.calls, 1) * 1e3,
        "run_ms": t.run / max(t.calls, 1) * 1e3,
        "wait_ms": (t.run - t.cpu) / max(t.calls, 1) * 1e3,
        "back_ms": t.back / max(t.calls, 1) * 1e3,
        "handoff_share": (t.queue + t.back + t.run - t.cpu) / wall,
    }


async def lateness(path: Path, rate: int, duration: float) -> dict[str, float]:
    """``lateness.py``'s chunked feed at ``rate`` (default GC settings)."""
    import lateness as lt

    _timings[0] = _Timings()
    r = await lt.run_rate(path, rate, duration, "chunks", chunk=1.0, ahead=2.0)
    t = _timings[0]
    calls = max(t.calls, 1)
    return {
        **{k: r[k] for k in ("p50_ms", "p99_ms", "max_ms")},
        "handed_off": t.calls,
        "queue_ms": t.queue / calls * 1e3,
        "run_ms": t.run / calls * 1e3,
        "back_ms": t.back / calls * 1e3,
    }


async def measure(
    names: list[str], n: int, repeat: int, tmp: str | None, late: tuple[int, float] | None
) -> dict[str, Any]:
    per: dict[str, list[dict[str, float]]] = {v: [] for v in names}
    with temp_dir(tmp) as d:
        for rep in range(repeat):
            for v in names:
                with variant(v):
                    limit = await noop_rate(n, wave=None)
                    if late is not None:
                        r = await lateness(d / f"{v}-{rep}.db", *late)
                    else:
                        r = await fire(d / f"{v}-{rep}.db", n)
                        r["ratio"] = r["rate"] / limit
                r["limit"] = limit
                per[v].append(r)
                print(v, {k: round(x, 3) for k, x in r.items()}, file=sys.stderr, flush=True)
                gc.collect()
    return per


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="default 50,000; --quick 2,000")
    parser.add_argument("--variants", default=None, help=f"default {','.join(VARIANTS)}")
    parser.add_argument(
        "--lateness", type=int, default=None, help="instead: lateness.py's chunked feed, /s"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="with --lateness, s")
    args = parser.parse_args()
    args.n = args.n or (2_000 if args.quick else 50_000)
    variants = args.variants or ("thread,inline" if args.quick else ",".join(VARIANTS))
    names = [v for v in variants.split(",") if v]
    late = None if args.lateness is None else (args.lateness, args.duration)
    per = trio.run(measure, names, args.n, args.repeat, args.tmpdir, late)
    keys = ["rate", "limit", "ratio", "cpu_us", "calls_per_k", "queue_ms", "run_ms", "wait_ms"]
    keys += ["back_ms", "handoff_share"]
    if late is not None:
        keys = ["p50_ms", "p99_ms", "max_ms", "handed_off", "queue_ms", "run_ms", "back_ms"]
        keys += ["limit"]
    med = {v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in per.items()}
    rows = [[v, *(f"{med[v][k]:,.3g}" for k in keys)] for v in names]
    print_table(
        "Store thread hand-offs (medians)",
        ["variant", *keys],
        rows,
        [
            (
                f"N = {args.n:,} no-op instances due at once, SQLiteStore, "
                f"{args.repeat} reps, variants interleaved in one process"
            ),
            "cpu_us: process CPU per instance; calls_per_k: store calls per 1,000 instances",
            "queue/run/wait/back: per store call (see the module docstring)",
        ],
    )
    emit_json("store_thread_ab", {"n": args.n, "repeat": args.repeat, "medians": med})


if __name__ == "__main__":
    main()
