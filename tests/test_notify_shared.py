"""A schedule's ``notify`` as other processes store it, on one SQLite file or one
PostgreSQL schema shared by two store handles (the node's, and the one another process,
``tickwork cron add`` or an embedding application, writes through):

- a running node hears of a schedule with a ``notify`` stored elsewhere, or of a replace
  made elsewhere, at its next change notice (PostgreSQL) or poll (SQLite), not at its next
  start or a minute later;
- a row written before ``Notify`` checked its timeout still loads, and a node starts on it.

Every test runs on trio's virtual clock; the real work (SQLite's thread, PostgreSQL's
connections, the HTTP receiver) is waited for by a 10 ms autojump threshold.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import attrs
import pytest
import trio

import tickwork
import tickwork.notify
from tests.support.helpers import wait_until
from tests.test_notify import Failing, start_receiver
from tests.test_schedules_store import T0
from tickwork import Notify
from tickwork.errors import InvalidArgument
from tickwork.notify import DEFAULT_TIMEOUT, notify_to_json
from tickwork.schedules.schedule import new_schedule
from tickwork.schedules.triggers import Interval
from tickwork.stores import SQLiteStore, Store
from tickwork.testing import VirtualClock


@attrs.frozen
class Shared:
    """One database; :meth:`handle` makes another (unopened) store on it."""

    kind: str
    db: Path | None = None
    dsn: str | None = None
    schema: str | None = None

    def handle(self) -> Store:
        if self.kind == "sqlite":
            assert self.db is not None
            return SQLiteStore(self.db)
        from tickwork.stores.postgres import PostgresStore

        assert self.dsn is not None
        return PostgresStore(self.dsn, schema=self.schema)

    def rewrite_notify(self, schedule_id: str, text: str) -> None:
        """Write ``text`` into the schedule's notify column, as an older version may have."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.db) as conn:  # type: ignore[arg-type]
                conn.execute("UPDATE schedules SET notify = ? WHERE id = ?", (text, schedule_id))
            conn.close()
            return
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as pg:  # type: ignore[arg-type]
            pg.execute(
                f'UPDATE "{self.schema}".schedules SET notify = %s WHERE id = %s',  # type: ignore[arg-type]
                (text, schedule_id),
            )


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    if request.param == "sqlite":
        yield Shared("sqlite", db=tmp_path / "shared.db")
        return
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg

    dsn = require_pg()
    schema = fresh_schema()
    yield Shared("postgres", dsn=dsn, schema=schema)
    drop_schema(dsn, schema)


@asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    """``store`` opened as a client (no node id), as the CLI opens it."""
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def with_timeout(notify: Notify, raw: str) -> str:
    """``notify``'s stored JSON text with ``raw`` as its timeout."""
    d = json.loads(notify_to_json(notify))
    text = json.dumps(d | {"timeout": "RAW"}, separators=(",", ":"))
    return text.replace('"RAW"', raw)


EVERY_20S = Interval(timedelta(seconds=20))


# -- schedules stored elsewhere while a node runs -------------------------------------


async def test_a_schedule_with_a_notify_stored_elsewhere_starts_the_notifier_at_once(
    autojump_clock, nursery, shared
):
    # Regression: a node that ran no notifier (no task and no stored schedule had a
    # notify when it started) notified a schedule another process added only from its
    # next start.
    autojump_clock.autojump_threshold = 0.01
    receiver = await start_receiver(nursery)
    clock = VirtualClock()
    async with (
        tickwork.open_scheduler(shared.handle(), tasks=[Failing()], clock=clock) as s,
        opened(shared.handle()) as other,
    ):
        assert not s._node.hub.active  # nothing asks yet: no subscription
        hook = Notify(url=receiver.url)
        every = Interval(timedelta(minutes=1))
        await other.add_schedule(
            new_schedule("failing", every, schedule_id="s", notify=hook), clock.now_us()
        )
        stored_at = trio.current_time()
        await wait_until(lambda: s._node.hub.active, timeout=10, step=0.05)
        # at the change notice (PostgreSQL) or the next poll (SQLite: every 500 ms)
        assert trio.current_time() - stored_at <= 0.6
        await wait_until(lambda: receiver.bodies, timeout=120, step=1)
    assert {(b["schedule_id"], b["event"]) for b in receiver.bodies} == {("s", "failed")}


async def test_a_replace_made_elsewhere_applies_to_the_next_occurrence(
    autojump_clock, nursery, shared
):
    # Regression: the node used a schedule's notify as read for 60 s, so a replace made by
    # another process (another node, `tickwork cron add --replace`) went unseen for up to
    # a minute: occurrences in between were notified to the old receiver.
    autojump_clock.autojump_threshold = 0.01
    first = await start_receiver(nursery)
    second = await start_receiver(nursery)
    clock = VirtualClock()
    quick = timedelta(seconds=1)
    async with (
        tickwork.open_scheduler(shared.handle(), tasks=[Failing()], clock=clock) as s,
        opened(shared.handle()) as other,
    ):
        await s.add_schedule(
            "failing", EVERY_20S, schedule_id="s", notify=Notify(first.url, min_interval=quick)
        )
        # the node read the setting for the first occurrence's events just now
        await wait_until(lambda: first.bodies, timeout=120, step=1)
        told_first = len(first.bodies)
        await other.add_schedule(
            new_schedule(
                "failing", EVERY_20S, schedule_id="s", notify=Notify(second.url, min_interval=quick)
            ),
            clock.now_us(),
            replace=True,
        )
        replaced_at = trio.current_time()
        await wait_until(lambda: second.bodies, timeout=120, step=1)
        # the next occurrence (due within 20 s) went to the new receiver; with the setting
        # kept for 60 s it would have been one 40 s or more later
        assert trio.current_time() - replaced_at < 30
    assert {(b["schedule_id"], b["event"]) for b in second.bodies} == {("s", "failed")}
    # at most a notice of an occurrence that failed while the replace was being written
    assert len(first.bodies) <= told_first + 1


# -- a notify timeout stored before Notify checked it ---------------------------------

HOOK = Notify(url="https://hooks.example/T1", min_interval=timedelta(seconds=90), timeout=3.5)


@pytest.mark.parametrize("raw", ["0", "-1", "NaN", "Infinity", "-Infinity", "null", '"soon"'])
async def test_a_stored_bad_timeout_reads_as_the_default(shared, raw, caplog, monkeypatch):
    monkeypatch.setattr(tickwork.notify, "_warned", set())  # each test sees its warning
    async with opened(shared.handle()) as store:
        await store.add_schedule(new_schedule("t", EVERY_20S, schedule_id="old", notify=HOOK), T0)
        shared.rewrite_notify("old", with_timeout(HOOK, raw))
        with caplog.at_level(logging.WARNING, logger="tickwork.notify"):
            got = await store.get_schedule("old")
            [listed] = await store.list_schedules()
    expected = attrs.evolve(HOOK, timeout=DEFAULT_TIMEOUT)
    assert got is not None
    assert got.notify == expected
    assert listed.notify == expected
    [warning] = [r.getMessage() for r in caplog.records if r.name == "tickwork.notify"]
    assert warning.startswith(
        "a stored notify (url 'https://hooks.example/T1'): its timeout must be a "
    )
    assert warning.endswith("; using 10 s")


async def test_a_stored_timeout_of_the_old_forms_is_kept(shared):
    """What the unchecked setting allowed and read back fine still reads the same."""
    async with opened(shared.handle()) as store:
        await store.add_schedule(new_schedule("t", EVERY_20S, schedule_id="old", notify=HOOK), T0)
        for raw, expected in (("2", 2.0), ('"2.5"', 2.5), ("0.001", 0.001)):
            shared.rewrite_notify("old", with_timeout(HOOK, raw))
            got = await store.get_schedule("old")
            assert got is not None
            assert got.notify is not None
            assert got.notify.timeout == expected


async def test_a_node_starts_on_a_stored_bad_timeout_and_posts_with_the_default(
    autojump_clock, nursery, shared
):
    # With the timeout refused when read, the node would not start (it looks through the
    # stored schedules for a notify); read as it was, every POST timed out at once.
    # The grace is an hour: the autojump clock moves on while PostgreSQL answers, and a CI
    # run once saw the first run more than the default minute late, so MISSED, not FAILED.
    autojump_clock.autojump_threshold = 0.01
    receiver = await start_receiver(nursery)
    clock = VirtualClock()
    hook = Notify(url=receiver.url, min_interval=timedelta(seconds=1))
    async with opened(shared.handle()) as store:
        await store.add_schedule(
            new_schedule(
                "failing", EVERY_20S, schedule_id="old", notify=hook, grace=timedelta(hours=1)
            ),
            clock.now_us(),
        )
    shared.rewrite_notify("old", with_timeout(hook, "0"))
    async with tickwork.open_scheduler(shared.handle(), tasks=[Failing()], clock=clock) as s:
        assert s._node.hub.active  # the stored schedule's notify was found
        await wait_until(lambda: receiver.bodies, timeout=120, step=1)
    assert {(b["schedule_id"], b["event"]) for b in receiver.bodies} == {("old", "failed")}


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
async def test_a_bad_timeout_is_refused_before_anything_is_stored(store, bad):
    """On every store (memory too: it keeps the Notify objects it was given, so only a
    checked one can reach it)."""
    with pytest.raises(InvalidArgument, match=r"^Notify timeout must be a finite number"):
        await store.add_schedule(
            new_schedule("t", EVERY_20S, notify=Notify(url="http://x/", timeout=bad)), T0
        )
    assert await store.list_schedules() == []


# -- what looking for a notify costs a node that runs no notifier ---------------------


class _BusyFile(tickwork.MemoryStore):
    """A store another process writes to all the time (its change token moves at every
    poll), with schedules that take a second to list."""

    def __init__(self) -> None:
        super().__init__()
        self.token = 0
        self.listings = 0

    async def change_token(self) -> int | None:
        self.token += 1
        return self.token

    async def list_schedules(self, *, limit: int = 1000, after_id: str | None = None):  # type: ignore[no-untyped-def]
        self.listings += 1
        await trio.sleep(1)
        return await super().list_schedules(limit=limit, after_id=after_id)


async def test_a_node_without_a_notifier_looks_for_one_at_most_a_tenth_of_the_time(
    autojump_clock,
):
    store = _BusyFile()
    clock = VirtualClock()
    async with tickwork.open_scheduler(store, tasks=[Failing()], clock=clock) as s:
        started = store.listings  # the look when the node started
        await trio.sleep(100)
        assert not s._node.hub.active
    looks = store.listings - started
    # a poll every 500 ms sees a change each time: without a pause, ~100 looks of 1 s
    assert 5 <= looks <= 11, looks
