"""Run every benchmark script, one after another, and collect their results.

Each script runs in its own process with the same flags (``--quick``, ``--no-write``);
its table is shown as it runs, and its last output line (``BENCH_JSON {...}``) is
collected. At the end a summary prints every figure that has a target next to that
target. The full mode (neither ``--quick`` nor ``--no-write``) also writes
``benchmarks/results/*.json`` (one per script, plus ``summary.json``), the plot, and
``results/tables.md``: every table of this run, ready to paste into
``docs/benchmarks.md`` (``--docs docs/benchmarks.md`` pastes them itself).

While a benchmark runs, the CPU used by *other* processes on the machine is measured and
reported: figures taken while something else kept the cores busy are not comparable.

    python benchmarks/run_all.py [--quick] [--no-write] [--only fire_throughput,lateness]

CI runs ``python benchmarks/run_all.py --quick --no-write`` as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    check,
    machine_info,
    parse_json_line,
    print_table,
)

#: The core suite, in the order it runs; profile_fire last: a diagnosis, not a figure.
CORE = (
    "limit",
    "fire_throughput",
    "lateness",
    "scale",
    "apscheduler_compare",
    "profile_fire",
)


def discover() -> tuple[str, ...]:
    """Every benchmark script: the core suite, then any other ``benchmarks/*.py`` (not
    ``_*.py``, not this file), alphabetically, so a new script is run without edits."""
    others = sorted(
        p.stem
        for p in BENCH_DIR.glob("*.py")
        if not p.name.startswith("_") and p.stem not in CORE and p.stem != "run_all"
    )
    return (*CORE, *others)


SCRIPTS = discover()


class OtherLoad:
    """CPU time used by processes other than ours while a benchmark runs, in cores."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._t0 = 0.0
        self._busy0 = 0.0

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = self._busy()

    def stop(self, ours: float) -> float:
        """Cores used by others since ``start``; ``ours`` = CPU seconds of our child."""
        wall = time.perf_counter() - self._t0
        return max(0.0, (self._busy() - self._busy0 - ours) / wall) if wall > 0 else 0.0


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores."""
    import psutil

    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=2.0) / 100 * (os.cpu_count() or 1)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  (machine busy: {busy:.2f} cores used by others; waiting)", flush=True)


def _children_cpu() -> float:
    """CPU seconds of every waited-for descendant so far (this process's children and
    theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_script(name: str, flags: list[str]) -> tuple[dict[str, Any] | None, float, float, str]:
    """Run one script; returns (its JSON, wall seconds, other processes' cores, output)."""
    load = OtherLoad()
    cpu0 = _children_cpu()
    load.start()
    t0 = time.perf_counter()
    cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if not line.startswith("BENCH_JSON"):
            print(line, end="", flush=True)
    proc.wait()
    wall = time.perf_counter() - t0
    other = load.stop(_children_cpu() - cpu0)
    output = "".join(lines)
    result = parse_json_line(output)
    if proc.returncode != 0:
        print(f"!! {name} failed with exit code {proc.returncode}", flush=True)
        result = None
    return result, wall, other, output


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if d is None:
            return None
        d = (
            d.get(p)
            if isinstance(d, dict)
            else (d[p] if isinstance(p, int) and p < len(d) else None)
        )
    return d


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    """Every figure with a target, next to its target and the machine's trio no-op rate
    (the limit the script measured in its own process when it measures one, else
    ``limit.py``'s of the same run), so a reader can tell a fast machine from a slow one."""
    rows: list[list[str]] = []
    run_limit = _get(results, "limit", "noop_at_once_per_s", "median")
    noop: list[float | None] = [run_limit]  # the limit beside the rows added next

    def add(
        what: str, value: float | None, target: float, fmt: str, *, higher: bool = True
    ) -> None:
        beside = "-" if noop[0] is None else f"{noop[0]:,.0f}/s"
        if value is None:
            rows.append([what, "not measured", fmt.format(target), "-", beside])
            return
        sign = ">=" if higher else "<="
        rows.append(
            [
                what,
                fmt.format(value),
                f"{sign} {fmt.format(target)}",
                check(value, target, higher_is_better=higher),
                beside,
            ]
        )

    fire = {r["store"]: r for r in _get(results, "fire_throughput", "results") or []}
    sq = fire.get("sqlite")
    noop[0] = _get(sq, "limit_at_once_per_s", "median") or run_limit
    add("fire throughput, SQLite", _get(sq, "fire_per_s", "median"), 25_000, "{:,.0f}/s")
    # ratio targets of issue #15 (0.35x and 1x APScheduler 3 before it)
    add("  as a ratio to the trio no-op rate", _get(sq, "ratio_at_once", "median"), 0.5, "{:.2f}x")
    add("  same, no-op rate in waves of 1,000", _get(sq, "ratio_waves", "median"), 0.5, "{:.2f}x")
    aps = _get(results, "apscheduler_compare", "fire") or {}
    for aps3 in (v for v in aps.values() if v["system"] == "aps3-memory"):
        tw_same = aps.get(f"tickwork-sqlite:{aps3['n']}")
        ratio = (
            _get(tw_same, "fire_per_s", "median") / _get(aps3, "fire_per_s", "median")
            if tw_same
            else None
        )
        add(f"  as a ratio to APScheduler 3 in-memory, {aps3['n']:,} due", ratio, 3.0, "{:.2f}x")
    add(
        "schedule_many into SQLite (100,000 due now)",
        _get(sq, "insert_per_s", "median"),
        150_000,
        "{:,.0f}/s",
    )
    noop[0] = run_limit
    for p in (results.get("scale") or {}).get("points") or []:
        if p.get("insert_per_s"):
            add(
                f"schedule_many into SQLite, growing to {p['stored']:,}",
                p["insert_per_s"]["median"],
                150_000,
                "{:,.0f}/s",
            )
    late = _get(results, "lateness", "runs") or {}
    for rate, target in ((2000, 2.0), (10000, 20.0)):
        for feed in ("chunks", "chunks+freeze", "upfront"):
            run = late.get(f"{feed}:{rate}")
            if run is not None:
                add(
                    f"lateness p99 at {rate:,}/s ({feed})",
                    run["p99_ms"]["median"],
                    target,
                    "{:.2f} ms",
                    higher=False,
                )
    scale = results.get("scale") or {}
    points = scale.get("points") or []
    if points:
        empty, big = points[0], points[-1]
        base = max(empty["rss_ready"], empty["rss_after_idle"])
        growth = (max(big["rss_ready"], big["rss_after_idle"]) - base) / 2**20
        n = f"{big['stored']:,} stored"
        add(f"{n}: RSS growth over empty", growth, 40, "{:.1f} MiB", higher=False)
        add(f"{n}: ready", big["ready_s"], 1.0, "{:.3f} s", higher=False)
        add(f"{n}: idle CPU", big["idle_cpu_pct"], 1.0, "{:.2f} %", higher=False)
    drain = scale.get("drain")
    if drain:
        noop[0] = drain.get("limit_at_once_per_s") or run_limit
        n = f"{drain['n']:,} due, max_in_memory={drain['max_in_memory']:,}"
        add(f"{n}: drain", drain["drain_per_s"], 20_000, "{:,.0f}/s")
        add(f"{n}: RSS growth", drain["rss_growth"] / 2**20, 100, "{:.1f} MiB", higher=False)
    return rows


def body_of(output: str) -> str:
    """A script's output without its JSON line and progress lines: its tables."""
    keep = [ln for ln in output.splitlines() if not ln.startswith(("BENCH_JSON", "  "))]
    return "\n".join(keep).strip() + "\n"


def machine_text(info: dict[str, Any]) -> str:
    return (
        f"- {info['nproc']} cores (`nproc`), CPU `{info['cpu']}` (/proc/cpuinfo), "
        f"{info['memory_gib']} GiB RAM\n"
        f"- Python {info['python']}, trio {info['trio']}, SQLite {info['sqlite']}; "
        f"{info['platform']}\n"
    )


def paste(doc: Path, sections: dict[str, str]) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    text = doc.read_text()
    for name, body in sections.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            continue
        text = text[: i + len(begin)] + "\n" + body.strip() + "\n" + text[j:]
    doc.write_text(text)
    print(f"pasted the tables into {doc}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CI smoke test)")
    parser.add_argument("--no-write", action="store_true", help="write no results or plots")
    parser.add_argument(
        "--only", default=None, help="comma-separated subset of: " + ", ".join(SCRIPTS)
    )
    parser.add_argument("--skip", default="", help="comma-separated scripts to skip")
    parser.add_argument("--repeat", type=int, default=None, help="passed to every script")
    parser.add_argument(
        "--aps4-python",
        default=os.environ.get("TICKWORK_BENCH_APS4_PYTHON"),
        help="Python with apscheduler 4.0.0a6, for apscheduler_compare",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each script, wait up to this many seconds for other "
        "processes to leave the CPU idle",
    )
    parser.add_argument(
        "--docs",
        default=None,
        help="also paste this run's tables into this Markdown file, between its "
        "'<!-- BEGIN name -->' and '<!-- END name -->' markers",
    )
    args = parser.parse_args()
    if args.docs and not Path(args.docs).is_file():
        parser.error(f"--docs {args.docs}: no such file")
    names = [n for n in (args.only.split(",") if args.only else SCRIPTS) if n]
    names = [n for n in names if n not in args.skip.split(",")]
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    flags = (["--quick"] if args.quick else []) + (["--no-write"] if args.no_write else [])
    if args.repeat:
        flags += ["--repeat", str(args.repeat)]

    info = machine_info()
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, {info['memory_gib']} GiB; "
        f"Python {info['python']}, trio {info['trio']}, SQLite {info['sqlite']}",
        flush=True,
    )
    results: dict[str, Any] = {}
    timing: list[list[str]] = []
    outputs: dict[str, str] = {}
    failed = []
    t_all = time.perf_counter()
    for name in names:
        extra = []
        if name == "apscheduler_compare" and args.aps4_python:
            extra = ["--aps4-python", args.aps4_python]
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        print(f"\n=== {name} {' '.join(flags + extra)}", flush=True)
        result, wall, other, output = run_script(name, flags + extra)
        outputs[name] = output
        if result is None:
            failed.append(name)
        else:
            results[name] = result
        timing.append([name, f"{wall:.1f} s", f"{other:.2f}", "ok" if result else "FAILED"])
    total = time.perf_counter() - t_all

    print()
    timing_table = print_table(
        "Benchmarks run",
        ["script", "wall time", "other processes' CPU (cores)", "result"],
        timing,
        [
            (
                f"total {total:.0f} s; other processes' CPU: busy cores not used by the benchmark "
                "while it ran (noise: should be ~0)"
            )
        ],
    )
    rows = target_rows(results)
    summary = print_table(
        "Targets",
        ["figure", "this run", "target", "", "trio no-op (same run)"],
        rows,
        [
            (
                "trio no-op: no-op trio tasks per second, all at once, measured by the script "
                "in its own process where it does (fire throughput, the drain), else by "
                "limit.py in the same run: compare a figure with it to tell a fast machine "
                "from a slow one"
            )
        ],
    )
    if not (args.no_write or args.quick):  # like every script: --quick writes nothing
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / "summary.json").write_text(
            json.dumps(
                {"machine": info, "results": results, "timing": timing, "quick": args.quick},
                indent=2,
                default=str,
            )
            + "\n"
        )
        tables = [f"<!-- {name} -->\n{body_of(output)}" for name, output in outputs.items()]
        (RESULTS_DIR / "tables.md").write_text("\n".join(tables) + "\n" + summary)
        if args.docs:
            sections = {name: body_of(output) for name, output in outputs.items()}
            sections["targets"] = summary
            sections["timing"] = timing_table
            sections["machine"] = machine_text(info)
            paste(Path(args.docs), sections)
        print(f"wrote {RESULTS_DIR}/")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
