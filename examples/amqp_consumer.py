"""The worker side of a RabbitMQ hand-off: a pika consumer of the durable queue tickwork
publishes to, dropping messages whose message_id (instance id and attempt) it already
handled, acknowledging each after its work.

Run it: python examples/amqp_consumer.py  (RabbitMQ at TICKWORK_AMQP_URL, default
amqp://guest:guest@127.0.0.1:5672/%2F). It declares a queue, runs a tickwork node that
hands one job to it, consumes it as a worker would, prints it and deletes the queue.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime

import pika
import trio

import tickwork
from tickwork.tasks import AmqpTask

URL = os.environ.get("TICKWORK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = f"reports-{uuid.uuid4().hex[:8]}"


async def hand_off() -> None:
    """The scheduler side (trio): one job for the queue."""
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[AmqpTask(URL)]) as s:
        with s.subscribe() as events:
            iid = await s.schedule(
                "amqp",
                at=datetime.now(UTC),
                params={"routing_key": QUEUE, "json": {"report": "daily", "day": "2030-01-01"}},
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


def work(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """The worker side: consume, handle once per message_id, acknowledge after the work."""
    handled: set[str] = set()
    for method, properties, body in channel.consume(QUEUE, inactivity_timeout=10):
        if method is None:
            raise SystemExit("no message within 10 s")
        if properties.message_id not in handled:
            handled.add(properties.message_id)
            job = json.loads(body)
            print(f"received {job['report']} {job['day']} (message_id {properties.message_id})")
        channel.basic_ack(method.delivery_tag)
        break
    channel.cancel()


if __name__ == "__main__":
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    try:
        trio.run(hand_off)
        work(channel)
    finally:
        channel.queue_delete(QUEUE)
        connection.close()
