"""AmqpTask against the real RabbitMQ on 127.0.0.1:5672 (TICKWORK_AMQP_URL, guest/guest):
persistent messages confirmed by the broker, message_id = instance id + attempt, params
checked when scheduled, unroutable messages and missing exchanges (final), a broker that
is down (retryable)."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import trio

import tickwork
from tests.support.handoff_support import require_service, wait_all
from tickwork.state import State
from tickwork.tasks import AmqpTask
from tickwork.tasks.amqp import AmqpPublish

URL = os.environ.get("TICKWORK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class FastRetries(AmqpTask):
    backoff_base = timedelta(milliseconds=5)
    backoff_cap = timedelta(milliseconds=5)


BAD = [
    ({}, "need 'routing_key'"),
    ({"exchange": "", "routing_key": ""}, "must name a queue"),
    ({"exchange": "has space", "routing_key": "k"}, "'exchange' must be"),
    ({"exchange": "x" * 256, "routing_key": "k"}, "'exchange' must be"),
    ({"exchange": 5, "routing_key": "k"}, "'exchange' must be"),
    ({"routing_key": "bad\nkey"}, "'routing_key' must be"),
    ({"routing_key": "é" * 200}, "longer than 255 bytes"),
    ({"routing_key": "q", "body": "b", "json": 1}, "not both"),
    ({"routing_key": "q", "body": 1}, "'body'"),
    ({"routing_key": "q", "headers": {"a": 1}}, "map of strings"),
    ({"routing_key": "q", "content_type": "a b"}, "'content_type'"),
    ({"routing_key": "q", "url": "amqp://elsewhere"}, "unknown keys"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_params_are_refused(params, message):
    with pytest.raises(tickwork.InvalidArgument, match=re.escape(message)):
        AmqpPublish.from_params(tickwork.pack(params))


async def test_a_run_outside_the_lifespan_is_refused():
    task = AmqpTask(URL)
    message = "AmqpTask runs inside open_scheduler"
    with pytest.raises(tickwork.TickworkError, match=message):
        await task.run(tickwork.pack({"routing_key": "q"}))
    async with task.lifespan():  # connects only for a run
        pass
    with pytest.raises(tickwork.TickworkError, match=message):
        await task.run(tickwork.pack({"routing_key": "q"}))


async def test_schedule_refuses_a_bad_queue_name():
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[AmqpTask()]) as scheduler:
        with pytest.raises(tickwork.InvalidArgument, match="'routing_key' must be"):
            await scheduler.schedule("amqp", at=NOW, params={"routing_key": "a\tb"})
        assert await scheduler.count() == 0


def _broker(fn):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        return fn(connection.channel())
    finally:
        connection.close()


@pytest.fixture
async def queue():
    require_service("RabbitMQ", URL, 5672)
    name = f"tickwork-test-{uuid.uuid4().hex[:10]}"
    await trio.to_thread.run_sync(_broker, lambda ch: ch.queue_declare(name, durable=True))
    yield name
    await trio.to_thread.run_sync(_broker, lambda ch: ch.queue_delete(name))


def _drain(name):
    def get_all(channel):
        out = []
        while True:
            method, props, body = channel.basic_get(name, auto_ack=True)
            if method is None:
                return out
            out.append((props, body))

    return _broker(get_all)


async def _run(task, params_list, *, max_attempts=None):
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
        with scheduler.subscribe() as sub:
            at = datetime.now(UTC)
            ids = await scheduler.schedule_many(
                [
                    tickwork.NewInstance(task.name, at, p, max_attempts=max_attempts)
                    for p in params_list
                ]
            )
            insts = await wait_all(scheduler, sub, ids)
        return insts, [await scheduler.history(i) for i in ids]


async def test_messages_are_persistent_confirmed_and_carry_the_instance(queue):
    params = [{"routing_key": queue, "json": {"n": 0}, "headers": {"kind": "daily"}}]
    params += [{"routing_key": queue, "body": f"m{i}"} for i in range(1, 60)]
    insts, history = await _run(AmqpTask(URL), params)
    assert all(i.state is State.SUCCEEDED for i in insts), insts[0].error
    got = await trio.to_thread.run_sync(_drain, queue)
    by_id = {props.message_id: (props, body) for props, body in got}
    assert set(by_id) == {f"{i.id}-1" for i in insts}
    props, body = by_id[f"{insts[0].id}-1"]
    assert body == b'{"n":0}'
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.headers == {"kind": "daily"}
    assert by_id[f"{insts[7].id}-1"][1] == b"m7"
    assert "'confirmed': True" in (history[0][0].result or "")


async def test_unroutable_and_missing_exchange_are_final_and_the_next_one_goes(queue):
    missing = f"no-such-exchange-{uuid.uuid4().hex[:6]}"
    params = [
        {"exchange": "amq.direct", "routing_key": f"nobody-{uuid.uuid4().hex[:6]}"},
        {"exchange": missing, "routing_key": "k"},
    ]
    insts, _ = await _run(FastRetries(URL), params, max_attempts=3)
    assert [i.state for i in insts] == [State.FAILED, State.FAILED]
    assert [i.attempts for i in insts] == [1, 1]
    assert "no queue took" in (insts[0].error or "")
    assert "NOT_FOUND" in (insts[1].error or "")
    after, _ = await _run(AmqpTask(URL), [{"exchange": missing, "routing_key": "k"},
                                          {"routing_key": queue, "body": "after"}])  # fmt: skip
    assert [i.state for i in after] == [State.FAILED, State.SUCCEEDED]
    assert [body for _, body in await trio.to_thread.run_sync(_drain, queue)] == [b"after"]


async def test_a_broker_that_is_down_is_retryable():
    insts, _ = await _run(
        FastRetries("amqp://guest:guest@127.0.0.1:1/%2F"), [{"routing_key": "q"}], max_attempts=2
    )
    assert insts[0].state is State.FAILED
    assert insts[0].attempts == 2
    assert "amqp 127.0.0.1:1" in (insts[0].error or "")


async def test_confirms_are_awaited_together_and_each_run_waits_for_its_own(queue, monkeypatch):
    """A burst of due runs is published back to back (many unconfirmed at once); every run
    succeeds only once its own message is confirmed, and each message arrives once."""
    from tickwork.tasks import _amqp_confirms

    in_flight: list[int] = []
    send = _amqp_confirms.ConfirmingPublisher._send

    def counting(self, job, index):
        send(self, job, index)
        in_flight.append(len(self._pending))

    monkeypatch.setattr(_amqp_confirms.ConfirmingPublisher, "_send", counting)
    params = [{"routing_key": queue, "body": f"m{n}"} for n in range(200)]
    insts, _ = await _run(AmqpTask(URL), params)
    assert [i.state for i in insts] == [State.SUCCEEDED] * 200, insts[0].error
    assert max(in_flight) > 1  # published before the previous ones were confirmed
    received = await trio.to_thread.run_sync(_drain, queue)
    assert sorted(props.message_id for props, _ in received) == sorted(f"{i.id}-1" for i in insts)
