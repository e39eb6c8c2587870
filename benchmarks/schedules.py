"""Schedules: next-fire computations per second, and occurrences materialised per second.

1. ``next_after_us`` chained N times per trigger (each answer is the next question), for
   a fixed-time and a wildcard cron expression in a DST zone, a weekday expression, a
   6-field one with seconds, and an Interval. Pure CPU, one core.
2. On a SQLite file (WAL, synchronous=NORMAL, the store's own thread): S schedules are
   added one call each; then, for R rounds, every due occurrence is claimed in batches of
   5,000 as a node's Puller does; each claim writes every claimed schedule's next
   occurrence in the same transaction. The claimed ones are then finished (SUCCEEDED) in
   batches, as the Recorder does. Two mixes: *shared*, every schedule ``* * * * *`` in
   Europe/Berlin (rounds a minute apart: schedules that share an expression share the
   next-fire computation); *distinct*, schedule i fires daily at ``i%60 (i//60)%24`` in
   the i-th of all IANA zones (rounds a day apart: next to nothing shared). For
   comparison, the same number of plain (non-schedule) instances claimed the same way.

    python benchmarks/schedules.py [--quick] [--repeat 3] [--schedules 10000] [--rounds 3]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import available_timezones

import trio

import tickwork
from _common import Stat, base_parser, emit_json, print_table, temp_dir, write_result
from tickwork._time import to_us
from tickwork.model import Finish, NewRow
from tickwork.schedules.schedule import new_schedule
from tickwork.state import State

S = 1_000_000
BATCH = 5_000
LEASE = 60 * S
T0 = to_us(datetime(2031, 6, 2, tzinfo=UTC))

TRIGGERS = {
    "cron 30 2 * * * Europe/Berlin (fixed-time)": tickwork.Cron("30 2 * * *", "Europe/Berlin"),
    "cron */5 * * * * Europe/Berlin (wildcard)": tickwork.Cron("*/5 * * * *", "Europe/Berlin"),
    "cron 0 9 * * MON-FRI America/New_York": tickwork.Cron("0 9 * * MON-FRI", "America/New_York"),
    "cron */10 * * * * * UTC (seconds)": tickwork.Cron("*/10 * * * * *"),
    "interval 90 s": tickwork.Interval(timedelta(seconds=90)),
}


def next_fire_rate(trigger: tickwork.Cron | tickwork.Interval, n: int) -> float:
    at: int | None = T0
    trigger.next_after_us(T0)  # the zone's offset table, built once
    t0 = time.perf_counter()
    for _ in range(n):
        at = trigger.next_after_us(at)  # type: ignore[arg-type]
    return n / (time.perf_counter() - t0)


async def _claim_rounds(
    store: tickwork.SQLiteStore, count: int, rounds: int, *, step_us: int
) -> tuple[float, float]:
    """Claim every due row ``rounds`` times (the clock moves ``step_us`` per round);
    returns (seconds claiming, seconds finishing)."""
    claiming = finishing = 0.0
    for k in range(1, rounds + 1):
        now = T0 + k * step_us
        held: list[tickwork.Instance] = []
        t0 = time.perf_counter()
        while True:
            got = await store.claim("bench", now, BATCH, now, LEASE)
            held += got
            if len(got) < BATCH:
                break
        claiming += time.perf_counter() - t0
        if len(held) != count:
            raise RuntimeError(f"round {k}: claimed {len(held)}, expected {count}")
        t0 = time.perf_counter()
        for i in range(0, len(held), BATCH):
            batch = held[i : i + BATCH]
            fin = [Finish(h.id, h.claim_token or 0, State.SUCCEEDED, 1) for h in batch]
            await store.finish("bench", fin, now)
        finishing += time.perf_counter() - t0
    return claiming, finishing


def _triggers(mix: str, count: int) -> tuple[list[tickwork.Cron], int]:
    """The schedules' triggers and the time between rounds (every one fires once a round)."""
    if mix == "shared":
        return [tickwork.Cron("* * * * *", "Europe/Berlin")] * count, 60 * S
    zones = sorted(z for z in available_timezones() if z != "localtime")
    crons = [
        tickwork.Cron(f"{i % 60} {(i // 60) % 24} * * *", zones[i % len(zones)])
        for i in range(count)
    ]
    return crons, 24 * 3600 * S


async def materialise_once(path: Path, count: int, rounds: int, mix: str) -> dict[str, float]:
    store = tickwork.SQLiteStore(path)
    await store.open(node_id="bench")
    try:
        triggers, step = _triggers(mix, count)
        schedules = [
            new_schedule("t", trigger, schedule_id=f"s{i:06d}")
            for i, trigger in enumerate(triggers)
        ]
        t0 = time.perf_counter()
        for s in schedules:
            await store.add_schedule(s, T0)
        add_s = time.perf_counter() - t0
        claim_s, finish_s = await _claim_rounds(store, count, rounds, step_us=step)
        pending = await store.count(state=State.PENDING)
        if pending != count:
            raise RuntimeError(f"{pending} pending occurrences, expected {count}")
    finally:
        await store.aclose()
    plain = tickwork.SQLiteStore(path.with_suffix(".plain.db"))
    await plain.open(node_id="bench")
    try:
        for k in range(1, rounds + 1):
            rows = [NewRow("t", T0 + k * 60 * S, b"") for _ in range(count)]
            await plain.insert(rows, T0)
        plain_claim_s, _ = await _claim_rounds(plain, count, rounds, step_us=60 * S)
    finally:
        await plain.aclose()
    return {
        "add_per_s": count / add_s,
        "materialise_per_s": count * rounds / claim_s,
        "finish_per_s": count * rounds / finish_s,
        "plain_claim_per_s": count * rounds / plain_claim_s,
    }


async def measure(
    count: int, rounds: int, repeat: int, tmpdir: str | None
) -> dict[str, dict[str, Stat]]:
    per: dict[str, dict[str, list[float]]] = {"shared": {}, "distinct": {}}
    with temp_dir(tmpdir) as d:
        for rep in range(repeat):
            for mix, rec in per.items():
                got = await materialise_once(d / f"sched-{mix}-{rep}.db", count, rounds, mix)
                for key, value in got.items():
                    rec.setdefault(key, []).append(value)
    return {mix: {k: Stat.of(v) for k, v in rec.items()} for mix, rec in per.items()}


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=None, help="schedules (10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="claim rounds per repetition")
    parser.add_argument("-n", type=int, default=None, help="next-fire steps per trigger")
    args = parser.parse_args()
    count = args.schedules or (500 if args.quick else 10_000)
    n = args.n or (2_000 if args.quick else 50_000)
    next_rates = {
        name: Stat.of(next_fire_rate(trigger, n) for _ in range(args.repeat))
        for name, trigger in TRIGGERS.items()
    }
    print_table(
        "Next-fire computations (one core)",
        ["trigger", "next_after_us per second"],
        [[name, r.fmt(",.0f", "/s")] for name, r in next_rates.items()],
        [f"{n:,} chained steps per trigger; {args.repeat} repetitions; median (min-max)"],
    )
    mat = trio.run(measure, count, args.rounds, args.repeat, args.tmpdir)
    labels = {
        "add_per_s": "add_schedule (one transaction each)",
        "materialise_per_s": "claim + next occurrence written",
        "finish_per_s": "finish (SUCCEEDED) of occurrences",
        "plain_claim_per_s": "claim of plain instances (baseline)",
    }
    print_table(
        "Schedules on SQLite",
        ["measure", "shared expression", "distinct expressions and zones"],
        [
            [label, mat["shared"][k].fmt(",.0f", "/s"), mat["distinct"][k].fmt(",.0f", "/s")]
            for k, label in labels.items()
        ],
        [
            (
                f"{count:,} schedules; {args.rounds} rounds, each claiming all {count:,} due "
                f"occurrences in batches of {BATCH:,}"
            ),
            f"{args.repeat} repetitions; median (min-max)",
        ],
    )
    payload = {
        "schedules": count,
        "rounds": args.rounds,
        "next_fire_per_s": {k: v.median for k, v in next_rates.items()},
        **{f"{mix}_{k}": v.median for mix, rec in mat.items() for k, v in rec.items()},
    }
    write_result("schedules", payload, write=not args.no_write)
    emit_json("schedules", payload)


if __name__ == "__main__":
    main()
