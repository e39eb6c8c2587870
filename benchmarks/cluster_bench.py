"""Clustering over PostgreSQL: throughput, sharing, database work and takeover time.

Five measurements, each repeated (median, min and max reported):

1. **one node**: N no-op instances due now, ``schedule_many`` until N are durably
   SUCCEEDED, in one process on a ``PostgresStore`` (durable: the server's default
   ``synchronous_commit = on``). Also the drain rate (from ``schedule_many``'s return)
   and the store's own counts of commits and statements per fired instance.
2. **1, 2 and 3 nodes** (processes of their own on one schema): N instances due at one
   moment a little ahead, from that moment until all are SUCCEEDED: the aggregate rate,
   the share each node ran (from the run history), and commits and statements per
   instance summed over the nodes.
3. **sharing a steady workload**: N/10 and N instances due evenly over 5 s on 3 nodes:
   each node's share, and the database work per instance at those rates.
4. **heartbeat cost**: one heartbeat (and one ``Store.renew``) of a node holding N
   claimed instances.
5. **takeover**: 2 nodes working through a steady stream; one is killed with SIGKILL;
   the time from the kill until the survivor holds everything the dead node held
   (its claims lapse after at most one lease; the default lease is 10 s).

    python benchmarks/cluster_bench.py [--quick] [--repeat 3] [--dsn URI] [-n 50000]

The DSN defaults to ``$TICKWORK_PG_DSN`` or the local trust server of the tests. The
script is also its own node process (``cluster_bench.py node ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

import tickwork
from _common import (
    Stat,
    base_parser,
    emit_json,
    noop_task,
    print_table,
    wait_recorded,
    write_result,
)
from tickwork.model import NewRow

DEFAULT_DSN = os.environ.get("TICKWORK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TARGET_RATE = 10_000
TARGET_COMMITS = 0.1
SECTIONS = ("one", "scale", "steady", "heartbeat", "takeover")
S = 1_000_000


# -- helpers ------------------------------------------------------------------------------


def fresh_schema() -> str:
    return f"tw_bench_{uuid.uuid4().hex[:10]}"


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def drop(dsn: str, schema: str) -> None:
    sql(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _insert(dsn: str, schema: str, rows: list[NewRow]) -> None:
    store = tickwork.PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        for i in range(0, len(rows), 50_000):
            await store.insert(rows[i : i + 50_000], time.time_ns() // 1000)
    finally:
        await store.aclose()


def insert(dsn: str, schema: str, rows: list[NewRow]) -> None:
    trio.run(_insert, dsn, schema, rows)


def count_ended(dsn: str, schema: str) -> int:
    [(n,)] = sql(dsn, f"SELECT count(*) FROM {schema}.instances WHERE state >= 3")
    return int(n)


def held_by(dsn: str, schema: str, node: str) -> int:
    [(n,)] = sql(
        dsn,
        f"SELECT count(*) FROM {schema}.claims c JOIN {schema}.instances i "
        "ON i.claim_token = c.token AND i.state IN (1, 2) WHERE c.owner = %s",
        node,
    )
    return int(n)


def shares(dsn: str, schema: str) -> dict[str, int]:
    rows = sql(dsn, f"SELECT node, count(*) FROM {schema}.history GROUP BY node ORDER BY node")
    return {str(node): int(n) for node, n in rows}


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


class NodeProc:
    """A node process: ``cluster_bench.py node``."""

    def __init__(self, dsn: str, schema: str, node_id: str, lease: float, horizon: float) -> None:
        self.node_id = node_id
        argv = [sys.executable, __file__, "node", "--dsn", dsn, "--schema", schema]
        argv += ["--node-id", node_id, "--lease", str(lease), "--horizon", str(horizon)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ready(self, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError(f"node {self.node_id} did not start: {self.proc.communicate()[1]}")

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.proc.communicate(timeout=30)
        return at

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        for line in out.splitlines():
            if line.startswith("STATS "):
                return dict(json.loads(line[len("STATS ") :]))
        raise RuntimeError(f"node {self.node_id} printed no statistics: {err[-2000:]}")

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


def start_nodes(dsn: str, schema: str, n: int, lease: float, horizon: float) -> list[NodeProc]:
    nodes = [NodeProc(dsn, schema, f"node{i}", lease, horizon) for i in range(n)]
    for node in nodes:
        node.ready()
    time.sleep(lease / 3 + 0.2)  # one heartbeat each: every node knows the others
    return nodes


# -- the child: one node -------------------------------------------------------------------


def node_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cluster_bench.py node")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--horizon", type=float, default=2.0)
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        store = tickwork.PostgresStore(args.dsn, schema=args.schema)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with tickwork.open_scheduler(
                store,
                tasks=[noop_task()],
                node_id=args.node_id,
                lease=timedelta(seconds=args.lease),
                claim_horizon=timedelta(seconds=args.horizon),
                shutdown_grace=timedelta(seconds=5),
            ) as scheduler:
                sys.stdout.write("READY\n")
                sys.stdout.flush()
                async for _ in signals:
                    break
                s = scheduler.statistics()
        st = store.statistics()
        return {
            "node": args.node_id,
            "recorded": s.recorder.recorded.get("SUCCEEDED", 0),
            "commits": st.commits,
            "statements": st.statements,
            "pulls": s.puller.pulls,
        }

    stats = trio.run(run)
    sys.stdout.write("STATS " + json.dumps(stats) + "\n")
    sys.stdout.flush()


# -- 1. one node, in process ----------------------------------------------------------------


async def one_node(dsn: str, n: int) -> dict[str, float]:
    schema = fresh_schema()
    store = tickwork.PostgresStore(dsn, schema=schema)
    try:
        async with tickwork.open_scheduler(
            store, tasks=[noop_task()], shutdown_grace=timedelta(seconds=5)
        ) as scheduler:
            due = datetime.now(UTC)
            news = [tickwork.NewInstance("noop", due, b"") for _ in range(n)]
            before = store.statistics()
            t0 = time.perf_counter()
            await scheduler.schedule_many(news)
            t1 = time.perf_counter()
            t2 = await wait_recorded(scheduler, n)
            after = store.statistics()
            done = await scheduler.count(state=tickwork.State.SUCCEEDED)
            if done != n:
                raise RuntimeError(f"the store counts {done} SUCCEEDED, expected {n}")
    finally:
        drop(dsn, schema)
    return {
        "rate": n / (t2 - t0),
        "drain_rate": n / (t2 - t1),
        "commits_per_instance": (after.commits - before.commits) / n,
        "statements_per_instance": (after.statements - before.statements) / n,
    }


# -- 2. and 3. several node processes --------------------------------------------------------


def many_nodes(dsn: str, nodes: int, n: int, spread_s: float, lease: float) -> dict[str, Any]:
    """N instances due from ``T0`` over ``spread_s`` (0: all at T0) on ``nodes`` processes."""
    schema = fresh_schema()
    insert(dsn, schema, [])
    procs: list[NodeProc] = []
    try:
        procs = start_nodes(dsn, schema, nodes, lease, 2.0)
        t0_us = time.time_ns() // 1000 + 3 * S  # after the insert below has committed
        rows = [NewRow("noop", t0_us + int(spread_s * S * i / n), b"") for i in range(n)]
        insert(dsn, schema, rows)
        wait_for(lambda: time.time_ns() // 1000 >= t0_us, 30, "T0")
        t0 = time.perf_counter()
        wait_for(lambda: count_ended(dsn, schema) >= n, 600, "every instance", step=0.01)
        elapsed = time.perf_counter() - t0
        stats = [p.stop() for p in procs]
        share = shares(dsn, schema)
    finally:
        for p in procs:
            p.ensure_dead()
        drop(dsn, schema)
    commits = sum(s["commits"] for s in stats)
    statements = sum(s["statements"] for s in stats)
    return {
        "nodes": nodes,
        "rate": n / elapsed,
        "elapsed_s": elapsed,
        "shares": {k: v / n for k, v in sorted(share.items())},
        "commits_per_instance": commits / n,
        "statements_per_instance": statements / n,
    }


# -- 4. heartbeat cost -----------------------------------------------------------------------


async def heartbeat_cost(dsn: str, n: int, repeat: int) -> dict[str, float]:
    """Seconds per heartbeat (and per ``renew``) of a node holding ``n`` instances."""
    schema = fresh_schema()
    store = tickwork.PostgresStore(dsn, schema=schema)
    await store.open(node_id="holder")
    try:
        now = time.time_ns() // 1000
        await store.insert([NewRow("noop", now, b"") for _ in range(n)], now)
        held = 0
        while held < n:
            held += len(await store.claim("holder", now, 5_000, now, 60 * S))
        beats, renews = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            beat = await store.heartbeat("holder", 60 * S, held=n, running=0)
            t1 = time.perf_counter()
            await store.renew("holder", now, 60 * S)
            t2 = time.perf_counter()
            beats.append(t1 - t0)
            renews.append(t2 - t1)
    finally:
        await store.aclose()
        drop(dsn, schema)
    return {
        "held": n,
        "claims": len(beat.tokens),
        "heartbeat_s": statistics.median(beats),
        "renew_s": statistics.median(renews),
    }


# -- 5. takeover --------------------------------------------------------------------------------


def takeover(dsn: str, lease: float) -> dict[str, float]:
    """Seconds from SIGKILL of one of two nodes until the other holds all it held."""
    schema = fresh_schema()
    insert(dsn, schema, [])
    procs: list[NodeProc] = []
    try:
        procs = start_nodes(dsn, schema, 2, lease, 2.0)
        # a steady stream, 1,000 a second for longer than a lease and a half
        span = lease * 1.5 + 6
        n = int(span * 1000)
        start = time.time_ns() // 1000 + S
        insert(dsn, schema, [NewRow("noop", start + i * S // 1000, b"") for i in range(n)])
        wait_for(lambda: held_by(dsn, schema, "node0") > 0, 30, "node0 to hold work")
        time.sleep(random.uniform(0.5, 0.5 + lease / 3))  # at any point of a heartbeat period
        killed_at = procs[0].kill()
        wait_for(lambda: held_by(dsn, schema, "node0") == 0, lease * 3 + 10, "the takeover")
        took = time.monotonic() - killed_at
        wait_for(lambda: count_ended(dsn, schema) >= n, span + 30, "every instance")
        procs[1].stop()
    finally:
        for p in procs:
            p.ensure_dead()
        drop(dsn, schema)
    return {"takeover_s": took}


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        node_main(sys.argv[2:])
        return
    parser: argparse.ArgumentParser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server (libpq URI)")
    parser.add_argument("-n", type=int, default=None, help="instances per measurement")
    parser.add_argument(
        "--takeovers", type=int, default=5, help="SIGKILL takeovers to time (median)"
    )
    parser.add_argument(
        "--lease", type=float, default=None, help="lease in seconds for the takeover [10]"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}")
    quick = args.quick
    n = args.n or (5_000 if quick else 50_000)
    repeat = 1 if quick else args.repeat
    lease = args.lease or (2.0 if quick else 10.0)
    takeovers = 1 if quick else args.takeovers
    results: dict[str, Any] = {"n": n, "repeat": repeat, "lease_s": lease}

    if "one" in sections:
        singles = [trio.run(one_node, args.dsn, n) for _ in range(repeat)]
        rate = Stat.of(r["rate"] for r in singles)
        drain = Stat.of(r["drain_rate"] for r in singles)
        commits = Stat.of(r["commits_per_instance"] for r in singles)
        stmts = Stat.of(r["statements_per_instance"] for r in singles)
        results["one_node"] = {
            "rate": rate.as_dict(),
            "drain_rate": drain.as_dict(),
            "commits_per_instance": commits.as_dict(),
            "statements_per_instance": stmts.as_dict(),
        }
        print_table(
            f"One node on PostgreSQL: {n:,} no-op instances due now (median of {repeat})",
            ("measure", "value (min-max)", "target"),
            [
                (
                    "fire throughput, schedule_many to all SUCCEEDED",
                    rate.fmt(",.0f", "/s"),
                    f">= {TARGET_RATE:,}/s",
                ),
                ("drain rate, from schedule_many's return", drain.fmt(",.0f", "/s"), ""),
                ("commits per instance", commits.fmt(".4f"), f"<= {TARGET_COMMITS}"),
                ("statements per instance", stmts.fmt(".4f"), ""),
            ],
        )

    if "scale" in sections:
        scale = []
        for nodes in (1, 2, 3):
            runs = [many_nodes(args.dsn, nodes, n, 0.0, lease) for _ in range(repeat)]
            best = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
            scale.append(
                {
                    "nodes": nodes,
                    "rate": Stat.of(r["rate"] for r in runs).as_dict(),
                    "shares": best["shares"],
                    "commits_per_instance": statistics.median(
                        r["commits_per_instance"] for r in runs
                    ),
                    "statements_per_instance": statistics.median(
                        r["statements_per_instance"] for r in runs
                    ),
                }
            )
        results["scale"] = scale
        print_table(
            f"1, 2 and 3 node processes, one server: {n:,} instances due at one moment",
            ("nodes", "aggregate rate", "share per node", "commits/inst", "statements/inst"),
            [
                (
                    s["nodes"],
                    Stat.of(s["rate"]["values"]).fmt(",.0f", "/s"),
                    " / ".join(f"{v:.0%}" for v in s["shares"].values()),
                    f"{s['commits_per_instance']:.4f}",
                    f"{s['statements_per_instance']:.4f}",
                )
                for s in scale
            ],
            notes=[f"machine: {os.cpu_count()} CPUs shared by the nodes and the server"],
        )

    if "steady" in sections:
        spread = 5.0
        steady_rows = []
        results["steady"] = []
        for count in (n // 10, n):
            steady = [many_nodes(args.dsn, 3, count, spread, lease) for _ in range(repeat)]
            mid = sorted(steady, key=lambda r: min(r["shares"].values()))[len(steady) // 2]
            smallest = Stat.of(min(r["shares"].values()) for r in steady)
            doc = {
                "instances": count,
                "rate": count / spread,
                "shares": mid["shares"],
                "min_share": smallest.as_dict(),
                "commits_per_instance": statistics.median(
                    r["commits_per_instance"] for r in steady
                ),
                "statements_per_instance": statistics.median(
                    r["statements_per_instance"] for r in steady
                ),
            }
            results["steady"].append(doc)
            steady_rows.append(
                (
                    f"{count / spread:,.0f}/s",
                    " / ".join(f"{v:.1%}" for v in mid["shares"].values()),
                    smallest.fmt(".1%"),
                    f"{doc['commits_per_instance']:.4f}",
                    f"{doc['statements_per_instance']:.4f}",
                )
            )
        print_table(
            f"3 nodes, instances due evenly over {spread:g} s",
            (
                "due rate",
                "share per node",
                "smallest share (min-max)",
                "commits/inst",
                "statements/inst",
            ),
            steady_rows,
            notes=["a fair share is 33.3%"],
        )

    if "heartbeat" in sections:
        cost = trio.run(heartbeat_cost, args.dsn, n, 5)
        results["heartbeat"] = cost
        print_table(
            f"One heartbeat of a node holding {n:,} instances (median of 5)",
            ("call", "seconds", "note"),
            [
                (
                    "heartbeat (renew live claims, forget empty ones, node table)",
                    f"{cost['heartbeat_s']:.4f}",
                    f"{cost['claims']} claims",
                ),
                (
                    "Store.renew (every claim of the owner, counts rows held)",
                    f"{cost['renew_s']:.4f}",
                    "",
                ),
            ],
            notes=["leases per row (schema version 2) took 0.87 s for 50,000 held rows"],
        )

    if "takeover" in sections:
        took = Stat.of(takeover(args.dsn, lease)["takeover_s"] for _ in range(takeovers))
        results["takeover"] = {"lease_s": lease, "seconds": took.as_dict()}
        print_table(
            f"Takeover after SIGKILL, 2 nodes, lease {lease:g} s (median of {takeovers})",
            ("measure", "seconds (min-max)", "bound"),
            [
                (
                    "kill to the survivor holding all of the dead node's work",
                    took.fmt(".2f"),
                    f"<= one lease ({lease:g} s)",
                )
            ],
            notes=["a lease lapses between 2/3 and 1 lease after the kill (renewed every lease/3)"],
        )

    write_result("cluster", results, write=not args.no_write)
    emit_json("cluster", results)


if __name__ == "__main__":
    main()
