"""What stalls the trio thread at a steady rate: the lateness run, with its stalls named.

Runs ``lateness.py``'s chunked feed (SQLiteStore, real clock, default knobs and garbage
collector settings) at ``--rate`` for ``--duration`` seconds, with a ``trio.abc.Instrument``
and ``gc.callbacks`` watching, and reports beside the p50/p99 lateness:

- garbage-collector passes per generation (how many, their total and longest time);
  a pass runs on whichever thread allocated, the store thread included, and holds the GIL;
- task steps longer than ``--over`` ms, by task (the trio thread doing one thing that
  long);
- I/O waits that came back more than ``--over`` ms after their timeout (the trio thread
  ready to run but not running: another thread held the GIL, or no CPU was free);
- trio loop iterations and task steps per instance (each one a wake-up or a hop between
  actors: at moderate rates their cost, not the instances', is the node's CPU).

Session 10 found both causes of the 10,000/s tail on a slow machine with this tool
(benchmarks/PROFILE_NOTES.md).

    python benchmarks/lateness_stalls.py [--quick] [--rate 10000] [--duration 10] [--over 15]
"""

from __future__ import annotations

import collections
import functools
import gc
import statistics
import time
from typing import Any

import trio

from _common import base_parser, emit_json, print_table, temp_dir, write_result
from lateness import run_rate


class _Watch(trio.abc.Instrument):
    """Task steps and I/O waits that overran, and how many of each there were."""

    def __init__(self, over_s: float) -> None:
        self.over = over_s
        self.steps = 0
        self.loops = 0
        self.long_steps: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
        self.late_wakes: list[float] = []
        self._t = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:  # noqa: ARG002 - the hook's signature
        self._t = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        took = time.perf_counter() - self._t
        if took > self.over:
            self.long_steps[task.name.rsplit(".", 1)[-1]].append(took * 1e3)

    def before_io_wait(self, timeout: float) -> None:
        self.loops += 1
        self._t = time.perf_counter()
        self._timeout = timeout

    def after_io_wait(self, timeout: float) -> None:  # noqa: ARG002 - the hook's signature
        late = time.perf_counter() - self._t - self._timeout
        if late > self.over:
            self.late_wakes.append(late * 1e3)


def _one(rate: int, duration: float, over_s: float, tmp: Any, rep: int) -> dict[str, Any]:
    watch = _Watch(over_s)
    passes: collections.defaultdict[int, list[float]] = collections.defaultdict(list)
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            passes[info["generation"]].append((time.perf_counter() - started[0]) * 1e3)

    gc.callbacks.append(on_gc)
    try:
        run = functools.partial(
            run_rate, tmp / f"stalls-{rep}.db", rate, duration, "chunks", chunk=1.0, ahead=2.0
        )
        result = trio.run(run, instruments=[watch])
    finally:
        gc.callbacks.remove(on_gc)
    n = result["n"]
    return {
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "gc": {g: (len(v), sum(v), max(v, default=0.0)) for g, v in sorted(passes.items())},
        "long_steps": {k: (len(v), sum(v), max(v)) for k, v in watch.long_steps.items()},
        "late_wakes": (
            len(watch.late_wakes),
            sum(watch.late_wakes),
            max(watch.late_wakes, default=0.0),
        ),
        "loops_per_instance": watch.loops / n,
        "steps_per_instance": watch.steps / n,
    }


def _cell(runs: list[dict[str, Any]], get: Any) -> str:
    """Count / total ms / longest ms, median over the runs."""
    got = [get(r) or (0, 0.0, 0.0) for r in runs]
    return " / ".join(
        f"{statistics.median(x[i] for x in got):,.{0 if i == 0 else 1}f}" for i in range(3)
    )


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=None, help="instances a second (10,000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (10)")
    parser.add_argument("--over", type=float, default=15.0, help="ms that count as a stall")
    args = parser.parse_args()
    rate = args.rate or (1_000 if args.quick else 10_000)
    duration = args.duration or (2.0 if args.quick else 10.0)
    repeat = args.repeat or (1 if args.quick else 3)
    with temp_dir(args.tmpdir) as tmp:
        runs = [_one(rate, duration, args.over / 1e3, tmp, rep) for rep in range(repeat)]
    medians = " / ".join(
        f"{statistics.median(r[k] for r in runs):.2f}" for k in ("p50_ms", "p99_ms")
    )
    rows: list[list[object]] = [["lateness p50 / p99 (ms)", medians]]
    rows += [
        [f"gc generation {g}: passes / total / longest", _cell(runs, lambda r, g=g: r["gc"].get(g))]
        for g in (0, 1, 2)
    ]
    rows.append(["I/O waits late: count / total / longest", _cell(runs, lambda r: r["late_wakes"])])
    rows += [
        [
            f"steps of {k}: count / total / longest",
            _cell(runs, lambda r, k=k: r["long_steps"].get(k)),
        ]
        for k in sorted({k for r in runs for k in r["long_steps"]})
    ]
    rows += [
        [key.replace("_", " "), f"{statistics.median(r[key] for r in runs):.2f}"]
        for key in ("loops_per_instance", "steps_per_instance")
    ]
    print_table(
        f"Stalls at {rate:,}/s, chunked feed, SQLite (over {args.over:g} ms)",
        ["what", f"median of {repeat}"],
        rows,
        [
            f"{duration:g} s per run, default knobs and collector settings; times in ms",
            "I/O waits late: the trio thread could have run but did not (GIL or CPU taken)",
        ],
    )
    payload = {"rate": rate, "duration": duration, "over_ms": args.over, "runs": runs}
    write_result("lateness_stalls", payload, write=not (args.no_write or args.quick))
    emit_json("lateness_stalls", payload)


if __name__ == "__main__":
    main()
