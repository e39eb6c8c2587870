"""CeleryTask against a real Celery worker process on RabbitMQ and on Redis: the named
task runs with its args and kwargs, its task id is tickwork-<instance id>; params checked
when scheduled; a broker that is down is retryable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

import tickwork
from tests.support.handoff_support import Receiver, require_service, wait_ended
from tickwork.state import State
from tickwork.tasks import CeleryTask
from tickwork.tasks.celery import CelerySend

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2030, 1, 1, tzinfo=UTC)
BROKERS = {
    "amqp": (os.environ.get("TICKWORK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"), 5672),
    "redis": (os.environ.get("TICKWORK_REDIS_URL", "redis://127.0.0.1:6379/0"), 6379),
}

BAD = [
    ({}, "need 'task'"),
    ({"task": "not a name"}, "'task' must be"),
    ({"task": "a..b"}, "'task' must be"),
    ({"task": "1abc"}, "'task' must be"),
    ({"task": "a" * 300}, "longer than 255"),
    ({"task": "a.b", "args": {"x": 1}}, "'args' must be a list"),
    ({"task": "a.b", "kwargs": [1]}, "'kwargs' must be a map"),
    ({"task": "a.b", "args": [b"\x00"]}, "JSON"),
    ({"task": "a.b", "queue": "bad queue"}, "'queue' must be"),
    ({"task": "a.b", "routing_key": ""}, "'routing_key' must be"),
    ({"task": "a.b", "broker": "redis://elsewhere"}, "unknown keys"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_params_are_refused(params, message):
    with pytest.raises(tickwork.InvalidArgument, match=re.escape(message)):
        CelerySend.from_params(tickwork.pack(params))


async def test_schedule_refuses_a_bad_task_name():
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[CeleryTask()]) as scheduler:
        with pytest.raises(tickwork.InvalidArgument, match="'task' must be"):
            await scheduler.schedule("celery", at=NOW, params={"task": "rm -rf"})
        assert await scheduler.count() == 0


def _forget_queue(kind: str, url: str, queue: str) -> None:
    if kind == "amqp":
        import pika

        pika_url = url[:-2] + "/%2F" if url.endswith("//") else url  # pika names the vhost
        connection = pika.BlockingConnection(pika.URLParameters(pika_url))
        try:
            connection.channel().queue_delete(queue)
        finally:
            connection.close()
    else:
        import redis

        client = redis.Redis.from_url(url)
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()


@pytest.fixture(scope="module", params=sorted(BROKERS))
def worker(request):
    """A Celery worker process (solo pool) on one broker, consuming a queue of its own."""
    kind = request.param
    url, port = BROKERS[kind]
    require_service({"amqp": "RabbitMQ", "redis": "Redis"}[kind], url, port)
    queue = f"tickwork-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.support.celery_app", "worker", "--pool=solo",
         "--concurrency=1", "-Q", queue, "--loglevel=WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT,
        env={**os.environ, "TICKWORK_TEST_CELERY_BROKER": url, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield kind, url, queue
    finally:
        # Its tasks have run (each test waited for its report). Even a cold shutdown
        # (SIGQUIT) of a worker on RabbitMQ takes 7 s, so it is killed.
        proc.kill()
        proc.wait()
        _forget_queue(kind, url, queue)


async def test_the_worker_runs_the_named_task_with_the_instance_id(worker):
    kind, url, queue = worker
    with Receiver() as receiver:
        task = CeleryTask(url)
        async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
            with scheduler.subscribe() as sub:
                params = {
                    "task": "tickwork_test.record",
                    "args": [1, "two"],
                    "kwargs": {"report_to": receiver.url, "broker": kind},
                    "queue": queue,
                }
                iid = await scheduler.schedule("celery", at=datetime.now(UTC), params=params)
                inst = await wait_ended(scheduler, sub, iid)
            assert inst.state is State.SUCCEEDED, inst.error
            (attempt,) = await scheduler.history(iid)
            assert f"tickwork-{iid}" in (attempt.result or "")
        # the worker process ran it: it reported back (or the test fails after 60 s)
        arrived = await trio.to_thread.run_sync(receiver.arrived.wait, 60)
    assert arrived, "the Celery worker did not run the task within 60 s"
    (report,) = receiver.received
    assert json.loads(report.body) == {
        "id": f"tickwork-{iid}",
        "args": [1, "two"],
        "kwargs": {"broker": kind},
    }


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:1//", "redis://127.0.0.1:1/0"])
async def test_a_broker_that_is_down_is_retryable(url):
    task = CeleryTask(url)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
        with scheduler.subscribe() as sub:
            iid = await scheduler.schedule("celery", at=datetime.now(UTC), params={"task": "a.b"})
            inst = await wait_ended(scheduler, sub, iid, seconds=60)
        (attempt,) = await scheduler.history(iid)
    assert inst.state is State.FAILED
    assert attempt.error_type == "HandoffRetryable"
    assert "celery broker 127.0.0.1:1" in (inst.error or "")


def _broker_sockets(port: int) -> set[tuple[str, int]]:
    """This process's open TCP connections to the broker's port (local addresses)."""
    import psutil

    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


async def test_the_lifespan_closes_its_broker_connection_and_can_open_again(worker):
    """Leaving the lifespan closes the task's broker connection, and a second lifespan
    (a node started again in the same process) sends again: the task does not close
    kombu's process-wide producer pool, which Celery's default producers come from."""
    from tickwork.task import CURRENT_INSTANCE

    kind, url, queue = worker
    port = BROKERS[kind][1]
    before = _broker_sockets(port)
    params = {"task": "tickwork_test.record", "kwargs": {"report_to": "http://127.0.0.1:9/"}}
    packed = tickwork.pack({**params, "queue": f"{queue}-unused"})
    for iid in (9, 10):
        task = CeleryTask(url)
        inst = tickwork.Instance(
            id=iid, task="celery", run_at_us=0, params=b"", state=State.RUNNING
        )
        async with task.lifespan():
            token = CURRENT_INSTANCE.set(inst)
            try:
                result = await task.run(packed)
            finally:
                CURRENT_INSTANCE.reset(token)
            assert _broker_sockets(port) - before, "the send used no connection of its own"
        assert result["celery_task_id"] == f"tickwork-{iid}"
        assert _broker_sockets(port) - before == set()
    _forget_queue(kind, url, f"{queue}-unused")
