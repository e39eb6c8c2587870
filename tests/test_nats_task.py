"""NatsTask against the real NATS server with JetStream on 127.0.0.1:4222
(TICKWORK_NATS_URL): the stream's ack, Nats-Msg-Id as instance id + attempt (the duplicate
window drops a repeated run), params checked when scheduled, no stream (final), a server
that is down (retryable). Messages are read back with nats-py, an independent client."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import tickwork
from tests.support.handoff_support import wait_all
from tests.support.nats_support import (
    URL,
    create_stream,
    delete_stream,
    require_nats,
    stream_messages,
)
from tickwork.state import State
from tickwork.task import CURRENT_INSTANCE
from tickwork.tasks import HandoffRejected, HandoffRetryable, NatsTask
from tickwork.tasks.nats import NatsPublish

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class FastRetries(NatsTask):
    backoff_base = timedelta(milliseconds=5)
    backoff_cap = timedelta(milliseconds=5)


BAD = [
    ({}, "need 'subject'"),
    ({"subject": ""}, "'subject' must be"),
    ({"subject": "jobs.*"}, "'subject' must be"),
    ({"subject": "jobs.>"}, "'subject' must be"),
    ({"subject": "jobs..x"}, "'subject' must be"),
    ({"subject": "has space"}, "'subject' must be"),
    ({"subject": 3}, "'subject' must be"),
    ({"subject": "a" * 300}, "longer than 256"),
    ({"subject": "a", "data": "x", "json": 1}, "not both"),
    ({"subject": "a", "data": 5}, "'data'"),
    ({"subject": "a", "json": b"\x00"}, "JSON"),
    ({"subject": "a", "headers": {"Nats-Msg-Id": "x"}}, "set by tickwork"),
    ({"subject": "a", "headers": {"bad:name": "x"}}, "not a valid header"),
    ({"subject": "a", "headers": {"x": "a\r\nb"}}, "not a valid header"),
    ({"subject": "a", "timeout": -1}, "'timeout'"),
    ({"subject": "a", "url": "nats://elsewhere"}, "unknown keys"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_params_are_refused(params, message):
    with pytest.raises(tickwork.InvalidArgument, match=re.escape(message)):
        NatsPublish.from_params(tickwork.pack(params))


async def test_schedule_refuses_a_bad_subject():
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[NatsTask()]) as scheduler:
        with pytest.raises(tickwork.InvalidArgument, match="'subject' must be"):
            await scheduler.schedule("nats", at=NOW, params={"subject": "a b"})
        with pytest.raises(tickwork.InvalidArgument, match="'subject' must be"):
            await scheduler.add_schedule(
                "nats", tickwork.Cron("*/5 * * * *"), params={"subject": "x.*"}
            )
        assert await scheduler.count() == 0


@pytest.fixture
async def stream():
    require_nats()
    prefix = f"twtest{uuid.uuid4().hex[:8]}"
    name = await create_stream([f"{prefix}.>"])
    yield name, prefix
    await delete_stream(name)


async def _run(task, params_list, *, max_attempts=None):
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
        with scheduler.subscribe() as sub:
            at = datetime.now(UTC)
            news = [
                tickwork.NewInstance(task.name, at, p, max_attempts=max_attempts)
                for p in params_list
            ]
            ids = await scheduler.schedule_many(news)
            insts = await wait_all(scheduler, sub, ids)
        return insts, [await scheduler.history(i) for i in ids]


async def test_publish_is_acked_by_the_stream(stream):
    name, prefix = stream
    params = [{"subject": f"{prefix}.report", "json": {"n": 0}, "headers": {"X-Kind": "daily"}}]
    params += [{"subject": f"{prefix}.bulk", "data": f"m{i}"} for i in range(1, 100)]
    insts, history = await _run(NatsTask(URL), params)
    assert all(i.state is State.SUCCEEDED for i in insts), insts[0].error
    messages = await stream_messages(name, 100)
    by_id = {
        headers["Nats-Msg-Id"]: (subject, headers, data) for subject, headers, data in messages
    }
    assert set(by_id) == {f"{i.id}-1" for i in insts}
    subject, headers, data = by_id[f"{insts[0].id}-1"]
    assert subject == f"{prefix}.report"
    assert headers["X-Kind"] == "daily"
    assert data == b'{"n":0}'
    assert by_id[f"{insts[5].id}-1"][2] == b"m5"
    assert f"'stream': '{name}'" in (history[0][0].result or "")


async def test_a_repeated_run_is_dropped_by_the_duplicate_window(stream):
    _, prefix = stream
    task = NatsTask(URL)
    inst = tickwork.Instance(id=77, task="nats", run_at_us=0, params=b"", state=State.RUNNING)
    params = tickwork.pack({"subject": f"{prefix}.x", "data": "once"})
    async with task.lifespan():
        token = CURRENT_INSTANCE.set(inst)
        try:
            first = await task.run(params)
            again = await task.run(params)  # the node crashed before recording: same attempt
        finally:
            CURRENT_INSTANCE.reset(token)
        token = CURRENT_INSTANCE.set(
            tickwork.Instance(
                id=77, task="nats", run_at_us=0, params=b"", state=State.RUNNING, attempts=1
            )
        )
        try:
            retry = await task.run(params)  # a retry is a new attempt: stored again
        finally:
            CURRENT_INSTANCE.reset(token)
    assert first["duplicate"] is False
    assert again == {**first, "duplicate": True}
    assert retry["duplicate"] is False
    assert retry["seq"] == first["seq"] + 1


async def test_a_subject_no_stream_stores_is_final():
    require_nats()
    subject = f"nostream{uuid.uuid4().hex[:8]}.x"
    insts, _ = await _run(FastRetries(URL), [{"subject": subject}], max_attempts=3)
    assert insts[0].state is State.FAILED
    assert insts[0].attempts == 1
    assert "no stream stores subject" in (insts[0].error or "")


async def test_a_server_that_is_down_is_retryable():
    insts, _ = await _run(FastRetries("nats://127.0.0.1:1"), [{"subject": "a"}], max_attempts=2)
    assert insts[0].state is State.FAILED
    assert insts[0].attempts == 2
    assert "cannot connect to NATS at 127.0.0.1:1" in (insts[0].error or "")
    assert issubclass(HandoffRetryable, tickwork.TickworkError)
    assert not issubclass(HandoffRejected, HandoffRetryable)


async def test_run_outside_a_node_says_how_to_use_it():
    inst = tickwork.Instance(id=1, task="nats", run_at_us=0, params=b"", state=State.RUNNING)
    token = CURRENT_INSTANCE.set(inst)
    try:
        with pytest.raises(tickwork.TickworkError, match="lifespan"):
            await NatsTask().run(tickwork.pack({"subject": "a"}))
    finally:
        CURRENT_INSTANCE.reset(token)
