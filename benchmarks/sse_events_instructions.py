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
"""

from __future__ import annotations

import sys

import trio

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
    variant = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
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


if __name__ == "__main__":
    main()
