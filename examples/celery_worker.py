"""The worker side of a Celery hand-off: a Celery app whose task tickwork sends by name
(tickwork as a durable, cluster-safe Celery beat).

Run it: python examples/celery_worker.py  (broker TICKWORK_CELERY_BROKER, default the
local RabbitMQ amqp://guest:guest@127.0.0.1:5672//; a redis:// URL works too). It starts
a Celery worker process of this app, runs a tickwork node that sends it one task, waits
until the worker ran it and stops the worker. In production the worker is your own
`celery -A yourapp worker` and the node is `tickwork run` with the same broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import trio
from celery import Celery

import tickwork
from tickwork.tasks import CeleryTask

BROKER = os.environ.get("TICKWORK_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
app = Celery("reports", broker=BROKER)
app.conf.worker_redirect_stdouts = False  # the task's print goes to the worker's stdout


@app.task(name="reports.daily", bind=True)
def daily(self: object, day: str) -> None:
    # The task id is tickwork-<instance id>, the same for every attempt of the hand-off:
    # a worker that keeps the ids it ran (or checks a result backend) runs it once.
    print(f"received reports.daily {day} (task id {self.request.id})", flush=True)  # type: ignore[attr-defined]


async def hand_off(queue: str) -> None:
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[CeleryTask(BROKER)]) as s:
        iid = await s.schedule(
            "celery",
            at=datetime.now(UTC),
            params={"task": "reports.daily", "kwargs": {"day": "2030-01-01"}, "queue": queue},
            max_attempts=5,
        )
        with s.subscribe() as events, trio.fail_after(30):
            while (await s.get(iid)).state is not tickwork.State.SUCCEEDED:
                await events.receive()
        print(f"instance {iid}: SUCCEEDED")


def main() -> None:
    queue = f"reports-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "--pool=solo",
         "-Q", queue, "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
        cwd=Path(__file__).parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        trio.run(hand_off, queue)
        assert worker.stdout is not None  # noqa: S101 - opened with PIPE
        for line in worker.stdout:  # until the worker ran it (the test bounds the time)
            if line.startswith("received"):
                print(line.strip())
                break
    finally:
        worker.kill()
        worker.wait()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


if __name__ == "__main__":
    main()
