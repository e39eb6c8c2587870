"""NatsTask against the real NATS server with JetStream on 127.0.0.1:4222
(TICKWORK_NATS_URL): the stream's ack, Nats-Msg-Id as instance id + attempt (the duplicate
window drops a repeated run), params checked when scheduled, no stream (final), a server
that is down (retryable). Messages are read back with nats-py, an independent client."""

from __future__ import annotations

import re
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing

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
from tickwork.tasks._nats_client import NatsTooLarge, connect
from tickwork.tasks.nats import NatsPublish, _ack

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


# --- pipelined publishes: many in flight on one connection --------------------------------


def _server() -> tuple[str, int]:
    parts = urlsplit(URL)
    return parts.hostname or "127.0.0.1", parts.port or 4222


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return data


@asynccontextmanager
async def silent_subscriber(subject: str):
    """A core NATS subscriber of ``subject`` that never replies: a publish there gets
    neither a JetStream ack nor a no-responders status, so it can only time out."""
    stream = await trio.open_tcp_stream(*_server())
    try:
        await _read_until(stream, b"\r\n")  # INFO
        await stream.send_all(
            b'CONNECT {"verbose":false}\r\nSUB %s 1\r\nPING\r\n' % subject.encode()
        )
        await _read_until(stream, b"PONG\r\n")  # the subscription is registered
        yield
    finally:
        await stream.aclose()


class CuttingProxy:
    """Between the task and the real server. On its first connection it waits until the
    client sent ``publishes`` publishes (all in flight), passes on the first ``keep``
    acks and closes both sides; later connections are passed through."""

    def __init__(self, publishes: int, keep: int) -> None:
        self.publishes, self.keep = publishes, keep
        self.connections = 0
        self.sent = 0
        self.all_sent = trio.Event()
        self.cut = trio.Event()

    async def serve(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        return f"nats://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*_server())
        first = self.connections == 0
        self.connections += 1
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._up, client, server, first)
            if first:
                await self._down_cutting(server, client)
                nursery.cancel_scope.cancel()
            else:
                await _pump(server, client)

    async def _up(self, client: trio.SocketStream, server: trio.SocketStream, count: bool) -> None:
        tail = b""
        while chunk := await client.receive_some(65536):
            await server.send_all(chunk)
            if count:
                self.sent += (tail + chunk).count(b"HPUB ")
                tail = chunk[-4:]
                if self.sent >= self.publishes:
                    self.all_sent.set()

    async def _down_cutting(self, server: trio.SocketStream, client: trio.SocketStream) -> None:
        buf, acks = b"", 0
        while acks < self.keep:
            chunk = await server.receive_some(65536)
            assert chunk
            buf += chunk
            while (end := buf.find(b"\r\n")) >= 0:
                line = buf[:end]
                if line.startswith(b"MSG "):
                    stop = end + 2 + int(line.split()[-1]) + 2
                    if len(buf) < stop:
                        break
                    if acks < self.keep:
                        await self.all_sent.wait()
                        await client.send_all(buf[:stop])
                        acks += 1
                    buf = buf[stop:]
                else:
                    await client.send_all(buf[: end + 2])  # INFO, PONG, ...
                    buf = buf[end + 2 :]
        self.cut.set()


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    while chunk := await source.receive_some(65536):
        await sink.send_all(chunk)


async def test_one_failing_publish_does_not_fail_its_batch(stream):
    name, prefix = stream
    params = [{"subject": f"{prefix}.ok", "data": f"m{i}"} for i in range(30)]
    params.insert(10, {"subject": f"nostream{uuid.uuid4().hex[:8]}.x"})
    # the stream refuses this one with a JetStream error ack (expected another stream)
    params.insert(20, {"subject": f"{prefix}.ok", "headers": {"Nats-Expected-Stream": "OTHER"}})
    insts, _ = await _run(FastRetries(URL), params, max_attempts=3)
    assert insts[10].state is State.FAILED
    assert "no stream stores subject" in (insts[10].error or "")
    assert insts[20].state is State.FAILED
    assert "expected stream does not match" in (insts[20].error or "")
    assert insts[10].attempts == insts[20].attempts == 1  # final: not retried
    ok = [i for n, i in enumerate(insts) if n not in (10, 20)]
    assert all(i.state is State.SUCCEEDED and i.attempts == 1 for i in ok)
    messages = await stream_messages(name, 30)
    assert {h["Nats-Msg-Id"] for _, h, _ in messages} == {f"{i.id}-1" for i in ok}


async def test_a_publish_without_an_ack_times_out_alone(stream):
    name, prefix = stream
    silent = f"silent{uuid.uuid4().hex[:8]}.x"
    params = [{"subject": f"{prefix}.ok", "data": f"m{i}"} for i in range(20)]
    params.insert(5, {"subject": silent, "timeout": 0.2})
    async with silent_subscriber(silent):
        insts, _ = await _run(FastRetries(URL), params, max_attempts=2)
    assert insts[5].state is State.FAILED
    assert insts[5].attempts == 2  # retryable: tried again, timed out again
    assert f"no JetStream ack for {silent!r} within 0.2 s" in (insts[5].error or "")
    ok = insts[:5] + insts[6:]
    assert all(i.state is State.SUCCEEDED and i.attempts == 1 for i in ok)
    assert len(await stream_messages(name, 20)) == 20


async def test_the_earliest_deadline_is_kept_across_timeouts(stream):
    """A publish with a shorter timeout, sent after one with a longer timeout, fails at
    its own deadline (the reaper sleeps until the earliest of all)."""
    _, prefix = stream
    silent = f"silent{uuid.uuid4().hex[:8]}.x"
    failed_at: dict[str, float] = {}
    short_failed = trio.Event()
    async with silent_subscriber(silent), trio.open_nursery() as nursery:
        conn = await connect(URL, nursery)

        async def publish(label: str, timeout: float) -> None:
            with pytest.raises(trio.TooSlowError):
                await conn.request(silent, b"x", {}, timeout)
            failed_at[label] = trio.current_time()
            short_failed.set()

        start = trio.current_time()
        async with trio.open_nursery() as publishers:
            publishers.start_soon(publish, "long", 5.0)
            await trio.testing.wait_all_tasks_blocked()
            publishers.start_soon(publish, "short", 0.1)
            ack = await conn.request(f"{prefix}.x", b"y", {}, 5.0)  # the connection works
            assert b'"seq"' in ack.payload
            with trio.fail_after(4):
                await short_failed.wait()
            publishers.cancel_scope.cancel()  # the long one: no need to wait 5 s
        assert list(failed_at) == ["short"]
        assert failed_at["short"] - start < 4.0
        nursery.cancel_scope.cancel()


async def test_a_cancelled_publish_leaves_the_connection_working(stream):
    _, prefix = stream
    silent = f"silent{uuid.uuid4().hex[:8]}.x"
    async with silent_subscriber(silent), trio.open_nursery() as nursery:
        conn = await connect(URL, nursery)
        with trio.move_on_after(0.05) as scope:
            await conn.request(silent, b"x", {}, 30.0)
        assert scope.cancelled_caught
        assert not conn._waiters  # nothing left waiting
        reply = await conn.request(f"{prefix}.x", b"y", {}, 5.0)
        assert b'"seq"' in reply.payload
        nursery.cancel_scope.cancel()


async def test_a_message_over_max_payload_is_refused_before_it_is_sent(stream):
    _, prefix = stream
    async with trio.open_nursery() as nursery:
        conn = await connect(URL, nursery)
        too_big = b"x" * (conn.max_payload + 1)
        with pytest.raises(NatsTooLarge, match="over the server's max_payload"):
            await conn.request(f"{prefix}.x", too_big, {}, 5.0)
        reply = await conn.request(f"{prefix}.x", b"small", {}, 5.0)  # not disconnected
        assert b'"seq"' in reply.payload
        assert not conn.closed
        nursery.cancel_scope.cancel()


async def test_a_message_over_max_payload_is_a_final_failure(stream):
    _, prefix = stream
    task = FastRetries(URL)
    async with task.lifespan():
        token = CURRENT_INSTANCE.set(
            tickwork.Instance(id=5, task="nats", run_at_us=0, params=b"", state=State.RUNNING)
        )
        try:
            conn = await task._connection()  # a smaller limit: a fast test
            conn.max_payload = 100
            with pytest.raises(HandoffRejected, match="max_payload"):
                await task.run(tickwork.pack({"subject": f"{prefix}.x", "data": "x" * 200}))
            result = await task.run(tickwork.pack({"subject": f"{prefix}.x", "data": "x"}))
        finally:
            CURRENT_INSTANCE.reset(token)
    assert result["seq"] == 1


async def test_the_server_closing_mid_batch_fails_what_had_no_ack_and_reconnects(stream):
    name, prefix = stream
    proxy = CuttingProxy(publishes=40, keep=15)
    async with trio.open_nursery() as nursery:
        url = await proxy.serve(nursery)
        params = [{"subject": f"{prefix}.x", "data": f"m{i}"} for i in range(40)]
        insts, history = await _run(FastRetries(url), params, max_attempts=2)
        nursery.cancel_scope.cancel()
    assert proxy.cut.is_set()
    assert proxy.connections == 2  # reconnected after the cut
    assert all(i.state is State.SUCCEEDED for i in insts), [i.error for i in insts]
    first = [i for i in insts if i.attempts == 1]
    again = [i for i in insts if i.attempts == 2]
    assert len(first) == 15
    assert len(again) == 25
    for inst, runs in zip(insts, history, strict=True):
        if inst.attempts == 2:
            assert "connection" in (runs[0].error or ""), runs
    # every attempt was stored: the cut ones once per attempt (another Nats-Msg-Id)
    ids = {h["Nats-Msg-Id"] for _, h, _ in await stream_messages(name, 65)}
    assert ids == {f"{i.id}-1" for i in insts} | {f"{i.id}-2" for i in again}


ACKS = [
    (b'{"stream":"S", "seq":7}', {"stream": "S", "seq": 7, "duplicate": False}),
    (b'{"stream":"S","seq":7,"duplicate": true}', {"stream": "S", "seq": 7, "duplicate": True}),
    (b'{"stream":"S","domain":"hub","seq":7}', {"stream": "S", "seq": 7, "duplicate": False}),
    # not the plain form: read by json.loads, with the same result
    (b'{"seq":7,"stream":"S","duplicate":false}', {"stream": "S", "seq": 7, "duplicate": False}),
    (b'{"stream":"S\\u00e9","seq":7}', {"stream": "S\u00e9", "seq": 7, "duplicate": False}),
]


@pytest.mark.parametrize(("payload", "result"), ACKS)
def test_acks_are_read_in_every_form(payload, result):
    assert _ack("a.b", payload) == result


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b'{"error":{"code":400,"description":"bad"},"stream":"S","seq":0}', HandoffRejected,
         "JetStream refused 'a.b': bad"),
        (b'{"error":{"code":503,"description":"busy"}}', HandoffRetryable, "busy"),
        (b"not json", HandoffRejected, "not a JetStream ack"),
        (b'{"stream":"S"}', HandoffRejected, "not a JetStream ack"),
    ],
)  # fmt: skip
def test_an_error_ack_or_another_reply_is_mapped(payload, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _ack("a.b", payload)
