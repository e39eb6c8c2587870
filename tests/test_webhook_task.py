"""WebhookTask: params checked when scheduled, Standard Webhooks signatures verified by an
independent implementation, retry rules (5xx, timeout, refused: retried; 4xx: final),
keep-alive connections, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

import tickwork
from tests.support.handoff_support import Receiver, wait_all, wait_ended
from tickwork.tasks import HandoffRejected, HandoffRetryable, WebhookTask, post_webhook
from tickwork.tasks.webhook import WebhookCall

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a test key
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class FastRetries(WebhookTask):
    backoff_base = timedelta(milliseconds=5)
    backoff_cap = timedelta(milliseconds=5)


BAD = [
    ({}, "need 'url'"),
    ({"url": "ftp://example.com/x"}, "http:// or https://"),
    ({"url": "http:///nohost"}, "with a host"),
    ({"url": "http://exa mple.com/"}, "without spaces"),
    ({"url": "http://example.com:99999/"}, "malformed"),
    ({"url": 42}, "http(s) URL"),
    ({"url": "http://x.org", "json": 1, "body": "b"}, "not both"),
    ({"url": "http://x.org", "method": "BREW"}, "'method'"),
    ({"url": "http://x.org", "headers": {"bad name": "v"}}, "not a valid HTTP token"),
    ({"url": "http://x.org", "headers": {"x": "a\r\nb: c"}}, "line break"),
    ({"url": "http://x.org", "headers": {"x": "caf\u00e9"}}, "not printable ASCII"),
    ({"url": "http://x.org/caf\u00e9"}, "percent-encode"),
    ({"url": "http://x.org/\x01"}, "percent-encode"),
    ({"url": "http://x.org", "headers": {"webhook-signature": "v1,x"}}, "set by tickwork"),
    ({"url": "http://x.org", "headers": {"x": 1}}, "map of strings"),
    ({"url": "http://x.org", "expect": []}, "'expect'"),
    ({"url": "http://x.org", "expect": [200, 700]}, "'expect'"),
    ({"url": "http://x.org", "timeout": 0}, "'timeout'"),
    ({"url": "http://x.org", "timeout": "5"}, "'timeout'"),
    ({"url": "http://x.org", "follow_redirects": "yes"}, "'follow_redirects'"),
    ({"url": "http://x.org", "body": 5}, "'body'"),
    ({"url": "http://x.org", "json": {"when": b"\x00"}}, "JSON"),
    ({"url": "http://x.org", "secret": "whsec_x"}, "unknown keys"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_params_are_refused(params, message):
    with pytest.raises(tickwork.InvalidArgument, match=re.escape(message)):
        WebhookCall.from_params(tickwork.pack(params))


def test_params_that_are_not_a_map_are_refused():
    with pytest.raises(tickwork.InvalidArgument, match="must be a map"):
        WebhookCall.from_params(tickwork.pack(["http://x.org"]))
    with pytest.raises(tickwork.InvalidArgument, match="not msgpack"):
        WebhookCall.from_params(b"\xc1")


def test_defaults():
    call = WebhookCall.from_params(tickwork.pack({"url": "https://x.org/h", "json": {"a": 1}}))
    assert call.method == "POST"
    assert call.content == b'{"a":1}'
    assert call.headers == {"content-type": "application/json"}
    assert call.timeout == 10.0
    assert call.expect is None
    assert call.follow_redirects is False


@pytest.mark.parametrize("secret", ["nope", "whsec_!!!", "whsec_"])
def test_a_bad_secret_is_refused_at_construction(secret):
    with pytest.raises(tickwork.InvalidArgument, match="secret") as info:
        WebhookTask(secret)
    assert secret not in str(info.value)  # a secret is never shown


async def test_schedule_schedule_many_and_add_schedule_refuse_bad_params():
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(store, tasks=[WebhookTask()]) as scheduler:
        bad = {"url": "gopher://x.org"}
        with pytest.raises(tickwork.InvalidArgument, match="http:// or https://"):
            await scheduler.schedule("webhook", at=NOW, params=bad)
        good = tickwork.NewInstance("webhook", NOW, {"url": "http://x.org"})
        with pytest.raises(tickwork.InvalidArgument, match="http:// or https://"):
            await scheduler.schedule_many([good, tickwork.NewInstance("webhook", NOW, bad)])
        with pytest.raises(tickwork.InvalidArgument, match="http:// or https://"):
            await scheduler.add_schedule("webhook", tickwork.Cron("0 3 * * *"), params=bad)
        assert await scheduler.count() == 0
        assert await scheduler.list_schedules() == []


async def _run_one(task, params, *, max_attempts=None):
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
        with scheduler.subscribe() as sub:
            at = datetime.now(UTC)
            iid = await scheduler.schedule(
                task.name, at=at, params=params, max_attempts=max_attempts
            )
            inst = await wait_ended(scheduler, sub, iid)
        return inst, await scheduler.history(iid)


async def test_signed_call_verified_by_standardwebhooks():
    with Receiver() as receiver:
        payload = {"job": "nightly", "n": [1, 2, 3], "text": "héllo"}
        params = {"url": receiver.url, "json": payload, "headers": {"X-Tenant": "a"}}
        inst, history = await _run_one(WebhookTask(SECRET), params)
    assert inst.state is tickwork.State.SUCCEEDED, inst.error
    (req,) = receiver.received
    assert req.method == "POST"
    assert req.path == "/hook"
    assert req.headers["x-tenant"] == "a"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == f"{inst.id}-1"
    # an independent implementation of the spec checks the signature and the timestamp
    verified = Webhook(SECRET).verify(req.body, req.headers)
    assert verified == payload
    assert "200" in (history[-1].result or "")
    assert "answer 200" in (history[-1].result or "")


async def test_unsigned_without_a_secret(monkeypatch):
    monkeypatch.delenv("TICKWORK_WEBHOOK_SECRET", raising=False)
    task = WebhookTask()
    assert not task.signed
    with Receiver() as receiver:
        inst, _ = await _run_one(task, {"url": receiver.url, "body": "raw text"})
    assert inst.state is tickwork.State.SUCCEEDED, inst.error
    (req,) = receiver.received
    assert req.body == b"raw text"
    assert "webhook-signature" not in req.headers
    assert req.headers["webhook-id"] == f"{inst.id}-1"


def test_the_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TICKWORK_WEBHOOK_SECRET", SECRET)
    assert WebhookTask().signed


async def test_a_5xx_is_retried_with_a_new_attempt_id():
    with Receiver(statuses=[503, 502]) as receiver:
        inst, history = await _run_one(
            FastRetries(SECRET), {"url": receiver.url, "json": {}}, max_attempts=3
        )
    assert inst.state is tickwork.State.SUCCEEDED, inst.error
    assert inst.attempts == 3
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids == [f"{inst.id}-1", f"{inst.id}-2", f"{inst.id}-3"]
    assert "503" in (history[0].error or "")


async def test_a_4xx_is_final_even_with_attempts_left():
    with Receiver(statuses=[404]) as receiver:
        inst, _ = await _run_one(FastRetries(), {"url": receiver.url, "json": {}}, max_attempts=3)
    assert inst.state is tickwork.State.FAILED
    assert inst.attempts == 1
    assert "answered 404" in (inst.error or "")
    assert len(receiver.received) == 1


async def test_expect_accepts_listed_statuses_only():
    with Receiver(statuses=[202, 200]) as receiver:
        ok, _ = await _run_one(FastRetries(), {"url": receiver.url, "expect": [202]})
        bad, _ = await _run_one(FastRetries(), {"url": receiver.url, "expect": [202]})
    assert ok.state is tickwork.State.SUCCEEDED
    assert bad.state is tickwork.State.FAILED
    assert "answered 200" in (bad.error or "")


async def test_a_timeout_is_retried():
    with Receiver(delays=[3.0]) as receiver:
        inst, history = await _run_one(
            FastRetries(), {"url": receiver.url, "timeout": 0.2}, max_attempts=2
        )
    assert inst.state is tickwork.State.SUCCEEDED, inst.error
    assert "timed out after 0.2 s" in (history[0].error or "")


async def test_a_refused_connection_is_retryable_and_final_when_out_of_attempts():
    with socket_closed_port() as port:
        inst, _ = await _run_one(
            FastRetries(), {"url": f"http://127.0.0.1:{port}/"}, max_attempts=2
        )
    assert inst.state is tickwork.State.FAILED
    assert inst.attempts == 2
    assert "ConnectError" in (inst.error or "")


def socket_closed_port():
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        try:
            yield s.getsockname()[1]
        finally:
            s.close()

    return closed()


async def test_runs_share_keep_alive_connections():
    with Receiver() as receiver:
        task = WebhookTask()
        async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
            with scheduler.subscribe() as sub:
                at = datetime.now(UTC)
                for _ in range(20):
                    iid = await scheduler.schedule("webhook", at=at, params={"url": receiver.url})
                    await wait_ended(scheduler, sub, iid)
    assert len(receiver.received) == 20
    assert len(receiver.connections) == 1


async def test_post_webhook_for_code_that_is_not_a_task():
    with Receiver(statuses=[200, 500]) as receiver:
        result = await post_webhook(
            receiver.url, {"text": "job failed"}, message_id="n-1", secret=SECRET
        )
        assert result == {"status": 200, "body": "answer 200"}
        with pytest.raises(HandoffRetryable, match="500"):
            await post_webhook(receiver.url, {}, message_id="n-2")
    req = receiver.received[0]
    assert Webhook(SECRET).verify(req.body, req.headers) == {"text": "job failed"}
    assert "webhook-signature" not in receiver.received[1].headers
    with pytest.raises(tickwork.InvalidArgument):
        await post_webhook("nope", {}, message_id="x")


async def test_run_outside_a_node_says_how_to_use_it():
    with pytest.raises(tickwork.TickworkError, match="lifespan"):
        await WebhookTask().run(tickwork.pack({"url": "http://x.org"}))


async def test_a_redirect_is_not_followed_by_default():
    with Receiver(statuses=[302]) as receiver:
        inst, _ = await _run_one(FastRetries(), {"url": receiver.url}, max_attempts=3)
    assert inst.state is tickwork.State.FAILED
    assert isinstance(HandoffRejected("x"), tickwork.TickworkError)
    assert "answered 302" in (inst.error or "")


def _cli(*args, db):
    return subprocess.run(
        [sys.executable, "-m", "tickwork", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_add_checks_webhook_params(tmp_path):
    db = tmp_path / "t.db"
    bad = _cli("add", "--task", "webhook", "--in", "1h", "--params", '{"url": "ftp://x"}', db=db)
    assert bad.returncode == 2
    assert "http:// or https://" in bad.stderr
    params = json.dumps({"url": "https://example.com/hook", "json": {"a": 1}})
    good = _cli("add", "--task", "webhook", "--in", "1h", "--params", params, "--json", db=db)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["task"] == "webhook"
    cron = _cli("cron", "add", "0 3 * * *", "--task", "webhook", "--params", '{"url": 1}', db=db)
    assert cron.returncode == 2
    assert "'url'" in cron.stderr


def test_tickwork_run_refuses_a_bad_secret_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tickwork", "run", "--db", str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TICKWORK_WEBHOOK_SECRET": "not-a-secret"},
    )
    assert proc.returncode == 2
    assert "whsec_<base64>" in proc.stderr
    assert "not-a-secret" not in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_runs_waiting_for_a_pooled_connection_do_not_time_out():
    """More due runs than connections: every run succeeds over at most max_connections
    keep-alive connections (the task queues them before httpx, outside their timeout)."""
    with Receiver(delays=[0.2] * 30) as receiver:
        task = WebhookTask(max_connections=2)
        async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task]) as scheduler:
            with scheduler.subscribe() as sub:
                at = datetime.now(UTC)
                params = {"url": receiver.url, "timeout": 1.0}
                ids = await scheduler.schedule_many(
                    [tickwork.NewInstance("webhook", at, params) for _ in range(30)]
                )
                insts = await wait_all(scheduler, sub, ids)
    assert [i.state for i in insts] == [tickwork.State.SUCCEEDED] * 30, insts[0].error
    assert len(receiver.connections) <= 2
