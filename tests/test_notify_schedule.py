"""A schedule's own ``notify`` (``add_schedule(..., notify=Notify(...))``): stored with the
schedule in every store, and used by the node for its occurrences instead of the task's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

import tickwork
from tests.support.cli import error_line
from tests.support.cli import tw_cmd as tw
from tests.support.helpers import wait_until
from tests.support.http_support import in_process
from tests.test_notify import Failing, start_receiver
from tests.test_schedules_store import T0
from tickwork import Notify
from tickwork.errors import InvalidArgument
from tickwork.notify import notify_from_json, notify_to_json
from tickwork.schedules.schedule import new_schedule
from tickwork.schedules.triggers import Cron, Interval
from tickwork.stores import SQLiteStore, Store
from tickwork.testing import VirtualClock

HOOK = Notify(
    url="https://hooks.example/T1",
    on=("failed", "overdue"),
    overdue_after=timedelta(minutes=15),
    min_interval=timedelta(seconds=90),
    timeout=3.5,
)


def test_notify_round_trips_through_its_stored_form() -> None:
    assert notify_from_json(notify_to_json(HOOK)) == HOOK
    plain = Notify(url="http://x/")
    assert notify_from_json(notify_to_json(plain)) == plain


async def test_a_schedule_keeps_its_notify(store: Store) -> None:
    every = Interval(timedelta(minutes=5))
    written = await store.add_schedule(new_schedule("t", every, schedule_id="n", notify=HOOK), T0)
    assert written.schedule.notify == HOOK
    got = await store.get_schedule("n")
    assert got is not None
    assert got.notify == HOOK
    [listed] = await store.list_schedules()
    assert listed.notify == HOOK
    # the same definition changes nothing; another notify is another definition
    again = await store.add_schedule(new_schedule("t", every, schedule_id="n", notify=HOOK), T0)
    assert again.change == "unchanged"
    other = Notify(url="https://hooks.example/T2")
    with pytest.raises(InvalidArgument, match=r"different notify; pass replace=True"):
        await store.add_schedule(new_schedule("t", every, schedule_id="n", notify=other), T0)
    await store.add_schedule(
        new_schedule("t", every, schedule_id="n", notify=None), T0, replace=True
    )
    got = await store.get_schedule("n")
    assert got is not None
    assert got.notify is None


def test_a_bad_notify_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"notify must be a tickwork\.Notify or None"):
        new_schedule("t", Cron("* * * * *"), notify="https://x/")  # type: ignore[arg-type]


async def test_a_file_of_the_previous_schema_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store = SQLiteStore(db)
    await store.open()
    await store.add_schedule(new_schedule("t", Cron("* * * * *"), schedule_id="old"), T0)
    await store.aclose()
    # back to version 9, the schema before the notify column: version 10 added it,
    # version 11 the columns of runs in progress (started_us, repeatable), and version 12
    # rebuilt an index (which it does again from 9, as from 11)
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE schedules DROP COLUMN notify")
        conn.execute("ALTER TABLE instances DROP COLUMN started_us")
        conn.execute("ALTER TABLE instances DROP COLUMN repeatable")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 12
        conn.execute("PRAGMA user_version = 9")
        conn.execute("UPDATE tickwork_meta SET value = 9 WHERE key = 'schema_version'")
    conn.close()
    store = SQLiteStore(db)
    await store.open()
    try:
        got = await store.get_schedule("old")
        assert got is not None
        assert got.notify is None
        await store.add_schedule(
            new_schedule("t", Cron("* * * * *"), schedule_id="new", notify=HOOK), T0
        )
        assert (await store.get_schedule("new")).notify == HOOK  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_an_occurrence_is_notified_to_its_schedules_url(autojump_clock, nursery):
    for_task = await start_receiver(nursery)
    for_schedule = await start_receiver(nursery)
    task = Failing()
    task.notify = Notify(url=for_task.url)  # type: ignore[misc]
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as s:
        await s.add_schedule(
            "failing", Cron("*/10 * * * *"), schedule_id="s", notify=Notify(url=for_schedule.url)
        )
        iid = await s.schedule("failing", at=clock.now())  # not of the schedule
        await wait_until(lambda: for_schedule.bodies and for_task.bodies)
    [body] = for_schedule.bodies
    assert body["schedule_id"] == "s"
    assert body["event"] == "failed"
    assert [b["instance_id"] for b in for_task.bodies] == [iid]


async def test_a_node_whose_tasks_do_not_notify_runs_the_notifier_for_a_stored_schedule(
    autojump_clock, nursery, tmp_path
):
    # Virtual time jumps only after 10 ms of real idleness: the notice's HTTP exchange with
    # the receiver and the SQLite thread's calls are real work the clock must wait for.
    autojump_clock.autojump_threshold = 0.01
    receiver = await start_receiver(nursery)
    # 30 s before an occurrence of */10: every virtual second waited costs real time here
    clock = VirtualClock(start=datetime(2030, 1, 1, 0, 9, 30, tzinfo=UTC))
    db = tmp_path / "t.db"
    async with tickwork.open_scheduler(SQLiteStore(db), tasks=[Failing()], clock=clock) as s:
        assert not s._node.hub.active  # nothing asks yet: no subscription
        await s.add_schedule(
            "failing", Cron("*/10 * * * *"), schedule_id="s", notify=Notify(url=receiver.url)
        )
    async with tickwork.open_scheduler(SQLiteStore(db), tasks=[Failing()], clock=clock) as s:
        assert s._node.hub.active
        with trio.fail_after(3600):
            await wait_until(lambda: receiver.bodies)
    # The virtual clock may jump to the next occurrence while a SQLite call runs on the
    # store's thread: one notice or more, each of the schedule's failures, one per instance.
    bodies = receiver.bodies
    assert {(b["schedule_id"], b["event"]) for b in bodies} == {("s", "failed")}
    ids = [b["instance_id"] for b in bodies]
    assert len(ids) == len(set(ids)), ids


def test_cron_add_stores_a_notify_and_ls_shows_it(tmp_path: Path) -> None:
    db = tmp_path / "cron.db"
    tw(
        "cron", "add", "0 3 * * *", "--id", "nightly", "--notify-url", "https://hooks.example/T",
        "--notify-on", "failed,overdue", "--notify-overdue", "1h", "--", "backup.sh", db=db,
    )  # fmt: skip
    [listed] = json.loads(tw("cron", "ls", "--json", db=db).stdout)
    assert listed["notify"] == {
        "url": "https://hooks.example/T",
        "on": ["failed", "overdue"],
        "overdue_after_us": 3_600_000_000,
        "min_interval_us": 300_000_000,
        "timeout": 10.0,
    }
    bad = tw(
        "cron", "add", "0 3 * * *", "--id", "x", "--notify-url", "ftp://x", "--", "true",
        db=db, code=2,
    )  # fmt: skip
    assert "http:// or https:// URL" in error_line(bad)
    lone = tw("cron", "add", "0 3 * * *", "--notify-overdue", "1h", "--", "true", db=db, code=2)
    assert "--notify-overdue needs --notify-url" in error_line(lone)


@pytest.fixture
def new_store(kind: str, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Makes the (unopened) store of ``kind`` for ``open_scheduler``."""
    if kind == "memory":
        yield tickwork.MemoryStore
    elif kind == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "t.db")
    else:
        from tests.support.pg_support import drop_schema, fresh_schema, require_pg
        from tickwork.stores.postgres import PostgresStore

        dsn = require_pg()
        schema = fresh_schema()
        yield lambda: PostgresStore(dsn, schema=schema)
        drop_schema(dsn, schema)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_a_schedule_added_to_a_running_node_without_a_notifier_is_notified(
    autojump_clock, nursery, new_store
):
    # Regression: the notifier was started only when the node started with a task or a
    # stored schedule that had a notify; one added later waited for the next start.
    autojump_clock.autojump_threshold = 0.01  # the HTTP exchange and SQLite are real work
    receiver = await start_receiver(nursery)
    # 30 s before an occurrence of */10: each jump of the clock waits for 10 ms of real
    # idleness, so every virtual second waited costs real time
    clock = VirtualClock(start=datetime(2030, 1, 1, 0, 9, 30, tzinfo=UTC))
    store = new_store()
    async with tickwork.open_scheduler(store, tasks=[Failing()], clock=clock) as s:
        assert not s._node.hub.active  # nothing asks yet: no subscription
        await s.add_schedule(
            "failing", Cron("*/10 * * * *"), schedule_id="s", notify=Notify(url=receiver.url)
        )
        await wait_until(lambda: receiver.bodies, timeout=1200, step=1)
    bodies = receiver.bodies
    assert {(b["schedule_id"], b["event"]) for b in bodies} == {("s", "failed")}
    ids = [b["instance_id"] for b in bodies]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_a_replaced_schedule_notifies_with_its_new_setting_at_once(
    autojump_clock, nursery, new_store
):
    # Regression: the notifier kept a schedule's setting as read for 60 s, so the next
    # occurrence of a schedule replaced on this node still went to the old receiver.
    autojump_clock.autojump_threshold = 0.01
    for_task = await start_receiver(nursery)
    for_schedule = await start_receiver(nursery)
    task = Failing()
    task.notify = Notify(url=for_task.url, min_interval=timedelta(seconds=1))  # type: ignore[misc]
    clock = VirtualClock()
    every = Interval(timedelta(seconds=20))
    store = new_store()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as s:
        await s.add_schedule("failing", every, schedule_id="s")
        await wait_until(lambda: for_task.bodies, timeout=120, step=1)
        told_task = len(for_task.bodies)
        hook = Notify(url=for_schedule.url, min_interval=timedelta(seconds=1))
        await s.add_schedule("failing", every, schedule_id="s", notify=hook, replace=True)
        replaced_at = trio.current_time()
        await wait_until(lambda: for_schedule.bodies, timeout=120, step=1)
        # the next occurrence (due within 20 s) was told to the new receiver
        assert trio.current_time() - replaced_at < 40
    assert {(b["schedule_id"], b["event"]) for b in for_schedule.bodies} == {("s", "failed")}
    # at most a notice of an occurrence that failed while the replace was being written
    assert len(for_task.bodies) <= told_task + 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_schedule_put_through_the_http_api_is_notified_on_the_running_node(
    autojump_clock, nursery, new_store
):
    autojump_clock.autojump_threshold = 0.01
    receiver = await start_receiver(nursery)
    clock = VirtualClock()
    store = new_store()
    async with (
        tickwork.open_scheduler(store, tasks=[Failing()], clock=clock) as s,
        in_process(s) as api,
    ):
        assert not s._node.hub.active
        body = {"task": "failing", "every_seconds": 30, "notify": {"url": receiver.url}}
        made = await api.put("/api/schedules/s", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["notify"]["url"] == receiver.url
        await wait_until(lambda: receiver.bodies, timeout=120, step=1)
    assert {(b["schedule_id"], b["event"]) for b in receiver.bodies} == {("s", "failed")}


async def _held_back_then_replaced(
    s: tickwork.Scheduler, old: Notify, new: Notify, every: Interval
) -> float:
    """Store schedule ``s`` with ``old``, wait until its first notice went out and a
    second failure was held back by the rate limit, then replace it with ``new`` (and
    ``every``); returns when (trio time) it was replaced."""
    await s.add_schedule("failing", EVERY_20S, schedule_id="s", notify=old)
    await wait_until(lambda: s.statistics().recorder.recorded.get("FAILED", 0) >= 2, step=1)
    await s.add_schedule("failing", every, schedule_id="s", notify=new, replace=True)
    return trio.current_time()


EVERY_20S = Interval(timedelta(seconds=20))


async def test_a_replace_with_another_notify_starts_a_fresh_rate_limit(autojump_clock, nursery):
    # Regression: the rate limit was kept per schedule id across a replace, so a schedule
    # pointed at a new receiver (or given a shorter min_interval) stayed silent until the
    # old setting's interval was over.
    first = await start_receiver(nursery)
    second = await start_receiver(nursery)
    clock = VirtualClock()
    hour = timedelta(hours=1)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[Failing()], clock=clock) as s:
        replaced_at = await _held_back_then_replaced(
            s, Notify(first.url, min_interval=hour), Notify(second.url, min_interval=hour),
            EVERY_20S,
        )  # fmt: skip
        await wait_until(lambda: second.bodies, timeout=600, step=1)
        assert trio.current_time() - replaced_at <= 21  # its next occurrence's failure
    assert len(first.bodies) == 1
    [body] = second.bodies
    # what the old setting held back is not counted in the new receiver's first message
    assert body["suppressed"] == 0


async def test_a_replace_with_other_settings_for_the_same_url_starts_fresh_too(
    autojump_clock, nursery
):
    receiver = await start_receiver(nursery)
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[Failing()], clock=clock) as s:
        replaced_at = await _held_back_then_replaced(
            s, Notify(receiver.url, min_interval=timedelta(hours=1)),
            Notify(receiver.url, min_interval=timedelta(minutes=1)), EVERY_20S,
        )  # fmt: skip
        await wait_until(lambda: len(receiver.bodies) == 2, timeout=600, step=1)
        assert trio.current_time() - replaced_at <= 21
    assert receiver.bodies[1]["suppressed"] == 0


async def test_a_replace_that_keeps_the_notify_keeps_the_rate_limit(autojump_clock, nursery):
    receiver = await start_receiver(nursery)
    clock = VirtualClock()
    hook = Notify(receiver.url, min_interval=timedelta(hours=1))
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[Failing()], clock=clock) as s:
        # another rule, the same notify: the limit goes on
        await _held_back_then_replaced(s, hook, hook, Interval(timedelta(seconds=30)))
        await trio.sleep(30 * 60)
        assert len(receiver.bodies) == 1  # still within the hour: held back
        await wait_until(lambda: len(receiver.bodies) == 2, timeout=3600, step=5)
    # every failure of the hour was counted: those before the replace and after it
    assert receiver.bodies[1]["suppressed"] >= 60
