"""The worker side of a NATS hand-off: a JetStream pull consumer (nats-py, on asyncio, as
a worker process would run it) fetching what a tickwork node published.

Run it: python examples/nats_consumer.py  (NATS with JetStream at TICKWORK_NATS_URL,
default nats://127.0.0.1:4222). It creates a stream, runs a node that hands one job to
it, fetches and acknowledges the message as a worker would, prints it, and deletes the
stream. The stream's duplicate window drops a hand-off repeated with the same
Nats-Msg-Id (a run repeated after the node crashed).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime

import nats
import trio
from nats.js.api import StreamConfig

import tickwork
from tickwork.tasks import NatsTask

URL = os.environ.get("TICKWORK_NATS_URL", "nats://127.0.0.1:4222")
STREAM = f"REPORTS_{uuid.uuid4().hex[:8].upper()}"
SUBJECT = f"{STREAM.lower()}.daily"


async def hand_off() -> None:
    """The scheduler side (trio): one job for the stream."""
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[NatsTask(URL)]) as s:
        with s.subscribe() as events:
            iid = await s.schedule(
                "nats",
                at=datetime.now(UTC),
                params={"subject": SUBJECT, "json": {"report": "daily", "day": "2030-01-01"}},
                max_attempts=5,
            )
            with trio.fail_after(30):
                async for event in events:
                    if isinstance(event, tickwork.TransitionEvent) and event.to_state in (
                        tickwork.State.SUCCEEDED,
                        tickwork.State.FAILED,
                    ):
                        break
        print(f"instance {iid}: {(await s.get(iid)).state.name}")


async def set_up() -> None:
    nc = await nats.connect(URL)
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=[f"{STREAM.lower()}.>"]))
    await nc.close()


async def work() -> None:
    """The worker side (asyncio): fetch, handle once per Nats-Msg-Id, acknowledge."""
    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(SUBJECT, durable="workers")
        (msg,) = await sub.fetch(1, timeout=10)
        job = json.loads(msg.data)
        print(f"received {job['report']} {job['day']} (Nats-Msg-Id {msg.headers['Nats-Msg-Id']})")
        await msg.ack()
        await js.delete_stream(STREAM)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(set_up())
    trio.run(hand_off)
    asyncio.run(work())
