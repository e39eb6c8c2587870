"""oban (the Python port, ``oban`` on PyPI; Python >= 3.12) behind the peer protocol of
``_peer_common.py``.

Configured as its docs describe for a busy queue: a queue limit of ``concurrency``, a
psycopg pool of 10, the stager (which moves scheduled jobs to available) every 0.1 s
instead of its default 1 s; jobs inserted with ``enqueue_many`` (one query a batch).
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from typing import Any

from _peer_common import Lateness, batches, parse, ready, ticks
from oban import Job, Oban, schema, worker
from psycopg_pool import AsyncConnectionPool

lateness = Lateness()


@worker(queue="bench")
class Noop:
    async def process(self, job: Job) -> None:
        lateness.ran(float(job.args["due"]))


def _pool(dsn: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)


async def _enqueue(oban: Any, count: int, due: float) -> None:
    at = datetime.fromtimestamp(due, UTC)
    await oban.enqueue_many([Noop.new({"due": due}, scheduled_at=at) for _ in range(count)])


async def setup(dsn: str) -> None:
    async with _pool(dsn) as pool:
        await schema.install(pool)


async def enqueue(dsn: str, n: int, due: float) -> None:
    async with _pool(dsn) as pool, Oban(pool=pool) as oban:
        for size in batches(n):
            await _enqueue(oban, size, due)


async def produce(dsn: str, rate: int, seconds: float, lead: float) -> None:
    async with _pool(dsn) as pool, Oban(pool=pool) as oban:
        for at, count in ticks(rate, seconds):
            await asyncio.sleep(max(0.0, at - time.time()))
            if count:
                await _enqueue(oban, count, time.time() + lead)


async def work(dsn: str, out: str, node: str, concurrency: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        _pool(dsn) as pool,
        Oban(pool=pool, node=node, queues={"bench": concurrency}, stager={"interval": 0.1}),
    ):
        await asyncio.sleep(0.5)
        ready()
        await stop.wait()
    lateness.dump(out)


def main() -> None:
    args = parse()
    if args.cmd == "setup":
        asyncio.run(setup(args.dsn))
    elif args.cmd == "enqueue":
        asyncio.run(enqueue(args.dsn, args.n, args.due))
    elif args.cmd == "produce":
        asyncio.run(produce(args.dsn, args.rate, args.seconds, args.lead))
    else:
        asyncio.run(work(args.dsn, args.out, args.node, args.concurrency))


if __name__ == "__main__":
    main()
