"""tickwork side by side with APScheduler 3.11 and 4.0 (pre-release), same workloads.

Systems, each configured to run everything and drop nothing:

* ``tickwork-sqlite`` / ``tickwork-memory``: ``open_scheduler`` with default knobs
  (max_concurrency 1,000) on SQLiteStore (WAL, synchronous=NORMAL) / MemoryStore.
* ``aps3-memory`` / ``aps3-sqlalchemy``: APScheduler 3 ``AsyncIOScheduler`` with its
  ``AsyncIOExecutor`` (async no-op jobs run as asyncio tasks, no pool limit),
  ``misfire_grace_time=None`` (never skipped for lateness), ``coalesce=False``, on
  ``MemoryJobStore`` / ``SQLAlchemyJobStore`` on a SQLite file in WAL mode with
  synchronous=NORMAL (the same durability as tickwork's store).
* ``aps4-memory`` / ``aps4-sqlalchemy``: APScheduler 4.0.0a6 ``AsyncScheduler`` with
  ``max_concurrent_jobs=1000`` (as tickwork), date-trigger schedules with
  ``misfire_grace_time=None`` and ``CoalescePolicy.all``, ``job_result_expiration_time=0``,
  ``LocalEventBroker``; ``MemoryDataStore`` on the trio backend, and ``SQLAlchemyDataStore``
  on a SQLite file (WAL, synchronous=NORMAL) on the asyncio backend: 4.0.0a6 refuses
  to start that store on trio. APScheduler 4 cannot share a virtualenv with 3, so it runs
  in another interpreter given with ``--aps4-python`` (skipped without it).

Workloads (each measurement in a fresh child process):

* fire: N no-op jobs due at once, added with each system's API (``schedule_many``;
  ``add_job`` / ``add_schedule`` one by one: APScheduler has no bulk call), until all N
  ran (tickwork: N SUCCEEDED recorded; APScheduler: N executed/released events). The
  slow systems get a smaller N (see the table); tickwork is measured again at each
  system's N, and the ratio tickwork / APScheduler compares the two at the same N.
* lateness: jobs added upfront, due at a steady rate for a few seconds; start - due
  measured inside the job (``time.time_ns()``); p50/p99/max. The rate is one each system
  can store fast enough (see the table); tickwork runs at the same rate.
* memory: RSS growth of the process after adding N future jobs (due in 2 h+), over its
  RSS with the scheduler started and empty; for durable stores also the RSS of a fresh
  process that opens the store holding them.

    python benchmarks/apscheduler_compare.py [--quick] [--aps4-python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    MIB,
    Stat,
    base_parser,
    emit_json,
    percentile,
    print_table,
    rss_bytes,
    run_python_child,
    write_result,
)

SYSTEMS = (
    "tickwork-sqlite",
    "tickwork-memory",
    "aps3-memory",
    "aps3-sqlalchemy",
    "aps4-memory",
    "aps4-sqlalchemy",
)
#: fire / memory sizes and lateness rates: (full, quick)
FIRE_N = {
    "tickwork-sqlite": (100_000, 300),
    "tickwork-memory": (100_000, 300),
    "aps3-memory": (100_000, 300),
    "aps3-sqlalchemy": (5_000, 300),
    "aps4-memory": (10_000, 300),
    "aps4-sqlalchemy": (500, 30),
}
#: more fire sizes of a system (full, quick): issue 15 sets 3x APScheduler 3 in-memory at
#: 20,000 and 100,000 due at once
MORE_FIRE_N = {"aps3-memory": (20_000, 300)}
MEMORY_N = {
    "tickwork-sqlite": (100_000, 1_000),
    "tickwork-memory": (100_000, 1_000),
    "aps3-memory": (100_000, 1_000),
    "aps3-sqlalchemy": (5_000, 300),
    "aps4-memory": (50_000, 1_000),
    "aps4-sqlalchemy": (500, 30),
}
#: in --quick mode every system runs lateness at this rate (a smoke test)
QUICK_RATE = 200
LATENESS_RATE = {
    "aps3-memory": 2_000,
    "aps3-sqlalchemy": 200,
    "aps4-memory": 500,
    "aps4-sqlalchemy": 20,
}
#: conservative insert rates (per s) used to schedule lateness runs far enough ahead
INSERT_EST = {
    "tickwork-sqlite": 20_000,
    "tickwork-memory": 20_000,
    "aps3-memory": 5_000,
    "aps3-sqlalchemy": 300,
    "aps4-memory": 3_000,
    "aps4-sqlalchemy": 15,
}
FUTURE = timedelta(hours=2)


# ======================================================================================
# job functions (module level: APScheduler's SQL stores keep a reference to them)

STARTS: list[tuple[int, int]] = []


async def noop() -> None:
    pass


async def stamp(due_ns: int) -> None:
    STARTS.append((due_ns, time.time_ns()))


def lateness_summary(starts: list[tuple[int, int]], n: int) -> dict[str, Any]:
    late = sorted((s - d) / 1e6 for d, s in starts)
    return {
        "n": n,
        "ran": len(late),
        "p50_ms": percentile(late, 0.5),
        "p99_ms": percentile(late, 0.99),
        "max_ms": late[-1] if late else float("nan"),
        "min_ms": late[0] if late else float("nan"),
    }


def lead_s(system: str, n: int) -> float:
    """How far ahead the first of ``n`` lateness jobs is due: time to store them all."""
    return 1.0 + n / INSERT_EST[system]


def due_times(n: int, rate: float, lead: float) -> list[int]:
    """``n`` due times (ns since the epoch) ``1/rate`` apart, from ``lead`` s from now."""
    start = time.time_ns() + int(lead * 1e9)
    return [start + int(i * 1e9 / rate) for i in range(n)]


def as_dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def sqlite_engine(path: Path) -> Any:
    """A SQLAlchemy engine on ``path`` with tickwork's durability: WAL, synchronous=NORMAL."""
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")

    return engine


# ======================================================================================
# tickwork


async def tickwork_child(system: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import trio

    import tickwork
    from _common import open_node, wait_recorded

    d = Path(args.tmpdir)

    def store() -> tickwork.Store:
        if system == "tickwork-sqlite":
            return tickwork.SQLiteStore(d / "tw.db")
        return tickwork.MemoryStore()

    if workload == "fire":
        async with open_node(store()) as scheduler:
            now = datetime.now(UTC)
            news = [tickwork.NewInstance("noop", now) for _ in range(args.n)]
            gc.collect()
            t0 = time.perf_counter()
            await scheduler.schedule_many(news)
            t1 = time.perf_counter()
            t2 = await wait_recorded(scheduler, args.n)
            assert await scheduler.count(state=tickwork.State.SUCCEEDED) == args.n
        return {"insert_s": t1 - t0, "drain_s": t2 - t1, "total_s": t2 - t0}

    if workload == "lateness":

        class Stamp(tickwork.Task):
            name = "stamp"

            async def run(self, params: bytes) -> None:
                STARTS.append((int.from_bytes(params, "little"), time.time_ns()))

        lead = lead_s(system, args.n)
        async with open_node(store(), tasks=[Stamp()]) as scheduler:
            dues = due_times(args.n, args.rate, lead)
            news = [
                tickwork.NewInstance("stamp", as_dt(ns), ns.to_bytes(8, "little")) for ns in dues
            ]
            await scheduler.schedule_many(news)
            margin = (dues[0] - time.time_ns()) / 1e9
            await wait_recorded(scheduler, args.n, poll=0.01)
        return {**lateness_summary(STARTS, args.n), "margin_s": margin}

    # memory
    gc.collect()
    async with open_node(store()) as scheduler:
        await trio.sleep(0.2)
        gc.collect()
        rss0 = rss_bytes()
        base = datetime.now(UTC) + FUTURE
        for first in range(0, args.n, 10_000):
            k = min(10_000, args.n - first)
            await scheduler.schedule_many(
                [
                    tickwork.NewInstance("noop", base + timedelta(seconds=first + i))
                    for i in range(k)
                ]
            )
        await trio.sleep(0.2)
        gc.collect()
        rss1 = rss_bytes()
    return {"rss_empty": rss0, "rss_stored": rss1, "growth": rss1 - rss0}


# ======================================================================================
# APScheduler 3


async def aps3_child(system: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    d = Path(args.tmpdir)
    jobstore = (
        MemoryJobStore()
        if system == "aps3-memory"
        else SQLAlchemyJobStore(engine=sqlite_engine(d / "aps3.db"))
    )
    done = 0
    errors = 0
    target = args.n
    finished = asyncio.Event()

    def on_event(event: Any) -> None:
        nonlocal done, errors
        done += 1
        if event.code != EVENT_JOB_EXECUTED:
            errors += 1
        if done >= target:
            finished.set()

    gc.collect()
    scheduler = AsyncIOScheduler(
        jobstores={"default": jobstore},
        executors={"default": AsyncIOExecutor()},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
    )
    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start()
    try:
        if workload == "fire":
            now = datetime.now(UTC)
            gc.collect()
            t0 = time.perf_counter()
            for i in range(args.n):
                scheduler.add_job(noop, "date", run_date=now, id=f"j{i}")
            t1 = time.perf_counter()
            await finished.wait()
            t2 = time.perf_counter()
            if errors:
                raise RuntimeError(f"{errors} jobs failed or were missed")
            return {"insert_s": t1 - t0, "drain_s": t2 - t1, "total_s": t2 - t0}
        if workload == "lateness":
            dues = due_times(args.n, args.rate, lead_s(system, args.n))
            for i, ns in enumerate(dues):
                scheduler.add_job(stamp, "date", run_date=as_dt(ns), args=[ns], id=f"j{i}")
            margin = (dues[0] - time.time_ns()) / 1e9
            await finished.wait()
            return {**lateness_summary(STARTS, args.n), "margin_s": margin, "errors": errors}
        # memory
        await asyncio.sleep(0.2)
        gc.collect()
        rss0 = rss_bytes()
        base = datetime.now(UTC) + FUTURE
        for i in range(args.n):
            scheduler.add_job(noop, "date", run_date=base + timedelta(seconds=i), id=f"j{i}")
        await asyncio.sleep(0.2)
        gc.collect()
        rss1 = rss_bytes()
        return {"rss_empty": rss0, "rss_stored": rss1, "growth": rss1 - rss0}
    finally:
        scheduler.shutdown(wait=False)


# ======================================================================================
# APScheduler 4 (pre-release)


async def aps4_child(system: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio
    from apscheduler import AsyncScheduler, CoalescePolicy, JobOutcome, JobReleased
    from apscheduler.datastores.memory import MemoryDataStore
    from apscheduler.eventbrokers.local import LocalEventBroker
    from apscheduler.triggers.date import DateTrigger

    d = Path(args.tmpdir)
    if system == "aps4-memory":
        data_store: Any = MemoryDataStore()
    else:
        from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore

        data_store = SQLAlchemyDataStore(sqlite_engine(d / "aps4.db"))
    done = 0
    errors = 0
    finished = anyio.Event()

    def on_released(event: JobReleased) -> None:
        nonlocal done, errors
        done += 1
        if event.outcome is not JobOutcome.success:
            errors += 1
        if done >= args.n:
            finished.set()

    options: dict[str, Any] = {
        "misfire_grace_time": None,
        "coalesce": CoalescePolicy.all,
        "job_result_expiration_time": 0,
    }
    gc.collect()
    async with AsyncScheduler(
        data_store, LocalEventBroker(), max_concurrent_jobs=1000
    ) as scheduler:
        scheduler.subscribe(on_released, {JobReleased})
        await scheduler.start_in_background()
        if workload == "fire":
            now = datetime.now(UTC)
            gc.collect()
            t0 = time.perf_counter()
            for i in range(args.n):
                await scheduler.add_schedule(noop, DateTrigger(now), id=f"s{i}", **options)
            t1 = time.perf_counter()
            await finished.wait()
            t2 = time.perf_counter()
            result = {"insert_s": t1 - t0, "drain_s": t2 - t1, "total_s": t2 - t0}
            if errors:
                raise RuntimeError(f"{errors} jobs did not succeed")
        elif workload == "lateness":
            dues = due_times(args.n, args.rate, lead_s(system, args.n))
            for i, ns in enumerate(dues):
                await scheduler.add_schedule(
                    stamp, DateTrigger(as_dt(ns)), id=f"s{i}", args=[ns], **options
                )
            margin = (dues[0] - time.time_ns()) / 1e9
            await finished.wait()
            result = {**lateness_summary(STARTS, args.n), "margin_s": margin, "errors": errors}
        else:
            await anyio.sleep(0.2)
            gc.collect()
            rss0 = rss_bytes()
            base = datetime.now(UTC) + FUTURE
            for i in range(args.n):
                await scheduler.add_schedule(
                    noop, DateTrigger(base + timedelta(seconds=i)), id=f"s{i}", **options
                )
            await anyio.sleep(0.2)
            gc.collect()
            rss1 = rss_bytes()
            result = {"rss_empty": rss0, "rss_stored": rss1, "growth": rss1 - rss0}
        await scheduler.stop()
    return result


def child_main(args: argparse.Namespace) -> None:
    system, workload = args.child, args.workload
    if system.startswith("tickwork"):
        import trio

        result = trio.run(tickwork_child, system, workload, args)
    elif system.startswith("aps3"):
        result = asyncio.run(aps3_child(system, workload, args))
    else:
        import anyio

        backend = "trio" if system == "aps4-memory" else "asyncio"
        result = anyio.run(aps4_child, system, workload, args, backend=backend)
    from importlib.metadata import version

    package = "tickwork" if system.startswith("tickwork") else "apscheduler"
    emit_json(
        "apscheduler-child",
        {
            "system": system,
            "workload": workload,
            "n": args.n,
            "version": version(package),
            **result,
        },
    )


# ======================================================================================
# the parent: runs the children, prints the tables


def run_child(
    system: str, workload: str, n: int, *, rate: float = 0, python: str | None, tmpdir: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tickwork-aps-", dir=tmpdir) as d:
        argv = [
            str(Path(__file__).resolve()),
            "--child",
            system,
            "--workload",
            workload,
            "-n",
            str(n),
            "--rate",
            str(rate),
            "--tmpdir",
            d,
        ]
        env = {"PYTHONPATH": str(BENCH_DIR)}
        return run_python_child(argv, python=python, timeout=1800, env=env)


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--aps4-python",
        default=os.environ.get("TICKWORK_BENCH_APS4_PYTHON"),
        help="a Python with apscheduler==4.0.0a6 (and sqlalchemy, anyio, trio, "
        "psutil) installed; default $TICKWORK_BENCH_APS4_PYTHON; "
        "APScheduler 4 is skipped without it",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--workloads", default="fire,lateness,memory", help="comma-separated")
    parser.add_argument(
        "--lateness-seconds",
        type=float,
        default=None,
        help="seconds of due jobs per lateness run (default 5; --quick 1)",
    )
    # the child mode (internal)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    q = 1 if args.quick else 0
    repeat = args.repeat
    systems = [s for s in args.systems.split(",") if s in SYSTEMS]
    skipped = []
    if not args.aps4_python or not Path(args.aps4_python).exists():
        skipped = [s for s in systems if s.startswith("aps4")]
        systems = [s for s in systems if not s.startswith("aps4")]
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        skipped += [s for s in systems if s.startswith("aps3")]
        systems = [s for s in systems if not s.startswith("aps3")]
    workloads = args.workloads.split(",")
    seconds = args.lateness_seconds or (1.0 if args.quick else 5.0)

    def python_for(system: str) -> str | None:
        return args.aps4_python if system.startswith("aps4") else None

    def go(system: str, workload: str, n: int, rate: float = 0) -> dict[str, Any]:
        print(
            f"  {system:16s} {workload:9s} n={n:<7,} {f'rate={rate:g}/s' if rate else ''}",
            flush=True,
        )
        return run_child(
            system, workload, n, rate=rate, python=python_for(system), tmpdir=args.tmpdir
        )

    payload: dict[str, Any] = {"systems": systems, "skipped": skipped, "repeat": repeat}
    aps = [s for s in systems if s.startswith("aps")]
    tick = [s for s in systems if s.startswith("tickwork")]

    # -- fire ---------------------------------------------------------------------------
    if "fire" in workloads:
        sizes = {
            s: sorted({FIRE_N[s][q], *([MORE_FIRE_N[s][q]] if s in MORE_FIRE_N else [])})
            for s in systems
        }
        # tickwork runs at its own N and at every APScheduler system's N
        tw_sizes = sorted(
            {FIRE_N["tickwork-sqlite"][q], *(n for s in aps for n in sizes[s])}, reverse=True
        )
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for s in systems:
                for n in tw_sizes if s in tick else sizes[s]:
                    runs.setdefault((s, n), []).append(go(s, "fire", n))
        rows = []
        fire_out = {}
        for (s, n), rs in runs.items():
            fire = Stat.of(n / r["total_s"] for r in rs)
            ins = Stat.of(n / r["insert_s"] for r in rs)
            drain = Stat.of(n / r["drain_s"] for r in rs)
            ratio = "-"
            if s in aps and ("tickwork-sqlite", n) in runs:
                tw = Stat.of(n / r["total_s"] for r in runs[("tickwork-sqlite", n)])
                ratio_stat = Stat.of(t / a for t, a in zip(tw.values, fire.values, strict=False))
                ratio = ratio_stat.fmt(".1f", "x")
            fire_out[f"{s}:{n}"] = {
                "system": s,
                "n": n,
                "fire_per_s": fire.as_dict(),
                "insert_per_s": ins.as_dict(),
                "drain_per_s": drain.as_dict(),
                "version": rs[0]["version"],
            }
            rows.append(
                [
                    s,
                    rs[0]["version"],
                    f"{n:,}",
                    fire.fmt(unit="/s"),
                    ins.fmt(unit="/s"),
                    drain.fmt(unit="/s"),
                    ratio,
                ]
            )
        print_table(
            "Fire throughput: tickwork vs APScheduler (N due at once)",
            [
                "system",
                "version",
                "N",
                "fire (end to end)",
                "insert",
                "drain",
                "tickwork-sqlite / this",
            ],
            rows,
            [
                f"median (min-max) of {repeat}; each run a fresh child process",
                "ratio: tickwork on SQLite (durable) at the same N, paired by repetition",
            ],
        )
        payload["fire"] = fire_out

    # -- lateness -----------------------------------------------------------------------
    if "lateness" in workloads:

        def rate_of(system: str) -> int:
            return QUICK_RATE if args.quick else LATENESS_RATE[system]

        rates = sorted({rate_of(s) for s in aps} | {QUICK_RATE if args.quick else 2_000})
        plan = [(s, r) for s in tick for r in reversed(rates)]
        plan += [(s, rate_of(s)) for s in aps]
        late_runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for s, r in plan:
                n = max(1, int(r * seconds))
                late_runs.setdefault((s, r), []).append(go(s, "lateness", n, r))
        rows = []
        late_out = {}
        for (s, r), rs in sorted(late_runs.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
            p50 = Stat.of(x["p50_ms"] for x in rs)
            p99 = Stat.of(x["p99_ms"] for x in rs)
            mx = Stat.of(x["max_ms"] for x in rs)
            margin = min(x["margin_s"] for x in rs)
            late_out[f"{s}:{r:g}"] = {
                "system": s,
                "rate": r,
                "n": rs[0]["n"],
                "p50_ms": p50.as_dict(),
                "p99_ms": p99.as_dict(),
                "max_ms": mx.as_dict(),
                "min_margin_s": margin,
            }
            rows.append(
                [
                    f"{r:,.0f}/s",
                    s,
                    f"{rs[0]['n']:,}",
                    p50.fmt(".2f"),
                    p99.fmt(".2f"),
                    mx.fmt(".1f"),
                    "yes" if margin > 0 else "NO (stored late)",
                ]
            )
        print_table(
            "Lateness (start - due, ms): tickwork vs APScheduler",
            ["rate", "system", "jobs", "p50", "p99", "max", "all stored before due"],
            rows,
            [
                (
                    f"{seconds:g} s of jobs at the rate, all added upfront; median (min-max) of "
                    f"{repeat}"
                ),
                (
                    "each APScheduler system at a rate it can store fast enough; "
                    "tickwork (SQLite, MemoryStore) at the same rates"
                ),
            ],
        )
        payload["lateness"] = late_out

    # -- memory -------------------------------------------------------------------------
    if "memory" in workloads:
        rows = []
        mem_out = {}
        for s in systems:
            n = MEMORY_N[s][q]
            rs = [go(s, "memory", n) for _ in range(repeat)]
            growth = Stat.of(r["growth"] for r in rs)
            per_k = growth.scaled(1000 / n / 1024)
            mem_out[s] = {"n": n, "growth_bytes": growth.as_dict(), "rss_empty": rs[0]["rss_empty"]}
            rows.append(
                [
                    s,
                    f"{n:,}",
                    f"{rs[0]['rss_empty'] / MIB:.1f} MiB",
                    growth.scaled(1 / MIB).fmt(".1f", " MiB"),
                    per_k.fmt(".1f", " KiB"),
                ]
            )
        print_table(
            "Memory: RSS growth with N future jobs stored (the process that added them)",
            ["system", "N", "RSS started, empty", "growth with N", "per 1,000 jobs"],
            rows,
            [
                (
                    "RSS after gc, 0.2 s after the last add; see scale.py for a fresh tickwork "
                    "node opening 10,000,000 stored instances"
                )
            ],
        )
        payload["memory"] = mem_out

    if skipped:
        print(f"skipped (not installed / no --aps4-python): {', '.join(skipped)}")
    write_result("apscheduler_compare", payload, write=not (args.no_write or args.quick))
    emit_json("apscheduler_compare", payload)


if __name__ == "__main__":
    main()
