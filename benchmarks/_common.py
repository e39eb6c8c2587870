"""Shared helpers of the benchmark scripts: timing, statistics, tables, JSON, RSS, children.

Every benchmark script is runnable alone (``python benchmarks/NAME.py --help``), prints a
readable table and, as its last line of output, one line of JSON with its results (see
:func:`emit_json`). ``run_all.py`` runs them all and collects those lines.

Machines are noisy, so every figure is the median of at least three repetitions with
the min and max beside it, and every throughput is also given as a ratio to a limit
measured in the same process, in the same run (:func:`trio_noop_rate`).

This module is also the child-process node runner (``python benchmarks/_common.py
node-probe --db FILE``): a fresh interpreter that opens a tickwork node on an existing
database and reports its RSS, how long it took to be ready and its idle CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
JSON_PREFIX = "BENCH_JSON "
MIB = 1024 * 1024

# --------------------------------------------------------------------------------------
# statistics and formatting


@dataclass(frozen=True)
class Stat:
    """The median of repeated measurements, with their min and max."""

    median: float
    min: float
    max: float
    values: tuple[float, ...] = field(default=())

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("no measurements")
        return cls(statistics.median(vals), min(vals), max(vals), vals)

    def scaled(self, factor: float) -> Stat:
        return Stat(
            self.median * factor,
            self.min * factor,
            self.max * factor,
            tuple(v * factor for v in self.values),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "values": list(self.values),
        }

    def fmt(self, spec: str = ",.0f", unit: str = "") -> str:
        """``median (min-max)``, e.g. ``25,310/s (24,800-25,900)``."""
        if len(self.values) <= 1:
            return f"{self.median:{spec}}{unit}"
        return f"{self.median:{spec}}{unit} ({self.min:{spec}}-{self.max:{spec}})"


def ratio_stat(num: Sequence[float], den: Sequence[float]) -> Stat:
    """Per-repetition ratios ``num[i] / den[i]`` (paired measurements of one run)."""
    return Stat.of(n / d for n, d in zip(num, den, strict=True) if d)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def fmt_bytes(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def check(value: float, target: float, *, higher_is_better: bool = True) -> str:
    """``PASS``/``MISS`` against a target."""
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def print_table(
    title: str, headers: Sequence[str], rows: Iterable[Sequence[object]], notes: Iterable[str] = ()
) -> str:
    """Print (and return) a GitHub-flavoured Markdown table with a title and notes."""
    body = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [f"### {title}", "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in body]
    notes = list(notes)
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    text = "\n".join(out) + "\n"
    print(text, flush=True)
    return text


def emit_json(name: str, payload: dict[str, Any]) -> None:
    """Print the one JSON line of results (``BENCH_JSON {...}``) that run_all collects."""
    record = {"benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds")}
    record.update(payload)
    print(JSON_PREFIX + json.dumps(record, separators=(",", ":"), default=str), flush=True)


def parse_json_line(stdout: str) -> dict[str, Any] | None:
    """The last ``BENCH_JSON`` line of a script's output, parsed."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(JSON_PREFIX):
            return json.loads(line[len(JSON_PREFIX) :])  # type: ignore[no-any-return]
    return None


def write_result(name: str, payload: dict[str, Any], *, write: bool) -> Path | None:
    """Save ``payload`` as ``benchmarks/results/NAME.json`` (unless ``write`` is False)."""
    if not write:
        return None
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------------
# command lines


class BenchParser(argparse.ArgumentParser):
    """An ArgumentParser whose ``--repeat`` defaults to 3, or to 1 with ``--quick``."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns = super().parse_args(args, namespace)
        if getattr(ns, "repeat", 0) is None:
            ns.repeat = 1 if getattr(ns, "quick", False) else 3
        return ns


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark has: --quick, --repeat, --no-write, --tmpdir."""
    parser = BenchParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one repetition: a smoke test that finishes in seconds",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions of every measurement (median, min, max); default 3, --quick 1",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="do not write benchmarks/results/*.json (and plots)",
    )
    parser.add_argument(
        "--tmpdir",
        default=None,
        help="where the temporary database files go (default: the system temp dir)",
    )
    return parser


@contextmanager
def temp_dir(base: str | None = None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tickwork-bench-", dir=base) as d:
        yield Path(d)


# --------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import psutil
    import trio

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------
# the limit: how fast this process spawns and finishes no-op trio tasks

#: The default ``max_concurrency`` of open_scheduler: the no-op baseline runs its tasks in
#: waves of this many, the fastest way trio runs a stream of tasks under the same bound.
NOOP_WAVE = 1_000


async def _noop() -> None:
    pass


async def trio_noop_rate_async(n: int = 100_000, wave: int | None = NOOP_WAVE) -> float:
    """Tasks per second: spawn ``n`` no-op tasks and wait for them all to finish.

    ``wave``: at most this many at once (one nursery per wave); None spawns all ``n``
    into one nursery.
    """
    import trio

    gc.collect()
    size = n if wave is None else wave
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(size, n - done)
        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(_noop)
        done += k
    return n / (time.perf_counter() - t0)


def trio_noop_rate(n: int = 100_000, wave: int | None = NOOP_WAVE) -> float:
    """:func:`trio_noop_rate_async` in a ``trio.run`` of its own."""
    import trio

    return trio.run(trio_noop_rate_async, n, wave)


# --------------------------------------------------------------------------------------
# memory and CPU


def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def peak_rss_bytes(pid: int | None = None) -> int:
    """The process's high-water RSS (``VmHWM``), resettable with :func:`reset_peak_rss`."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return rss_bytes(pid)


def reset_peak_rss() -> None:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs`` = 5)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (its threads included)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# --------------------------------------------------------------------------------------
# a no-op task, and waiting until the store has recorded everything


def noop_task() -> Any:
    """A tickwork Task named ``noop`` whose run returns at once."""
    import tickwork

    class Noop(tickwork.Task):
        name = "noop"

        async def run(self, params: bytes) -> None:
            del params

    return Noop()


async def wait_recorded(scheduler: Any, n: int, *, poll: float = 0.001) -> float:
    """Wait until the node has durably recorded ``n`` SUCCEEDED instances; returns
    ``time.perf_counter()`` at that moment.

    The node's recorder counts an outcome only after the store accepted the transaction
    that wrote it, so the in-memory count (polled every ``poll`` seconds, no store call)
    is the durable one; callers check ``scheduler.count(state=SUCCEEDED)`` afterwards.
    """
    import trio

    while scheduler.statistics().counts.get("SUCCEEDED", 0) < n:
        await trio.sleep(poll)
    return time.perf_counter()


#: How long leaving open_scheduler may take before a benchmark gives up on it and
#: cancels it (with nothing running, a shutdown takes milliseconds).
SHUTDOWN_LIMIT_S = 15.0


@asynccontextmanager
async def open_node(
    store: Any, report: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[Any]:
    """``tickwork.open_scheduler(store, tasks=[noop], **knobs)`` whose shutdown is timed
    and bounded: ``report["shutdown_s"]`` gets how long leaving the block took, and
    ``report["shutdown_hung"]`` whether it had to be cancelled after
    :data:`SHUTDOWN_LIMIT_S` (a bug, reported in the tables, never hidden).
    """
    import trio

    import tickwork

    knobs.setdefault("tasks", [noop_task()])
    # nothing runs at shutdown in these benchmarks; the grace only bounds a bug's cost
    knobs.setdefault("shutdown_grace", timedelta(seconds=5))
    report = {} if report is None else report
    t0 = 0.0
    with trio.CancelScope() as guard:
        async with tickwork.open_scheduler(store, **knobs) as scheduler:
            try:
                yield scheduler
            finally:
                guard.deadline = trio.current_time() + SHUTDOWN_LIMIT_S
                t0 = time.perf_counter()
    report["shutdown_s"] = time.perf_counter() - t0
    report["shutdown_hung"] = guard.cancelled_caught
    if guard.cancelled_caught:
        print(
            f"WARNING: leaving open_scheduler did not finish in {SHUTDOWN_LIMIT_S:.0f} s; "
            "cancelled it",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def gc_paused() -> Iterator[None]:
    """No collection between measurements' setup and timing (collected before)."""
    gc.collect()
    yield
    gc.collect()


# --------------------------------------------------------------------------------------
# child processes


def run_python_child(
    argv: Sequence[str],
    *,
    python: str | None = None,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python ARGV`` and return its ``BENCH_JSON`` line, parsed.

    Raises:
        RuntimeError: the child failed or printed no result line.
    """
    cmd = [python or sys.executable, *argv]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    result = parse_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(
            f"child {' '.join(cmd)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return result


def node_probe(db: str, *, idle_s: float) -> dict[str, Any]:
    """In a child process: open a tickwork node on ``db`` and measure it.

    Returns the RSS once tickwork is imported (before the node), the time from the call
    to ``open_scheduler`` until its block is entered (ready), the RSS once ready and
    after idling, the CPU used while idle for ``idle_s`` seconds (all the process's
    threads: trio's and the store's), and the peak RSS.
    """
    return run_python_child(
        [str(BENCH_DIR / "_common.py"), "node-probe", "--db", db, "--idle", str(idle_s)],
        timeout=max(600.0, idle_s * 4),
    )


def _node_probe_main(args: argparse.Namespace) -> None:
    import trio

    import tickwork

    gc.collect()
    rss_imported = rss_bytes()

    async def main() -> dict[str, Any]:
        store = tickwork.SQLiteStore(args.db)
        t0 = time.perf_counter()
        async with open_node(store) as scheduler:
            ready_s = time.perf_counter() - t0
            # let the first pull and heartbeat settle, then measure idleness
            await trio.sleep(0.5)
            gc.collect()
            rss_ready = rss_bytes()
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            await trio.sleep(args.idle)
            cpu1, wall1 = cpu_seconds(), time.perf_counter()
            rss_idle = rss_bytes()
            stats = scheduler.statistics()
            pending = await scheduler.count(state=tickwork.State.PENDING)
        return {
            "rss_imported": rss_imported,
            "ready_s": ready_s,
            "rss_ready": rss_ready,
            "rss_after_idle": rss_idle,
            "idle_s": wall1 - wall0,
            "idle_cpu_s": cpu1 - cpu0,
            "idle_cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
            "peak_rss": peak_rss_bytes(),
            "in_memory": stats.in_memory,
            "pending": pending,
        }

    emit_json("node-probe", trio.run(main))


def drain_probe(db: str, *, n: int, max_in_memory: int) -> dict[str, Any]:
    """In a child process: open a node on ``db`` (holding ``n`` due instances) with
    ``max_in_memory`` and measure how fast it drains them and how much memory it takes."""
    return run_python_child(
        [
            str(BENCH_DIR / "_common.py"),
            "drain-probe",
            "--db",
            db,
            "-n",
            str(n),
            "--max-in-memory",
            str(max_in_memory),
        ]
    )


def _drain_probe_main(args: argparse.Namespace) -> None:
    import trio

    import tickwork

    async def main() -> dict[str, Any]:
        limit_before = await trio_noop_rate_async(100_000, wave=None)
        gc.collect()
        rss_before = rss_bytes()
        reset_peak_rss()
        store = tickwork.SQLiteStore(args.db)
        t0 = time.perf_counter()
        async with open_node(store, max_in_memory=args.max_in_memory) as scheduler:
            t_ready = time.perf_counter()
            samples = []
            while scheduler.statistics().counts.get("SUCCEEDED", 0) < args.n:
                await trio.sleep(0.05)
                samples.append(scheduler.statistics().in_memory)
            t_done = time.perf_counter()
            succeeded = await scheduler.count(state=tickwork.State.SUCCEEDED)
        peak = peak_rss_bytes()
        limit_after = await trio_noop_rate_async(100_000, wave=None)
        return {
            "n": args.n,
            "max_in_memory": args.max_in_memory,
            "succeeded": succeeded,
            "ready_s": t_ready - t0,
            "drain_s": t_done - t0,
            "drain_per_s": args.n / (t_done - t0),
            "rss_before": rss_before,
            "peak_rss": peak,
            "rss_growth": peak - rss_before,
            "max_in_memory_seen": max(samples, default=0),
            "limit_at_once_per_s": (limit_before + limit_after) / 2,
        }

    emit_json("drain-probe", trio.run(main))


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="benchmark helpers run as child processes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    probe = sub.add_parser("node-probe", help="open a node on DB, report RSS, ready time, idle CPU")
    probe.add_argument("--db", required=True)
    probe.add_argument("--idle", type=float, default=30.0, help="idle seconds to measure CPU over")
    drain = sub.add_parser("drain-probe", help="open a node on DB and drain N due instances")
    drain.add_argument("--db", required=True)
    drain.add_argument("-n", type=int, required=True, help="due instances stored in DB")
    drain.add_argument("--max-in-memory", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.cmd == "node-probe":
        _node_probe_main(args)
    elif args.cmd == "drain-probe":
        _drain_probe_main(args)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    _main()
