"""The event stream's work per event, alone: for instruction counts, which the machine's
load does not disturb (session 9, PROFILE_NOTES.md).

Replays what a burst of N no-op instances publishes (a claim's chunk of 5,000, then per
500: each start one by one, then the recorded batch), with one subscriber reading all of
it after every 500 as ``/api/events`` does. Variants: ``none`` (no subscriber: the
replay's own cost), ``publish`` (a subscriber that never reads: the hub's cost),
``batch`` (``receive_batch``: a TransitionEvent built per event), ``runs``
(``receive_runs`` and the stream's framing). Instructions per event =
(Ir(variant) - Ir(the one before)) / (3 N):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/sse_events_instructions.py runs [N]

Run as ``run_all.py`` does (``--quick --no-write``, no variant) it replays 5,000 with
``runs`` and prints the wall time, which depends on the machine.
"""

from __future__ import annotations

import sys
import time

import trio

from _common import emit_json
from tickwork.events import EventHub, Subscription
from tickwork.http._sse import _frames
from tickwork.model import Instance
from tickwork.state import State

P, C, R, S = State.PENDING, State.CLAIMED, State.RUNNING, State.SUCCEEDED


def _read_batch(sub: Subscription) -> None:
    while True:
        try:
            sub._next(5000)  # noqa: SLF001 - the synchronous core of receive_batch
        except trio.WouldBlock:
            return


def _read_runs(sub: Subscription) -> None:
    while True:
        try:
            lost = sub._ready()  # noqa: SLF001 - the synchronous core of receive_runs
        except trio.WouldBlock:
            return
        if lost is None:
            _frames(sub._take_runs(5000))  # noqa: SLF001


def main() -> None:
    # run_all.py runs it with --quick --no-write and no variant: a smoke run of ``runs``
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    variant = args[0] if args else "runs"
    n = int(args[1]) if len(args) > 1 else 5000 if "--quick" in sys.argv else 100_000
    t0 = time.perf_counter()
    insts = [Instance(i, "noop", 1_764_000_000_000_000 + i, b"", P) for i in range(1, n + 1)]
    hub = EventHub("node-1")
    sub = hub.subscribe(10**8) if variant != "none" else None
    read = {"batch": _read_batch, "runs": _read_runs}.get(variant)
    at = 1_764_000_000_000_000
    for b0 in range(0, n, 5000):
        batch = insts[b0 : b0 + 5000]
        hub.moved_together(batch, P, C, at)
        for k in range(0, len(batch), 500):
            part = batch[k : k + 500]
            for inst in part:
                at += 7
                hub.moved(inst, C, R, at)
            hub.recorded(part, [R] * len(part), [S] * len(part), [None] * len(part), at)
            if read is not None and sub is not None:
                read(sub)
    wall = time.perf_counter() - t0
    print(f"{variant}: {n:,} instances replayed in {wall:.2f} s")
    emit_json("sse_events_instructions", {"variant": variant, "n": n, "per_s": n / wall})


if __name__ == "__main__":
    main()
