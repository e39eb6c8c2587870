"""The node's fire throughput while its HTTP app streams events (target: within 10 % of
the throughput with nobody watching).

N instances due now are stored in a fresh SQLite file, then the node runs them all (a
no-op task) and the rate is measured from the first start to the last outcome: once with
nobody subscribed (the hub builds no events at all), once with an ``/api/events`` client
reading the stream over loopback (an httpx client in a process of its own, as a
browser is) and the metrics' counters running (a scrape started them). Each
instance makes three transitions (CLAIMED, RUNNING, SUCCEEDED), so the stream carries
three events per instance.

    python benchmarks/sse_overhead.py [--quick] [--repeat 3] [--count 100000]
"""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial

import httpx
import trio

import tickwork
from _common import Stat, base_parser, check, emit_json, print_table, temp_dir, write_result
from tickwork.http import serve

TARGET = 0.90


class Noop(tickwork.Task):
    name = "noop"

    async def run(self, params: bytes) -> object:
        del params
        return None


#: The event stream's reader, a process of its own (as a browser is).
READER = """
import sys, httpx
n = 0
try:
    with httpx.stream("GET", sys.argv[1], timeout=None) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                n += 1
            elif line == ": connected":
                print("ready", flush=True)
except httpx.HTTPError:
    pass  # the node stopped serving: the count so far is the answer
print(n, flush=True)
"""


async def _fire(s: tickwork.Scheduler, n: int) -> float:
    now = s.now()
    await s.schedule_many([tickwork.NewInstance("noop", now) for _ in range(n)])
    t0 = time.perf_counter()
    while s.statistics().counts.get("SUCCEEDED", 0) < n:
        await trio.sleep(0.005)
    return n / (time.perf_counter() - t0)


async def _once(db: str, n: int, *, watched: bool) -> tuple[float, int]:
    async with tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[Noop()]) as s:
        if not watched:
            return await _fire(s, n), 0
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, s, "127.0.0.1", 0)
            base = f"http://{host}:{port}"
            async with httpx.AsyncClient() as client:
                await client.get(f"{base}/metrics")  # starts the metrics' event counters
            reader = await trio.lowlevel.open_process(
                [sys.executable, "-c", READER, f"{base}/api/events"], stdout=subprocess.PIPE
            )
            assert reader.stdout is not None
            out = b""
            while b"ready\n" not in out:
                out += await reader.stdout.receive_some()
            rate = await _fire(s, n)
            nursery.cancel_scope.cancel()
    # the stream ended with the node: the reader prints how many events it got
    assert reader.stdout is not None
    while not out.endswith(b"\n") or out.count(b"\n") < 2:
        chunk = await reader.stdout.receive_some()
        if not chunk:
            break
        out += chunk
    await reader.wait()
    return rate, int(out.split()[-1])


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--count", type=int, default=None, help="instances per run")
    args = parser.parse_args()
    n = args.count or (5_000 if args.quick else 100_000)
    alone: list[float] = []
    watched: list[float] = []
    streamed: list[int] = []
    with temp_dir(args.tmpdir) as tmp:
        for k in range(args.repeat):
            alone.append(trio.run(partial(_once, str(tmp / f"a{k}.db"), n, watched=False))[0])
            rate, events = trio.run(partial(_once, str(tmp / f"w{k}.db"), n, watched=True))
            watched.append(rate)
            streamed.append(events)
    a, w = Stat.of(alone), Stat.of(watched)
    ratio = Stat.of([x / y for x, y in zip(watched, alone, strict=True)])
    print_table(
        "Fire throughput with the event stream open (SQLite, no-op task)",
        ["run", "instances per second", "ratio", "target"],
        [
            ["nobody watching", a.fmt(",.0f", "/s"), "1.00", ""],
            [
                "/api/events streaming + metrics counting",
                w.fmt(",.0f", "/s"),
                f"{ratio.median:.2f}",
                f">= {TARGET:.2f} {check(ratio.median, TARGET)}",
            ],
        ],
        [
            f"{n:,} instances due at once per run; {args.repeat} repetitions; median (min-max)",
            (
                "events the client received per run (3 per instance, minus those it lost): "
                f"{min(streamed):,}-{max(streamed):,}"
            ),
        ],
    )
    payload = {
        "count": n,
        "alone_per_s": a.as_dict(),
        "watched_per_s": w.as_dict(),
        "ratio": ratio.median,
        "events_received": streamed,
        "target": TARGET,
        "pass": ratio.median >= TARGET,
    }
    write_result("sse_overhead", payload, write=not args.no_write)
    emit_json("sse_overhead", payload)


if __name__ == "__main__":
    main()
