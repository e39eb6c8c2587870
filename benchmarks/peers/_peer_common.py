"""What every peer script of ``pg_peers.py`` shares; runs under any interpreter (no deps).

A peer script is one job system behind one command line, run in that system's own
interpreter (its own virtual environment) by ``benchmarks/pg_peers.py``:

    X_peer.py setup   --dsn D                      create (or empty) the system's tables
    X_peer.py enqueue --dsn D --n N --due EPOCH    insert N no-op jobs due at EPOCH
    X_peer.py produce --dsn D --rate R --seconds S --lead L
                                                   insert R jobs a second for S seconds,
                                                   each due L seconds after its insert
    X_peer.py work    --dsn D --out FILE --node NAME [--concurrency C]
                                                   run a worker until SIGTERM; print READY
                                                   once it works; write the lateness of
                                                   every run it started to FILE (JSON)

A job's payload is its due time (float seconds since the epoch). Lateness is measured
in the worker, from the due time to the moment the job's function starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: Jobs inserted per statement or call where the system takes a batch.
INSERT_BATCH = 5_000
#: Producer ticks a second for the steady workloads (every 10 ms a batch of rate/100).
TICKS_PER_S = 100


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("setup", "enqueue", "produce", "work"):
        p = sub.add_parser(name)
        p.add_argument("--dsn", required=True)
    sub.choices["enqueue"].add_argument("--n", type=int, required=True)
    sub.choices["enqueue"].add_argument("--due", type=float, required=True)
    sub.choices["produce"].add_argument("--rate", type=int, required=True)
    sub.choices["produce"].add_argument("--seconds", type=float, required=True)
    sub.choices["produce"].add_argument("--lead", type=float, default=1.0)
    sub.choices["work"].add_argument("--out", required=True)
    sub.choices["work"].add_argument("--node", default="node0")
    sub.choices["work"].add_argument("--concurrency", type=int, default=1_000)
    return parser.parse_args(argv)


class Lateness:
    """The lateness of every run a worker started, in seconds."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def ran(self, due: float) -> None:
        self.samples.append(time.time() - due)

    def dump(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.samples))


def ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def batches(n: int, size: int = INSERT_BATCH) -> Iterator[int]:
    """The sizes of the insert batches for ``n`` jobs."""
    while n > 0:
        yield min(size, n)
        n -= size


def ticks(rate: int, seconds: float) -> Iterator[tuple[float, int]]:
    """(when to insert, how many) for a steady ``rate`` over ``seconds``: every 10 ms a
    batch, the counts spread so that the total after each tick is ``rate * t``."""
    start = time.time()
    total = round(rate * seconds)
    sent = 0
    k = 0
    while sent < total:
        k += 1
        due_total = min(total, round(rate * k / TICKS_PER_S))
        yield start + k / TICKS_PER_S, due_total - sent
        sent = due_total
