"""procrastinate behind the peer protocol of ``_peer_common.py``.

Configured for throughput as its docs advise for async tasks: one worker with
``concurrency`` coroutines (its howto on concurrency), LISTEN/NOTIFY on (the default),
a polling interval of 0.1 s as the fallback, ``delete_jobs="successful"`` (no growth of
the jobs table); jobs inserted with ``batch_defer_async`` (one statement a batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime

from _peer_common import Lateness, batches, parse, ready, ticks
from procrastinate import App, PsycopgConnector

lateness = Lateness()


def _app(dsn: str) -> App:
    return App(connector=PsycopgConnector(conninfo=dsn))


def _register(app: App) -> object:
    @app.task(name="noop")
    async def noop(due: float) -> None:
        lateness.ran(due)

    return noop


async def _defer(task: object, count: int, due: float) -> None:
    at = datetime.fromtimestamp(due, UTC)
    await task.configure(schedule_at=at).batch_defer_async(*[{"due": due}] * count)  # type: ignore[attr-defined]


async def setup(dsn: str) -> None:
    app = _app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue(dsn: str, n: int, due: float) -> None:
    app = _app(dsn)
    task = _register(app)
    async with app.open_async():
        for size in batches(n):
            await _defer(task, size, due)


async def produce(dsn: str, rate: int, seconds: float, lead: float) -> None:
    app = _app(dsn)
    task = _register(app)
    async with app.open_async():
        for at, count in ticks(rate, seconds):
            await asyncio.sleep(max(0.0, at - time.time()))
            if count:
                await _defer(task, count, time.time() + lead)


async def work(dsn: str, out: str, node: str, concurrency: int) -> None:
    app = _app(dsn)
    _register(app)
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=concurrency,
                name=node,
                fetch_job_polling_interval=0.1,
                delete_jobs="successful",
                install_signal_handlers=False,
                shutdown_graceful_timeout=10,
            )
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await asyncio.sleep(0.5)
        ready()
        await stop.wait()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
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
        asyncio.run(work(args.dsn, args.out, args.node, min(args.concurrency, 100)))


if __name__ == "__main__":
    main()
