"""A ``/metrics`` scrape with many stored instances: how long it takes, and whether it
holds up the node (target: p99 scrape under 50 ms; the node's event loop never stalls
longer during scrapes than without them).

A SQLite file gets N instances due in a year (``schedule_many`` in chunks); a node opens
it and serves its HTTP app on a loopback port; a client scrapes ``/metrics`` S times in a
row while a probe task in the node measures how late its 1 ms sleeps wake up (the event
loop's stalls). The same probe runs for as long without scrapes, as the baseline.

    python benchmarks/metrics_scrape.py [--quick] [--stored 10000000] [--scrapes 50]
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

import tickwork
from _common import base_parser, check, emit_json, percentile, print_table, temp_dir, write_result
from tickwork.http import serve

CHUNK = 100_000
TARGET_MS = 50.0


class Noop(tickwork.Task):
    name = "noop"

    async def run(self, params: bytes) -> object:
        del params
        return None


async def _fill(s: tickwork.Scheduler, n: int) -> None:
    first = datetime.now(UTC) + timedelta(days=365)
    for i in range(0, n, CHUNK):
        k = min(CHUNK, n - i)
        await s.schedule_many(
            [tickwork.NewInstance("noop", first + timedelta(microseconds=i + j)) for j in range(k)]
        )


async def _probe(stop: trio.Event, stalls: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await trio.sleep(0.001)
        stalls.append(time.perf_counter() - t0 - 0.001)


async def _measure(db: str, stored: int, scrapes: int) -> dict[str, float]:
    async with tickwork.open_scheduler(
        tickwork.SQLiteStore(db), tasks=[Noop()], window=timedelta(seconds=1)
    ) as s:
        await _fill(s, stored)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, s, "127.0.0.1", 0)
            # the baseline: the probe alone, as long as the scrapes will take
            base: list[float] = []
            stop = trio.Event()
            nursery.start_soon(_probe, stop, base)
            await trio.sleep(1.0)
            stop.set()
            during: list[float] = []
            stop = trio.Event()
            nursery.start_soon(_probe, stop, during)
            took: list[float] = []
            async with httpx.AsyncClient() as client:
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    response = await client.get(f"http://{host}:{port}/metrics")
                    took.append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        raise RuntimeError(response.text[:300])
            stop.set()
            counted = {
                smp.labels.get("state"): smp.value
                for family in text_string_to_metric_families(response.text)
                if family.name == "tickwork_instances"
                for smp in family.samples
            }
            if counted.get("pending") != stored:
                raise RuntimeError(f"the scrape did not count the stored instances: {counted}")
            nursery.cancel_scope.cancel()
    took.sort()
    base.sort()
    during.sort()
    return {
        "scrape_p50_ms": 1000 * percentile(took, 0.50),
        "scrape_p99_ms": 1000 * percentile(took, 0.99),
        "stall_max_ms_without": 1000 * base[-1],
        "stall_max_ms_during": 1000 * during[-1],
        "stall_p99_ms_during": 1000 * percentile(during, 0.99),
    }


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--stored", type=int, default=None, help="instances stored")
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    stored = args.stored or (100_000 if args.quick else 10_000_000)
    with temp_dir(args.tmpdir) as tmp:
        r = trio.run(_measure, str(tmp / "metrics.db"), stored, args.scrapes)
    verdict = check(r["scrape_p99_ms"], TARGET_MS, higher_is_better=False)
    print_table(
        f"/metrics with {stored:,} stored (SQLite)",
        ["measure", "value", "target"],
        [
            ["scrape p50", f"{r['scrape_p50_ms']:.1f} ms", ""],
            [
                "scrape p99",
                f"{r['scrape_p99_ms']:.1f} ms",
                f"<= {TARGET_MS:.0f} ms {verdict}",
            ],
            ["event loop stall, max, without scrapes", f"{r['stall_max_ms_without']:.1f} ms", ""],
            ["event loop stall, max, during scrapes", f"{r['stall_max_ms_during']:.1f} ms", ""],
            ["event loop stall, p99, during scrapes", f"{r['stall_p99_ms_during']:.2f} ms", ""],
        ],
        [f"{args.scrapes} scrapes in a row; the client is in the node's process"],
    )
    payload = {"stored": stored, "scrapes": args.scrapes, **r, "target_ms": TARGET_MS}
    write_result("metrics_scrape", payload, write=not args.no_write)
    emit_json("metrics_scrape", payload)


if __name__ == "__main__":
    main()
