"""chancy behind the peer protocol of ``_peer_common.py``.

Configured for throughput as its docs advise for I/O-bound async jobs: the queue runs
on the ``AsyncExecutor`` (jobs as coroutines in the worker's event loop) with
``concurrency`` jobs at once, polling every 1 s (the shortest interval it accepts) with
``eager_polling`` and NOTIFY wake-ups on (the default), logging at WARNING (it logs each
job at INFO); jobs pushed with ``push_many`` (one transaction a batch).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, datetime

from _peer_common import INSERT_BATCH, Lateness, batches, parse, ready, ticks
from chancy import Chancy, Queue, Worker, job

lateness = Lateness()
#: Chancy logs every job at INFO by default; a production worker logs warnings.
quiet = logging.getLogger("chancy.bench")
quiet.setLevel(logging.WARNING)


@job(queue="bench")
async def noop(due: float) -> None:
    lateness.ran(due)


def _jobs(count: int, due: float) -> list[object]:
    one = noop.job.with_kwargs(due=due).with_scheduled_at(datetime.fromtimestamp(due, UTC))
    return [one] * count


async def _push(chancy: Chancy, count: int, due: float) -> None:
    async for _ in chancy.push_many(_jobs(count, due), batch_size=INSERT_BATCH):  # type: ignore[arg-type]
        pass


async def setup(dsn: str, concurrency: int) -> None:
    async with Chancy(dsn, log=quiet) as chancy:
        await chancy.migrate()
        await chancy.declare(
            Queue(
                "bench",
                concurrency=concurrency,
                executor="chancy.executors.asyncex.AsyncExecutor",
                polling_interval=1,
                eager_polling=True,
            ),
            upsert=True,
        )


async def enqueue(dsn: str, n: int, due: float) -> None:
    async with Chancy(dsn, log=quiet) as chancy:
        for size in batches(n):
            await _push(chancy, size, due)


async def produce(dsn: str, rate: int, seconds: float, lead: float) -> None:
    async with Chancy(dsn, log=quiet) as chancy:
        for at, count in ticks(rate, seconds):
            await asyncio.sleep(max(0.0, at - time.time()))
            if count:
                await _push(chancy, count, time.time() + lead)


async def work(dsn: str, out: str, node: str) -> None:
    async with Chancy(dsn, log=quiet) as chancy:
        worker = Worker(chancy, worker_id=node, register_signal_handlers=False)
        await worker.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await asyncio.sleep(0.5)
        ready()
        await stop.wait()
        await worker.stop(timeout=10)
    lateness.dump(out)


def main() -> None:
    args = parse()
    if args.cmd == "setup":
        asyncio.run(setup(args.dsn, 1_000))
    elif args.cmd == "enqueue":
        asyncio.run(enqueue(args.dsn, args.n, args.due))
    elif args.cmd == "produce":
        asyncio.run(produce(args.dsn, args.rate, args.seconds, args.lead))
    else:
        asyncio.run(work(args.dsn, args.out, args.node))


if __name__ == "__main__":
    main()
