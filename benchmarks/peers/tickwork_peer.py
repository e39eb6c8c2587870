"""tickwork behind the peer protocol of ``_peer_common.py`` (a PostgresStore node).

Configured as docs/clustering.md recommends for a cluster: the defaults of a cluster
store (lease 10 s, claim horizon 2 s, record linger 50 ms); ``max_concurrency`` 1,000.
Jobs are inserted with the store's ``insert`` (what ``tickwork add`` and a client do).
"""

from __future__ import annotations

import signal
import time

import trio
from _peer_common import Lateness, batches, parse, ready, ticks

import tickwork
from tickwork.model import NewRow

SCHEMA = "tickwork"


def _store(dsn: str) -> tickwork.PostgresStore:
    return tickwork.PostgresStore(dsn, schema=SCHEMA)


async def setup(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    store = _store(dsn)
    await store.open()  # creates the schema
    await store.aclose()


def _us(t: float) -> int:
    return int(t * 1_000_000)


async def enqueue(dsn: str, n: int, due: float) -> None:
    store = _store(dsn)
    await store.open()
    try:
        for size in batches(n):
            await store.insert([NewRow("noop", _us(due), b"")] * size, _us(time.time()))
    finally:
        await store.aclose()


async def produce(dsn: str, rate: int, seconds: float, lead: float) -> None:
    store = _store(dsn)
    await store.open()
    try:
        for at, count in ticks(rate, seconds):
            await trio.sleep(max(0.0, at - time.time()))
            if count:
                now = time.time()
                await store.insert([NewRow("noop", _us(now + lead), b"")] * count, _us(now))
    finally:
        await store.aclose()


async def work(dsn: str, out: str, node: str, concurrency: int) -> None:
    lateness = Lateness()

    class Noop(tickwork.Task):
        name = "noop"

        async def run(self, params: bytes) -> None:
            del params
            lateness.ran(tickwork.current_instance().run_at_us / 1_000_000)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with tickwork.open_scheduler(
            _store(dsn), tasks=[Noop()], node_id=node, max_concurrency=concurrency
        ):
            ready()
            async for _ in signals:
                break
    lateness.dump(out)


def main() -> None:
    args = parse()
    if args.cmd == "setup":
        trio.run(setup, args.dsn)
    elif args.cmd == "enqueue":
        trio.run(enqueue, args.dsn, args.n, args.due)
    elif args.cmd == "produce":
        trio.run(produce, args.dsn, args.rate, args.seconds, args.lead)
    else:
        trio.run(work, args.dsn, args.out, args.node, args.concurrency)


if __name__ == "__main__":
    main()
