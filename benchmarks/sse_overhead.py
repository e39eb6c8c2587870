"""The node's fire throughput while its HTTP app streams events (target: with an
``/api/events`` client connected, at least 0.90x the throughput with nobody watching).

N instances due now are stored in a fresh SQLite file, then the node runs them all (a
no-op task) and the rate is measured from the first start to the last outcome, in three
set-ups, interleaved (the order rotates every repetition, so drift in the machine's
load falls on all three): nobody subscribed (the hub builds no events at all); an
``/api/events`` client reading the stream over loopback (a process of its own, as a
browser is, counting the frames it reads off the socket: no Python HTTP client parsing
line by line beside the node); and the same with the ``/metrics`` counters running too
(a scrape started them; shown, not part of the target). Each instance makes three
transitions (CLAIMED, RUNNING, SUCCEEDED), so the stream carries three events per
instance. Beside each rate, the node process's CPU time per instance (user + system,
the store's thread included): on a loaded machine it moves less than the rate.

    python benchmarks/sse_overhead.py [--quick] [--repeat 3] [--count 100000]
"""

from __future__ import annotations

import resource
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


#: The event stream's reader, a process of its own (as a browser is). It reads the socket
#: and counts frames, as a browser's native EventSource does: no Python HTTP client
#: parsing line by line beside the node on the same cores.
READER = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
s.sendall(
    f"GET /api/events HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nAccept: text/event-stream\\r\\n\\r\\n"
    .encode()
)
n, tail, ready = 0, b"", False
while True:
    try:
        data = s.recv(1 << 20)
    except OSError:
        break
    if not data:
        break
    data = tail + data
    n += data.count(b"\\ndata: ")
    tail = data[-7:]
    n -= tail.count(b"\\ndata: ")  # counted again with the next chunk
    if not ready and b": connected" in data:
        ready = True
        print("ready", flush=True)
n += tail.count(b"\\ndata: ")
print(n, flush=True)
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fire(s: tickwork.Scheduler, n: int) -> tuple[float, float]:
    """The rate, and the process's CPU microseconds per instance."""
    now = s.now()
    await s.schedule_many([tickwork.NewInstance("noop", now) for _ in range(n)])
    t0, c0 = time.perf_counter(), _cpu()
    while s.statistics().counts.get("SUCCEEDED", 0) < n:
        await trio.sleep(0.005)
    return n / (time.perf_counter() - t0), (_cpu() - c0) / n * 1e6


async def _once(db: str, n: int, mode: str) -> tuple[float, float, int]:
    async with tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[Noop()]) as s:
        if mode == "alone":
            return (*await _fire(s, n), 0)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, s, "127.0.0.1", 0)
            if mode == "metrics":
                async with httpx.AsyncClient() as client:  # starts the event counters
                    await client.get(f"http://{host}:{port}/metrics")
            reader = await trio.lowlevel.open_process(
                [sys.executable, "-c", READER, host, str(port)], stdout=subprocess.PIPE
            )
            assert reader.stdout is not None
            out = b""
            while b"ready\n" not in out:
                more = await reader.stdout.receive_some()
                if not more:
                    raise RuntimeError(f"the event stream's reader ended: {out!r}")
                out += more
            rate, cpu = await _fire(s, n)
            nursery.cancel_scope.cancel()
    # the stream ended with the node: the reader prints how many events it got
    assert reader.stdout is not None
    while not out.endswith(b"\n") or out.count(b"\n") < 2:
        chunk = await reader.stdout.receive_some()
        if not chunk:
            break
        out += chunk
    await reader.wait()
    return rate, cpu, int(out.split()[-1])


MODES = ("alone", "sse", "metrics")
LABELS = {
    "alone": "nobody watching",
    "sse": "/api/events streaming",
    "metrics": "/api/events streaming + /metrics counting",
}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--count", type=int, default=None, help="instances per run")
    args = parser.parse_args()
    n = args.count or (5_000 if args.quick else 100_000)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    streamed: list[int] = []
    with temp_dir(args.tmpdir) as tmp:
        for k in range(args.repeat):
            for mode in MODES[k % 3 :] + MODES[: k % 3]:
                rate, cpu, events = trio.run(partial(_once, str(tmp / f"{mode}{k}.db"), n, mode))
                rates[mode].append(rate)
                cpus[mode].append(cpu)
                if mode != "alone":
                    streamed.append(events)
    stats = {m: Stat.of(rates[m]) for m in MODES}
    ratios = {
        m: Stat.of([x / y for x, y in zip(rates[m], rates["alone"], strict=True)]) for m in MODES
    }
    cpu = {m: Stat.of(cpus[m]) for m in MODES}
    ratio = ratios["sse"].median
    rows = [
        [
            LABELS[m],
            stats[m].fmt(",.0f", "/s"),
            f"{ratios[m].median:.2f}",
            cpu[m].fmt(".1f", " µs"),
            "" if m != "sse" else f">= {TARGET:.2f} {check(ratio, TARGET)}",
        ]
        for m in MODES
    ]
    print_table(
        "Fire throughput with the event stream open (SQLite, no-op task)",
        ["run", "instances per second", "ratio", "CPU per instance", "target"],
        rows,
        [
            f"{n:,} instances due at once per run; {args.repeat} repetitions; median (min-max)",
            (
                "ratio: the median of each repetition's rate over the same repetition's "
                "rate with nobody watching"
            ),
            (
                "events the client received per run (3 per instance, minus those it lost): "
                f"{min(streamed):,}-{max(streamed):,}"
            ),
        ],
    )
    payload = {
        "count": n,
        "alone_per_s": stats["alone"].as_dict(),
        "watched_per_s": stats["sse"].as_dict(),
        "watched_and_metrics_per_s": stats["metrics"].as_dict(),
        "ratio": ratio,
        "ratio_with_metrics": ratios["metrics"].median,
        "cpu_us_per_instance": {m: cpu[m].as_dict() for m in MODES},
        "events_received": streamed,
        "target": TARGET,
        "pass": ratio >= TARGET,
    }
    write_result("sse_overhead", payload, write=not args.no_write)
    emit_json("sse_overhead", payload)


if __name__ == "__main__":
    main()
