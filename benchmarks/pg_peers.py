"""tickwork beside the PostgreSQL job systems Python users pick, in the same run.

Each system runs in its own processes and its own database (``bench_<system>``, made
anew for every measurement) on the same PostgreSQL server, behind one small script in
``benchmarks/peers/`` (``_peer_common.py`` says the protocol; each script's docstring
says how that system is configured for throughput). The workloads:

1. **burst**: N no-op jobs all due at one time T, inserted beforehand; from T until the
   store says the last one is done (polled every 20 ms): jobs per second, with one worker
   process and with three. Commits per job: the database's ``xact_commit`` delta
   (``pg_stat_database``) over the workers' whole life, read once their sessions ended.
   Cores busy: the whole machine's CPU time from T to the end (``/proc/stat``: server,
   workers and this script together), in cores; when it nears the machine's core count,
   more workers cannot go faster on this machine.
2. **steady**: one worker; a producer process inserts R jobs a second, each due 1 s after
   its insert, for S seconds; lateness is measured in the worker, from the due time to the
   start of the job's function: p50 and p99.

A system that does not finish a burst within ``--cap`` seconds is given the rate of what
it finished ("capped" in the table). Repetitions are interleaved (every system once,
then again); medians with min-max.

The peers need interpreters of their own (their dependencies are not tickwork's):

    python3 -m venv /tmp/peers311 && /tmp/peers311/bin/pip install pgqueuer asyncpg \
        uvloop 'procrastinate[psycopg]' chancy 'psycopg[binary,pool]'
    python3.12 -m venv /tmp/peers312 && /tmp/peers312/bin/pip install oban \
        'psycopg[binary,pool]'
    python benchmarks/pg_peers.py --peers-python /tmp/peers311/bin/python \
        --oban-python /tmp/peers312/bin/python [--quick] [--repeat 3] [--only a,b]

Without them (CI's smoke run) only tickwork runs. The DSN defaults to
``$TICKWORK_PG_DSN`` or the local trust server of the tests; its user must be allowed
to create databases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import (
    BENCH_DIR,
    Stat,
    base_parser,
    emit_json,
    percentile,
    print_table,
    trio_noop_rate,
    write_result,
)

DEFAULT_DSN = os.environ.get("TICKWORK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PEERS = BENCH_DIR / "peers"

#: Per system: its script, the interpreter option it runs under, and the query that
#: counts its jobs not yet recorded done (what "the last one is done" waits for).
SYSTEMS: dict[str, tuple[str, str, str]] = {
    "tickwork": (
        "tickwork_peer.py",
        "self",
        "SELECT count(*) FROM tickwork.instances WHERE state < 3",
    ),
    "pgqueuer": ("pgqueuer_peer.py", "peers", "SELECT count(*) FROM pgqueuer"),
    "procrastinate": (
        "procrastinate_peer.py",
        "peers",
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    ),
    "chancy": (
        "chancy_peer.py",
        "peers",
        "SELECT count(*) FROM chancy_jobs WHERE state NOT IN ('succeeded', 'failed')",
    ),
    "oban": (
        "oban_peer.py",
        "oban",
        (
            "SELECT count(*) FROM oban_jobs WHERE state NOT IN "
            "('completed', 'discarded', 'cancelled')"
        ),
    ),
}


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def db_dsn(dsn: str, db: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{db}"))


class Bench:
    """One system's database, interpreter and script."""

    def __init__(self, name: str, python: str, admin_dsn: str, tmp: Path) -> None:
        self.name = name
        self.script, _, self.remaining_sql = SYSTEMS[name]
        self.python = python
        self.admin = admin_dsn
        self.db = f"bench_{name}"
        self.dsn = db_dsn(admin_dsn, self.db)
        self.tmp = tmp
        self.enqueue_s = 0.0  # how long the last enqueue took: the next burst's budget

    def argv(self, cmd: str, *args: str) -> list[str]:
        return [self.python, str(PEERS / self.script), cmd, "--dsn", self.dsn, *args]

    def call(self, cmd: str, *args: str, timeout: float = 600) -> None:
        done = subprocess.run(
            self.argv(cmd, *args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{self.name} {cmd} failed: {done.stderr[-3000:]}")

    def fresh(self) -> None:
        sql(self.admin, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        sql(self.admin, f'CREATE DATABASE "{self.db}"')
        self.call("setup")

    def remaining(self) -> int:
        [(n,)] = sql(self.dsn, self.remaining_sql)
        return int(n)

    def commits(self) -> int:
        """The database's committed transactions, once no session of it is left (a
        session's statistics reach the view when it ends)."""
        deadline = time.monotonic() + 30
        while sql(
            self.admin,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            self.db,
        )[0][0]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
        rows = sql(self.admin, query, self.db)
        return int(rows[0][0])


class Worker:
    def __init__(self, bench: Bench, node: str) -> None:
        self.out = bench.tmp / f"{bench.name}-{node}.json"
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            bench.argv("work", "--out", str(self.out), "--node", node),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.name = f"{bench.name}/{node}"

    def ready(self, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError(f"{self.name} did not start: {self.proc.communicate()[1][-3000:]}")

    def stop(self) -> list[float]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            raise RuntimeError(f"{self.name} wrote no lateness file: {err[-3000:]}")
        return list(json.loads(self.out.read_text()))


def start_workers(bench: Bench, nodes: int) -> list[Worker]:
    workers = [Worker(bench, f"node{i}") for i in range(nodes)]
    for w in workers:
        w.ready()
    return workers


def cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) CPU time so far, in clock ticks (``/proc/stat``)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def cores_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * (os.cpu_count() or 1) if total > 0 else float("nan")


def wait_done(bench: Bench, start: float, cap: float) -> tuple[float, int]:
    """Poll until nothing is left (or ``cap`` seconds after ``start``): (when, how many
    were left then)."""
    while True:
        left = bench.remaining()
        now = time.time()
        if left == 0 or now - start > cap:
            return now, left
        time.sleep(0.02)


def burst(bench: Bench, n: int, nodes: int, cap: float) -> dict[str, Any]:
    for _ in range(3):
        bench.fresh()
        budget = 3.0 + 2 * bench.enqueue_s + 0.5 * nodes
        due = time.time() + budget
        t0 = time.time()
        bench.call("enqueue", "--n", str(n), "--due", repr(due))
        bench.enqueue_s = time.time() - t0
        before = bench.commits()
        workers = start_workers(bench, nodes)
        if time.time() < due - 0.2:
            break
        for w in workers:  # the insert or the start took longer than the budget: again
            w.stop()
    else:
        raise RuntimeError(f"{bench.name}: could not insert {n} jobs ahead of their time")
    time.sleep(max(0.0, due - time.time()))
    cpu0 = cpu_times()
    finished, left = wait_done(bench, due, cap)
    busy = cores_busy(cpu0, cpu_times())
    for w in workers:
        w.stop()
    done = n - left
    return {
        "rate": done / (finished - due),
        "capped": left > 0,
        "cores_busy": busy,
        "commits_per_job": (bench.commits() - before) / max(done, 1),
    }


def steady(bench: Bench, rate: int, seconds: float, drain_cap: float) -> dict[str, Any]:
    bench.fresh()
    [worker] = start_workers(bench, 1)
    bench.call("produce", "--rate", str(rate), "--seconds", str(seconds), timeout=seconds * 4 + 60)
    _, left = wait_done(bench, time.time(), drain_cap)
    samples = sorted(worker.stop())
    return {
        "p50_ms": percentile(samples, 0.50) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "started": len(samples),
        "behind": left,
    }


def interpreters(args: Any) -> dict[str, str | None]:
    return {
        "self": sys.executable,
        "peers": args.peers_python or os.environ.get("TICKWORK_PEERS_PYTHON"),
        "oban": args.oban_python or os.environ.get("TICKWORK_OBAN_PYTHON"),
    }


def fmt_rate(values: list[dict[str, Any]]) -> str:
    stat = Stat.of(v["rate"] for v in values)
    capped = " (capped)" if any(v["capped"] for v in values) else ""
    return stat.fmt(",.0f", "/s") + capped


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--peers-python", help="interpreter with pgqueuer, procrastinate, chancy")
    parser.add_argument("--oban-python", help="interpreter (3.12+) with oban")
    parser.add_argument("--only", default="", help="comma-separated systems (default: all)")
    parser.add_argument("-n", type=int, default=None, help="jobs in a burst (default 50,000)")
    parser.add_argument("--seconds", type=float, default=None, help="steady duration (30)")
    parser.add_argument("--cap", type=float, default=60.0, help="longest burst (seconds)")
    args = parser.parse_args()
    n = args.n or (500 if args.quick else 50_000)
    seconds = args.seconds or (2.0 if args.quick else 30.0)
    rates = (200,) if args.quick else (1_000, 5_000)
    node_counts = (1, 3)

    pythons = interpreters(args)
    wanted = [s for s in args.only.split(",") if s] or list(SYSTEMS)
    skipped = [s for s in wanted if pythons[SYSTEMS[s][1]] is None]
    names = [s for s in wanted if s not in skipped]
    noop = trio_noop_rate()

    with tempfile.TemporaryDirectory(prefix="pg_peers_") as tmp:
        benches = {s: Bench(s, str(pythons[SYSTEMS[s][1]]), args.dsn, Path(tmp)) for s in names}
        bursts: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(args.repeat):
            for nodes in node_counts:
                for s in names:
                    result = burst(benches[s], n, nodes, args.cap)
                    bursts.setdefault((s, nodes), []).append(result)
                    print(f"  burst {s} x{nodes}: {result['rate']:,.0f}/s", flush=True)
        steadies: dict[tuple[str, int], dict[str, Any]] = {}
        for rate in rates:
            for s in names:
                steadies[(s, rate)] = steady(benches[s], rate, seconds, drain_cap=30.0)
                print(f"  steady {s} {rate}/s: p99 {steadies[(s, rate)]['p99_ms']:,.1f} ms")
        for bench in benches.values():
            sql(args.dsn, f'DROP DATABASE IF EXISTS "{bench.db}" WITH (FORCE)')

    def rate_of(system: str, nodes: int) -> float:
        return Stat.of(v["rate"] for v in bursts[(system, nodes)]).median

    def busy_of(system: str, nodes: int) -> float:
        return Stat.of(v["cores_busy"] for v in bursts[(system, nodes)]).median

    rows = []
    for s in names:
        row = [s, fmt_rate(bursts[(s, 1)]), fmt_rate(bursts[(s, 3)])]
        row.append(" / ".join(f"{busy_of(s, k):.2f}" for k in node_counts))
        row.append(f"{Stat.of(v['commits_per_job'] for v in bursts[(s, 1)]).median:.4f}")
        for rate in rates:
            st = steadies[(s, rate)]
            behind = f", {st['behind']:,} behind" if st["behind"] else ""
            row.append(f"{st['p50_ms']:,.1f} / {st['p99_ms']:,.1f} ms{behind}")
        rows.append(row)
    headers = ["system", f"burst {n:,}, 1 worker", "3 workers", "cores busy 1 / 3"]
    headers += ["commits/job"]
    headers += [f"steady {r:,}/s p50 / p99" for r in rates]
    notes = [
        (
            f"trio no-op rate of this run: {noop:,.0f}/s; {args.repeat} repetition(s), "
            f"interleaved; medians (min-max); cores busy: the whole machine's, of "
            f"{os.cpu_count()}, during the burst"
        ),
    ]
    peers = [s for s in names if s != "tickwork"]
    summary: dict[str, Any] = {}
    if "tickwork" in names and peers:
        fastest = max(peers, key=lambda s: rate_of(s, 1))
        summary = {
            "fastest_peer": fastest,
            "rate_ratio": rate_of("tickwork", 1) / rate_of(fastest, 1),
            "scale_3_over_1": rate_of("tickwork", 3) / rate_of("tickwork", 1),
            "cores_busy_1": busy_of("tickwork", 1),
            "cores_busy_3": busy_of("tickwork", 3),
            "p99_ratio_1000": steadies[("tickwork", rates[0])]["p99_ms"]
            / steadies[(fastest, rates[0])]["p99_ms"],
        }
        notes.append(
            f"tickwork / {fastest} (the fastest peer) burst rate: "
            f"{summary['rate_ratio']:.2f}x (target >= 2x); p99 lateness at {rates[0]:,}/s: "
            f"{summary['p99_ratio_1000']:.3f}x (target <= 0.1x); tickwork 3 workers / 1: "
            f"{summary['scale_3_over_1']:.2f}x (target >= 1.5x where the CPU allows; the "
            f"machine's cores busy {summary['cores_busy_1']:.2f} with 1 worker, "
            f"{summary['cores_busy_3']:.2f} with 3, of {os.cpu_count()})"
        )
    if skipped:
        notes.append(f"skipped (no interpreter given): {', '.join(skipped)}")
    print_table("PostgreSQL peers, same server, same run", headers, rows, notes)
    payload: dict[str, Any] = {
        "n": n,
        "trio_noop_rate": noop,
        "bursts": {f"{s}x{k}": v for (s, k), v in bursts.items()},
        "steady": {f"{s}@{r}": v for (s, r), v in steadies.items()},
        "skipped": skipped,
        **summary,
    }
    write_result("pg_peers", payload, write=not args.no_write)
    emit_json("pg_peers", payload)


if __name__ == "__main__":
    main()
