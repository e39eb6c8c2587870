"""Failure notifications (``Task.notify = tickwork.Notify(url=...)``), posted to a real HTTP
receiver on loopback (a small HTTP/1.1 server on trio, in the test's own event loop, so
the virtual clock stays deterministic).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.helpers import settle, wait_until
from tickwork import Notify, State
from tickwork.schedules.triggers import Cron
from tickwork.testing import VirtualClock


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                body, buf = buf[:length], buf[length:]
                self.headers.append(headers)
                self.bodies.append(json.loads(body))
                if self.hang:
                    await trio.sleep_forever()
                await stream.send_all(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode()
                )


class Failing(tickwork.Task):
    name = "failing"

    async def run(self, params: bytes) -> object:
        raise RuntimeError("disk full")


class Sleeper(tickwork.Task):
    name = "sleeper"

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes

    async def run(self, params: bytes) -> object:
        await trio.sleep(self.minutes * 60)
        return None


async def start_receiver(nursery: trio.Nursery, **kwargs: Any) -> Receiver:
    receiver = Receiver(**kwargs)
    await nursery.start(receiver.serve)
    return receiver


async def test_a_failure_is_posted_once_after_the_last_attempt(autojump_clock, nursery):
    receiver = await start_receiver(nursery)
    task = Failing()
    task.notify = Notify(url=receiver.url)  # type: ignore[misc]
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as s:
        iid = await s.schedule("failing", at=clock.now(), max_attempts=3)
        await wait_until(lambda: receiver.bodies)
        await settle(s)
        await trio.sleep(60)
        assert (await s.get(iid)).state is State.FAILED
    [body] = receiver.bodies
    assert body["event"] == "failed"
    assert body["instance_id"] == iid
    assert body["task"] == "failing"
    assert body["state"] == "FAILED"
    assert body["error"] == "RuntimeError: disk full"
    assert (
        body["text"]
        == f"tickwork: instance {iid} of task 'failing' failed: RuntimeError: disk full"
    )
    assert body["suppressed"] == 0
    assert receiver.headers[0]["webhook-id"] == f"tickwork-notify-{iid}"
    assert receiver.headers[0]["content-type"] == "application/json"


async def test_notices_are_rate_limited_and_count_what_was_held_back(autojump_clock, nursery):
    receiver = await start_receiver(nursery)
    task = Failing()
    task.notify = Notify(url=receiver.url, min_interval=timedelta(minutes=10))  # type: ignore[misc]
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as s:
        first = [await s.schedule("failing", at=clock.now()) for _ in range(5)]
        await settle(s)
        await trio.sleep(60)
        assert len(receiver.bodies) == 1  # the other four held back
        await trio.sleep(10 * 60)
        late = await s.schedule("failing", at=clock.now())
        await wait_until(lambda: len(receiver.bodies) == 2)
    assert receiver.bodies[0]["instance_id"] in first
    assert receiver.bodies[1]["instance_id"] == late
    assert receiver.bodies[1]["suppressed"] == 4
    assert "(4 more notices of this task held back)" in receiver.bodies[1]["text"]


async def test_overdue_and_missed_occurrences_of_a_schedule(autojump_clock, nursery):
    receiver = await start_receiver(nursery)
    task = Sleeper(minutes=25)
    task.notify = Notify(  # type: ignore[misc]
        url=receiver.url, overdue_after=timedelta(minutes=15), min_interval=timedelta(seconds=1)
    )
    clock = VirtualClock()
    start = clock.now()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, shutdown_grace=timedelta(0)
    ) as s:
        await s.add_schedule("sleeper", Cron("*/10 * * * *"), schedule_id="s", overlap="skip")
        await clock.advance_to(start + timedelta(minutes=59))
    events = sorted((b["event"], b["instance_id"]) for b in receiver.bodies)
    kinds = [e for e, _ in events]
    # runs start at :10 and :40 (each over 15 min); :20, :30 and :50 are skipped
    assert kinds.count("overdue") == 2, receiver.bodies
    assert kinds.count("missed") >= 2, receiver.bodies
    assert len({i for _, i in events}) == len(events)  # at most once per instance
    overdue = next(b for b in receiver.bodies if b["event"] == "overdue")
    assert overdue["schedule_id"] == "s"
    assert overdue["state"] == "RUNNING"
    assert "is still running after 0:15:00" in overdue["text"]


async def test_a_receiver_that_hangs_never_slows_the_node(autojump_clock, nursery, caplog):
    receiver = await start_receiver(nursery, hang=True)
    task = Failing()
    task.notify = Notify(url=receiver.url, min_interval=timedelta(seconds=1), timeout=5)  # type: ignore[misc]
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as s:
        ids = await s.schedule_many(
            [tickwork.NewInstance("failing", clock.now()) for _ in range(1_000)]
        )
        await settle(s)
        states = {(await s.get(i)).state for i in ids}
        await trio.sleep(10)
    assert states == {State.FAILED}
    assert receiver.bodies  # the first notice reached the receiver, which never answered
    assert any("could not post the failed notice" in r.message for r in caplog.records)


async def test_no_task_asks_no_subscription(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[Failing()], clock=clock) as s:
        assert not s._node.hub.active  # nothing subscribed: publishing costs nothing


def test_bad_settings_are_refused() -> None:
    with pytest.raises(tickwork.InvalidArgument, match="http:// or https:// URL"):
        Notify(url="ftp://example.com/x")
    with pytest.raises(tickwork.InvalidArgument, match="non-empty list of failed, missed"):
        Notify(url="http://x/", on=("boom",))  # type: ignore[arg-type]
    with pytest.raises(tickwork.InvalidArgument, match="overdue_after must be a timedelta > 0"):
        Notify(url="http://x/", overdue_after=timedelta(0))
    with pytest.raises(tickwork.InvalidArgument, match="min_interval must be"):
        Notify(url="http://x/", min_interval=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timeout", "why"),
    [
        (0, "a finite number of seconds > 0, got 0"),
        (0.0, "a finite number of seconds > 0, got 0.0"),
        (-1, "a finite number of seconds > 0, got -1"),
        (float("nan"), "a finite number of seconds > 0, got nan"),
        (float("inf"), "a finite number of seconds > 0, got inf"),
        (float("-inf"), "a finite number of seconds > 0, got -inf"),
        ("10", "a number of seconds, got '10'"),
        (None, "a number of seconds, got None"),
        (True, "a number of seconds, got True"),
        (timedelta(seconds=5), "a number of seconds, got datetime.timedelta"),
    ],
)
def test_a_bad_timeout_is_refused(timeout: object, why: str) -> None:
    # Regression: Notify checked its url, events and durations but not its timeout.
    with pytest.raises(
        tickwork.InvalidArgument, match=rf"^Notify timeout must be {re.escape(why)}"
    ):
        Notify(url="http://x/", timeout=timeout)  # type: ignore[arg-type]


def test_a_good_timeout_is_kept() -> None:
    assert Notify(url="http://x/").timeout == 10.0
    assert Notify(url="http://x/", timeout=2).timeout == 2
    assert Notify(url="http://x/", timeout=0.25).timeout == 0.25


async def test_a_task_with_a_bad_notify_is_refused(autojump_clock):
    task = Failing()
    task.notify = "http://x/"  # type: ignore[assignment,misc]
    store = tickwork.MemoryStore()
    with pytest.raises(tickwork.InvalidArgument, match=r"notify must be a tickwork\.Notify"):
        async with tickwork.open_scheduler(store, tasks=[task]):
            pass


class SlowThenFast(tickwork.Task):
    """Runs 8 minutes and fails, then (retried) runs 5 minutes and succeeds."""

    name = "retried"
    max_attempts = 2
    backoff_base = timedelta(milliseconds=1)
    backoff_cap = timedelta(milliseconds=1)

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, params: bytes) -> object:
        self.runs += 1
        await trio.sleep(8 * 60 if self.runs == 1 else 5 * 60)
        if self.runs == 1:
            raise RuntimeError("first attempt")
        return None


async def test_a_retry_gets_its_own_overdue_deadline(autojump_clock, nursery):
    """Neither attempt runs over 10 minutes: no notice (the first attempt's deadline falls
    while the second runs, and must not count against it)."""
    receiver = await start_receiver(nursery)
    task = SlowThenFast()
    task.notify = Notify(url=receiver.url, overdue_after=timedelta(minutes=10))  # type: ignore[misc]
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as s:
        iid = await s.schedule("retried", at=clock.now())
        await wait_until(lambda: task.runs == 2)
        await settle(s)
        await trio.sleep(60 * 60)
        assert (await s.get(iid)).state is State.SUCCEEDED
    assert receiver.bodies == []


class FailsLater(tickwork.Task):
    name = "fails-later"

    async def run(self, params: bytes) -> object:
        await trio.sleep(60)
        raise RuntimeError("failed while the node stopped")


async def test_a_failure_recorded_while_the_node_stops_is_still_posted(autojump_clock, nursery):
    """The run ends during the node's drain (shutdown_grace): the Recorder's last write
    comes after the block was left, and its notice is posted before open_scheduler ends."""
    receiver = await start_receiver(nursery)
    task = FailsLater()
    task.notify = Notify(url=receiver.url)  # type: ignore[misc]
    clock = VirtualClock()
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, shutdown_grace=timedelta(minutes=5)
    ) as s:
        iid = await s.schedule("fails-later", at=clock.now())
        await wait_until(lambda: s.statistics().executor.running == 1)
    [body] = receiver.bodies
    assert (body["event"], body["instance_id"], body["state"]) == ("failed", iid, "FAILED")
    assert body["error"] == "RuntimeError: failed while the node stopped"
