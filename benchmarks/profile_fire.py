"""Profile the hot path of fire throughput: where does the time of N due instances go?

Runs the fire-throughput workload once (N no-op instances due at once, default knobs)
and samples this very process with py-spy, attached by pid only for the measured part
(from ``schedule_many`` until N SUCCEEDED), so setup and the baseline are not in the
profile. Writes the samples as a speedscope file (open it at https://www.speedscope.app)
and as collapsed stacks, and prints: how busy each thread was, and the functions with the
most samples, self and inclusive.

``--gil`` samples only the thread holding the GIL (py-spy ``--gil``): if the threads'
shares add up to ~100 % of the wall time, the GIL is what limits the node.

Without py-spy (or without permission to ptrace), falls back to pyinstrument, which
sees only the trio thread.

    python benchmarks/profile_fire.py [--store sqlite] [-n 100000] [--gil]
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import trio

import tickwork
from _common import (
    RESULTS_DIR,
    base_parser,
    emit_json,
    open_node,
    print_table,
    temp_dir,
    wait_recorded,
)

_LINE = re.compile(r":\d+\)$")


def _py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


def summarise_collapsed(path: Path, top: int) -> dict[str, Any]:
    """Per-thread sample counts, top self (by line) and inclusive (by function) frames."""
    threads: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        name = re.sub(r"^thread \(\d+\): ", "", thread)
        name = re.sub(r"[:-]fire-\d+\.db$|:[^:]+\.db$", "", name)
        threads[name] += count
        total += count
        if frames:
            self_[f"[{name[:14]}] {frames[-1]}"] += count
        for f in {_LINE.sub(")", fr) for fr in frames}:
            incl[f] += count
    return {
        "samples": total,
        "threads": dict(threads.most_common()),
        "self": self_.most_common(top),
        "inclusive": [
            (f, c) for f, c in incl.most_common(top * 4) if "tickwork" in f or "sqlite" in f
        ][:top],
    }


def to_speedscope(collapsed: Path, out: Path, name: str) -> None:
    """Convert py-spy's collapsed stacks into a speedscope file, one profile per thread."""
    frames: list[dict[str, str]] = []
    index: dict[str, int] = {}
    profiles: dict[str, tuple[list[list[int]], list[int]]] = {}
    for raw in collapsed.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack:
            continue
        parts = stack.split(";")
        samples, weights = profiles.setdefault(parts[0], ([], []))
        ids = []
        for fr in parts[1:]:
            if fr not in index:
                index[fr] = len(frames)
                func, _, loc = fr.partition(" (")
                frames.append({"name": func, "file": loc.rstrip(")")})
            ids.append(index[fr])
        samples.append(ids)
        weights.append(int(count_text))
    doc = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "tickwork benchmarks/profile_fire.py",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": thread,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(w),
                "samples": s,
                "weights": w,
            }
            for thread, (s, w) in profiles.items()
        ],
    }
    out.write_text(json.dumps(doc))


class Sampler:
    """py-spy attached to this process for the duration of a ``with`` block."""

    def __init__(self, out: Path, *, rate: int, gil: bool) -> None:
        self.out = out
        self.rate = rate
        self.gil = gil
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        exe = _py_spy()
        if exe is None:
            raise FileNotFoundError("py-spy")
        cmd = [exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate)]
        cmd += ["--format", "raw", "--threads", "--nonblocking", "-o", str(self.out)]
        if self.gil:
            cmd.append("--gil")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise PermissionError(f"py-spy could not attach: {err.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if not self.out.exists():  # seen once in a smoke run: no samples, no file
            raise ProfileMissing(f"py-spy wrote no profile: {err.decode().strip()[-500:]}")


class ProfileMissing(Exception):
    """py-spy ran but wrote no profile (e.g. no sample in a very short run)."""


async def fire(store: tickwork.Store, n: int, sampler: Any) -> float:
    async with open_node(store) as scheduler:
        news = [tickwork.NewInstance("noop", datetime.now(UTC), b"") for _ in range(n)]
        with sampler:
            t0 = time.perf_counter()
            await scheduler.schedule_many(news)
            t1 = await wait_recorded(scheduler, n)
        return n / (t1 - t0)


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("-n", type=int, default=None, help="instances (default 100,000)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--top", type=int, default=20, help="rows of each table")
    parser.add_argument(
        "--tool",
        choices=["py-spy", "pyinstrument"],
        default="py-spy",
        help="py-spy (all threads; falls back to pyinstrument if missing) or pyinstrument",
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default benchmarks/results/profile)"
    )
    args = parser.parse_args()
    n = args.n or (5_000 if args.quick else 100_000)
    with temp_dir(args.tmpdir) as d:
        out_dir = Path(args.out) if args.out else (d if args.no_write else RESULTS_DIR / "profile")
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"fire_{args.store}{'_gil' if args.gil else ''}"
        collapsed = out_dir / f"{stem}.collapsed.txt"
        store: tickwork.Store = (
            tickwork.SQLiteStore(d / "profile.db")
            if args.store == "sqlite"
            else tickwork.MemoryStore()
        )
        tool = args.tool
        if tool == "py-spy":
            try:
                rate = trio.run(fire, store, n, Sampler(collapsed, rate=args.rate, gil=args.gil))
            except (FileNotFoundError, PermissionError, ProfileMissing) as exc:
                print(f"py-spy not usable ({exc}); pyinstrument instead (trio thread only)")
                tool = "pyinstrument"
        if tool == "pyinstrument":
            rate, summary = fallback_pyinstrument(args.store, n, d, out_dir, stem)
        else:
            summary = summarise_collapsed(collapsed, args.top)
            to_speedscope(collapsed, out_dir / f"{stem}.speedscope.json", stem)
    wall = n / rate
    if tool == "py-spy":
        total = summary["samples"]
        print_table(
            f"Fire profile ({args.store}, N = {n:,}, {rate:,.0f}/s under the profiler, "
            f"{'GIL holder only' if args.gil else 'on-CPU samples'})",
            ["thread", "samples", "share of wall time"],
            [
                [t, c, f"{100 * c / (wall * args.rate):.0f} %"]
                for t, c in summary["threads"].items()
            ],
            [f"{total} samples at {args.rate}/s over {wall:.2f} s of measured time"],
        )
        print_table(
            "Self samples by line (top)",
            ["share", "frame"],
            [[f"{100 * c / total:.1f} %", f] for f, c in summary["self"]],
        )
        print_table(
            "Inclusive samples by function, tickwork and sqlite frames (top)",
            ["share", "function"],
            [[f"{100 * c / total:.1f} %", f] for f, c in summary["inclusive"]],
        )
    emit_json(
        "profile_fire",
        {
            "store": args.store,
            "n": n,
            "tool": tool,
            "gil": args.gil,
            "rate_under_profiler_per_s": rate,
            "summary": summary,
            "files": [str(p) for p in out_dir.glob(f"{stem}*")] if not args.no_write else [],
        },
    )


def fallback_pyinstrument(
    kind: str, n: int, d: Path, out_dir: Path, stem: str
) -> tuple[float, dict[str, Any]]:
    from pyinstrument import Profiler

    class Pyinstrument:
        def __init__(self) -> None:
            self.profiler = Profiler(async_mode="disabled")

        def __enter__(self) -> Self:
            self.profiler.start()
            return self

        def __exit__(self, *exc: object) -> None:
            self.profiler.stop()

    sampler = Pyinstrument()
    store: tickwork.Store = (
        tickwork.SQLiteStore(d / "profile-pi.db") if kind == "sqlite" else tickwork.MemoryStore()
    )
    rate = trio.run(fire, store, n, sampler)
    text = sampler.profiler.output_text(unicode=False, color=False, show_all=False)
    (out_dir / f"{stem}.pyinstrument.txt").write_text(text)
    print(text[:6000])
    return rate, {"text_head": text[:2000]}


if __name__ == "__main__":
    main()
