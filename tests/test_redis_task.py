"""RedisTask against the real Redis on 127.0.0.1:6379 (TICKWORK_REDIS_URL): XADD with the
instance id in a field, PUBLISH, params checked when scheduled, pipelined batches, a
server that is down or a connection that is killed (retryable), an error answer (final)."""

from __future__ import annotations

import gc
import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import trio

import tickwork
from tests.support.handoff_support import require_service, wait_all, wait_ended
from tickwork.tasks import RedisTask
from tickwork.tasks.redis import RedisSend

URL = os.environ.get("TICKWORK_REDIS_URL", "redis://127.0.0.1:6379/0")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class FastRetries(RedisTask):
    backoff_base = timedelta(milliseconds=5)
    backoff_cap = timedelta(milliseconds=5)


@pytest.fixture
async def redis():
    import coredis

    require_service("Redis", URL, 6379)
    client = coredis.Redis.from_url(URL, decode_responses=True)
    async with client:
        keys: list[str] = []
        yield client, keys
        if keys:
            await client.delete(keys)


def _key(keys):
    key = f"tickwork-test-{uuid.uuid4().hex[:10]}"
    keys.append(key)
    return key


BAD = [
    ({}, "exactly one of 'stream'"),
    ({"stream": "a", "channel": "b"}, "exactly one of 'stream'"),
    ({"stream": ""}, "'stream' must be"),
    ({"stream": "has space"}, "'stream' must be"),
    ({"stream": "x" * 257}, "'stream' must be"),
    ({"stream": 5}, "'stream' must be"),
    ({"channel": "bad\nname"}, "'channel' must be"),
    ({"stream": "s", "fields": {"tickwork-instance": "1"}}, "set by tickwork"),
    ({"stream": "s", "fields": {"a": [1]}}, "text, bytes or a number"),
    ({"stream": "s", "fields": ["a"]}, "map of names"),
    ({"stream": "s", "maxlen": 0}, "'maxlen'"),
    ({"stream": "s", "message": "m"}, "goes with 'channel'"),
    ({"channel": "c", "fields": {}}, "go with 'stream'"),
    ({"channel": "c", "message": 3}, "'message'"),
    ({"stream": "s", "url": "redis://elsewhere"}, "unknown keys"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_params_are_refused(params, message):
    with pytest.raises(tickwork.InvalidArgument, match=re.escape(message)):
        RedisSend.from_params(tickwork.pack(params))


async def test_a_run_outside_the_lifespan_is_refused():
    task = RedisTask(URL)
    message = "RedisTask runs inside open_scheduler"
    with pytest.raises(tickwork.TickworkError, match=message):
        await task.run(tickwork.pack({"stream": "s"}))
    async with task.lifespan():  # connects only for a run
        pass
    with pytest.raises(tickwork.TickworkError, match=message):
        await task.run(tickwork.pack({"stream": "s"}))


async def test_schedule_and_add_schedule_refuse_bad_params():
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[RedisTask()]) as scheduler:
        with pytest.raises(tickwork.InvalidArgument, match="'stream' must be"):
            await scheduler.schedule("redis", at=NOW, params={"stream": "a b"})
        with pytest.raises(tickwork.InvalidArgument, match="'channel' must be"):
            await scheduler.add_schedule(
                "redis", tickwork.Interval(timedelta(minutes=5)), params={"channel": ""}
            )
        assert await scheduler.count() == 0


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


async def test_xadd_carries_fields_and_the_instance_id(redis):
    client, keys = redis
    stream = _key(keys)
    params = [{"stream": stream, "fields": {"job": "report", "n": 7, "raw": b"\x00\x01"}}]
    params += [{"stream": stream, "fields": {"job": f"j{i}"}, "maxlen": 1000} for i in range(200)]
    insts, history = await _run(RedisTask(URL), params)
    assert all(i.state is tickwork.State.SUCCEEDED for i in insts), insts[0].error
    entries = await client.xrange(stream)
    assert len(entries) == 201
    by_instance = {e.field_values["tickwork-instance"]: e for e in entries}
    first = by_instance[str(insts[0].id)]
    assert first.field_values["job"] == "report"
    assert first.field_values["n"] == "7"
    assert first.field_values["tickwork-attempt"] == "1"
    assert set(by_instance) == {str(i.id) for i in insts}
    assert first.identifier in (history[0][0].result or "")


async def test_publish_reaches_a_subscriber(redis):
    import coredis

    _, keys = redis
    channel = _key(keys)
    sub_client = coredis.Redis.from_url(URL, decode_responses=True)
    async with sub_client, sub_client.pubsub(channels=[channel]) as pubsub:
        insts, history = await _run(RedisTask(URL), [{"channel": channel, "message": "hi"}])
        assert insts[0].state is tickwork.State.SUCCEEDED, insts[0].error
        with trio.fail_after(10):
            async for message in pubsub:
                if message["type"] == "message":
                    assert message["data"] == "hi"
                    break
    assert "'receivers': 1" in (history[0][0].result or "")


async def test_an_error_answer_is_final(redis):
    client, keys = redis
    key = _key(keys)
    await client.set(key, "not a stream")
    insts, _ = await _run(FastRetries(URL), [{"stream": key}], max_attempts=3)
    assert insts[0].state is tickwork.State.FAILED
    assert insts[0].attempts == 1
    assert "refused XADD" in (insts[0].error or "")


async def test_a_server_that_is_down_is_retryable():
    insts, _ = await _run(FastRetries("redis://127.0.0.1:1/0"), [{"stream": "s"}], max_attempts=2)
    assert insts[0].state is tickwork.State.FAILED
    assert insts[0].attempts == 2
    assert "127.0.0.1:1" in (insts[0].error or "")
    gc.collect()  # a stream the task leaked would warn now (warnings are errors)


async def test_a_killed_connection_reconnects(redis):
    client, keys = redis
    stream = _key(keys)
    task = FastRetries(URL)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
        with scheduler.subscribe() as sub:
            for round_ in range(2):
                iid = await scheduler.schedule(
                    "redis", at=datetime.now(UTC), params={"stream": stream}, max_attempts=3
                )
                inst = await wait_ended(scheduler, sub, iid)
                assert inst.state is tickwork.State.SUCCEEDED, (round_, inst.error)
                # every other client (the task's) is disconnected by the server
                await client.client_kill(skipme=True)
    assert await client.xlen(stream) == 2
