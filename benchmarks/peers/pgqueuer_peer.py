"""pgqueuer behind the peer protocol of ``_peer_common.py``.

Configured for throughput as its docs advise: asyncpg driver, uvloop, a dequeue batch of
500 (``QueueManager.run(batch_size=...)``), no per-entrypoint concurrency limit; jobs
inserted with the list form of ``Queries.enqueue`` (one statement a batch).
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta

import asyncpg
import uvloop
from _peer_common import Lateness, batches, parse, ready, ticks
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

BATCH_SIZE = 500


async def _queries(dsn: str) -> tuple[asyncpg.Connection, Queries]:
    conn = await asyncpg.connect(dsn)
    return conn, Queries(AsyncpgDriver(conn))


async def _enqueue(q: Queries, count: int, due: float) -> None:
    after = timedelta(seconds=max(0.0, due - time.time()))
    payload = repr(due).encode()
    await q.enqueue(["noop"] * count, [payload] * count, [0] * count, [after] * count)


async def setup(dsn: str) -> None:
    conn, q = await _queries(dsn)
    await q.install()
    await conn.close()


async def enqueue(dsn: str, n: int, due: float) -> None:
    conn, q = await _queries(dsn)
    for size in batches(n):
        await _enqueue(q, size, due)
    await conn.close()


async def produce(dsn: str, rate: int, seconds: float, lead: float) -> None:
    conn, q = await _queries(dsn)
    for at, count in ticks(rate, seconds):
        await asyncio.sleep(max(0.0, at - time.time()))
        if count:
            await _enqueue(q, count, time.time() + lead)
    await conn.close()


async def work(dsn: str, out: str, concurrency: int) -> None:
    lateness = Lateness()
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        lateness.ran(float((job.payload or b"0").decode()))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    loop.call_later(0.5, ready)  # run() has verified the tables and listens by then
    await pgq.run(batch_size=BATCH_SIZE, max_concurrent_tasks=max(concurrency, 2 * BATCH_SIZE))
    await conn.close()
    lateness.dump(out)


def main() -> None:
    args = parse()
    uvloop.install()
    if args.cmd == "setup":
        asyncio.run(setup(args.dsn))
    elif args.cmd == "enqueue":
        asyncio.run(enqueue(args.dsn, args.n, args.due))
    elif args.cmd == "produce":
        asyncio.run(produce(args.dsn, args.rate, args.seconds, args.lead))
    else:
        asyncio.run(work(args.dsn, args.out, args.concurrency))


if __name__ == "__main__":
    main()
