"""The worker side of a Redis hand-off: a consumer group reading the stream tickwork
appends to, dropping entries of an instance it already handled, acknowledging each.

Run it: python examples/redis_consumer.py  (Redis at TICKWORK_REDIS_URL, default
redis://127.0.0.1:6379/0). It runs a tickwork node that hands one job to the stream,
reads it as a worker would, prints it and removes its stream.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import coredis
import trio

import tickwork
from tickwork.tasks import RedisTask

URL = os.environ.get("TICKWORK_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAM = f"reports-{uuid.uuid4().hex[:8]}"
GROUP = "workers"


async def consume(redis: coredis.Redis[str], handled: set[str]) -> dict[str, str]:
    """Read entries as one worker of the group until one is new; return it."""
    while True:
        reply = await redis.xreadgroup(
            GROUP, "worker-1", streams={STREAM: ">"}, count=10, block=5000
        )
        for entry in (reply or {}).get(STREAM, ()):
            fields = dict(entry.field_values)
            await redis.xack(STREAM, GROUP, [entry.identifier])
            instance = fields["tickwork-instance"]  # one instance, one job, even if sent twice
            if instance not in handled:
                handled.add(instance)
                return fields


async def main() -> None:
    redis = coredis.Redis.from_url(URL, decode_responses=True)
    async with redis:
        await redis.xgroup_create(STREAM, GROUP, identifier="$", mkstream=True)
        try:
            store = tickwork.MemoryStore()
            async with tickwork.open_scheduler(store, tasks=[RedisTask(URL)]) as scheduler:
                await scheduler.schedule(
                    "redis",
                    at=datetime.now(UTC),
                    params={"stream": STREAM, "fields": {"report": "daily", "day": "2030-01-01"}},
                    max_attempts=5,
                )
                with trio.fail_after(30):
                    job = await consume(redis, set())
            print(f"received {job['report']} {job['day']} (instance {job['tickwork-instance']})")
        finally:
            await redis.delete([STREAM])


if __name__ == "__main__":
    trio.run(main)
