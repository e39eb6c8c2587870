"""NATS JetStream clients under trio: nats-py through trio-asyncio against tickwork's own
small trio client of the NATS protocol (``tickwork.tasks._nats_client``).

Both publish to the same JetStream stream with a ``Nats-Msg-Id`` header and wait for the
stream's ack, as the nats task does:

1. latency: one publish at a time, N times (median and p99 of publish + ack);
2. throughput: N publishes from C concurrent trio tasks (hand-offs per second).

The figures decided which client the nats task uses (the reason is in pyproject.toml).
Needs NATS with JetStream at TICKWORK_NATS_URL (default nats://127.0.0.1:4222) and the
bench extra (nats-py, trio-asyncio).

    python benchmarks/nats_clients.py [--quick] [--repeat 3] [--n 20000] [--concurrency 500]
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import trio

from _common import Stat, base_parser, emit_json, percentile, print_table, write_result
from tickwork.tasks._nats_client import connect

URL = os.environ.get("TICKWORK_NATS_URL", "nats://127.0.0.1:4222")


async def _stream(name: str, subject: str, *, create: bool) -> None:
    import nats
    from nats.js.api import StreamConfig

    async def go() -> None:
        nc = await nats.connect(URL)
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(StreamConfig(name=name, subjects=[subject]))
            else:
                await js.delete_stream(name)
        finally:
            await nc.close()

    await trio.to_thread.run_sync(asyncio.run, go())


async def _drive(publish, n: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies of n sequential publishes, and the rate of n concurrent ones."""
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await publish(f"l{i}")
        lat.append(time.perf_counter() - t)
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await publish(f"t{i}")

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return sorted(lat), n / (time.perf_counter() - t0)


async def own_client(subject: str, n: int, concurrency: int) -> tuple[list[float], float]:
    async with trio.open_nursery() as nursery:
        conn = await connect(URL, nursery)

        async def publish(msg_id: str) -> None:
            reply = await conn.request(subject, b"x" * 64, {"Nats-Msg-Id": msg_id}, 10.0)
            assert b'"seq"' in reply.payload, reply

        result = await _drive(publish, n, concurrency)
        nursery.cancel_scope.cancel()
    return result


async def nats_py_trio_asyncio(subject: str, n: int, concurrency: int) -> tuple[list[float], float]:
    import nats
    import trio_asyncio

    async with trio_asyncio.open_loop():
        nc = await trio_asyncio.aio_as_trio(nats.connect)(URL)
        js = nc.jetstream()
        pub = trio_asyncio.aio_as_trio(js.publish)

        async def publish(msg_id: str) -> None:
            ack = await pub(subject, b"x" * 64, headers={"Nats-Msg-Id": msg_id})
            assert ack.seq

        try:
            return await _drive(publish, n, concurrency)
        finally:
            await trio_asyncio.aio_as_trio(nc.close)()


async def measure(n: int, concurrency: int) -> dict[str, tuple[list[float], float]]:
    out = {}
    for label, fn in (
        ("tickwork trio client", own_client),
        ("nats-py + trio-asyncio", nats_py_trio_asyncio),
    ):
        name = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
        subject = f"{name.lower()}.x"
        await _stream(name, subject, create=True)
        try:
            out[label] = await fn(subject, n, concurrency)
        finally:
            await _stream(name, subject, create=False)
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="publishes per measurement")
    parser.add_argument("--concurrency", type=int, default=500, help="concurrent publishers")
    args = parser.parse_args()
    n = 500 if args.quick else args.n
    runs: dict[str, list[tuple[list[float], float]]] = {}
    for _ in range(args.repeat):
        for label, result in trio.run(measure, n, args.concurrency).items():
            runs.setdefault(label, []).append(result)
    rows, payload = [], {}
    for label, results in runs.items():
        p50 = Stat.of(percentile(lat, 0.5) * 1e6 for lat, _ in results)
        p99 = Stat.of(percentile(lat, 0.99) * 1e6 for lat, _ in results)
        rate = Stat.of(r for _, r in results)
        rows.append(
            [
                label,
                f"{p50.median:,.0f}",
                f"{p99.median:,.0f}",
                f"{rate.median:,.0f} ({rate.min:,.0f}-{rate.max:,.0f})",
            ]
        )
        payload[label] = {"p50_us": p50.median, "p99_us": p99.median, "rate": rate.median}
    own, other = payload["tickwork trio client"], payload["nats-py + trio-asyncio"]
    ratio = own["rate"] / other["rate"]
    print_table(
        f"NATS JetStream publish + ack under trio ({n:,} publishes, {args.concurrency} concurrent)",
        ["client", "latency p50 (µs)", "latency p99 (µs)", "hand-offs/s (min-max)"],
        rows,
        [
            (
                f"the trio client hands off {ratio:.1f}x as many per second as nats-py through "
                "trio-asyncio, in the same run"
            )
        ],
    )
    payload["throughput_ratio"] = ratio
    write_result("nats_clients", payload, write=not (args.no_write or args.quick))
    emit_json("nats_clients", payload)


if __name__ == "__main__":
    main()
