"""One tickwork cluster node in a process of its own, for the multi-process tests.

    python tests/support/cluster_node.py --dsn DSN --schema S --node-id N --log FILE [options]

It runs ``open_scheduler`` on a ``PostgresStore`` with these tasks, each taking its
params as a label (bytes) and logging one line per event to ``--log`` (flushed at once,
so a SIGKILL loses nothing already written):

* ``work``: at-least-once, sleeps ``--work-s``; logs ``S <label>`` when it starts and
  ``D <label>`` when it returns;
* ``once``: the same, at-most-once;
* ``slow``: sleeps ``--slow-s``; logs ``S``/``D`` and ``A <label>`` from ``on_abort``.

Every line is ``<event> <label> <node_id> <monotonic time>``. It prints ``READY`` once
the node runs, and on SIGTERM stops gracefully and prints one JSON line of statistics
(``STATS {...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import trio

import tickwork
from tickwork.stores.postgres import PostgresStore


class _Logged(tickwork.Task):
    def __init__(self, name: str, log: IO[str], node: str, seconds: float) -> None:
        self.name = name  # type: ignore[misc]
        self._log = log
        self._node = node
        self._seconds = seconds

    def line(self, event: str, params: bytes) -> None:
        self._log.write(f"{event} {params.decode()} {self._node} {time.monotonic():.6f}\n")
        self._log.flush()

    async def run(self, params: bytes) -> None:
        self.line("S", params)
        await trio.sleep(self._seconds)
        self.line("D", params)

    async def on_abort(self, instance: tickwork.Instance) -> None:
        self.line("A", instance.params)


class _Once(_Logged):
    delivery = "at_most_once"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stats(scheduler: tickwork.Scheduler, store: PostgresStore) -> dict[str, Any]:
    s = scheduler.statistics()
    st = store.statistics()
    return {
        "node": scheduler.node_id,
        "pid": os.getpid(),
        "recorded": dict(s.recorder.recorded),
        "refused": s.recorder.refused,
        "commits": st.commits,
        "statements": st.statements,
        "calls": st.calls,
        "notifications": st.notifications,
        "pulls": s.puller.pulls,
        "claimed": s.puller.claimed,
        "lost_claims": None if s.cluster is None else s.cluster.leases.lost,
        "heartbeats": None if s.cluster is None else s.cluster.heartbeats,
    }


async def _main(args: argparse.Namespace) -> None:
    # line-buffered, open as long as the node runs
    log = Path(args.log).open("a", buffering=1)  # noqa: SIM115
    node = args.node_id
    tasks = [
        _Logged("work", log, node, args.work_s),
        _Once("once", log, node, args.work_s),
        _Logged("slow", log, node, args.slow_s),
    ]
    store = PostgresStore(args.dsn, schema=args.schema)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with tickwork.open_scheduler(
            store,
            tasks=tasks,
            node_id=node,
            lease=timedelta(seconds=args.lease),
            claim_horizon=timedelta(seconds=args.horizon),
            max_concurrency=args.concurrency,
            shutdown_grace=timedelta(seconds=5),
            store_outage_limit=timedelta(seconds=args.outage_limit),
        ) as scheduler:
            _say("READY")
            async for _ in signals:
                break
    # after the graceful stop: every outcome the node had is recorded (or refused)
    _say("STATS " + json.dumps(_stats(scheduler, store)))
    log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--horizon", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--work-s", type=float, default=0.02)
    parser.add_argument("--slow-s", type=float, default=30.0)
    parser.add_argument("--outage-limit", type=float, default=60.0)
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
