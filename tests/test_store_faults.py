"""Store faults: failing calls are retried with backoff; a store that stays broken stops
the node with a clear StoreError instead of a hang.

Faults come from FaultyStore (``tests/support/faults.py``), raised before the call reaches the
store (as a failed one-transaction call changes nothing): ``StoreUnavailable`` and the raw
errors a SQLite store or the OS raise. One test locks a real SQLite file instead.
"""

from __future__ import annotations

import errno
import sqlite3
from collections import Counter
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

import tickwork
import tickwork.stores.sqlite._open
import tickwork.stores.sqlite._store
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.errors import StoreError, StoreUnavailable
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

ERRORS = {
    "unavailable": lambda: StoreUnavailable("database is locked (SQLITE_BUSY)"),
    "sqlite-locked": lambda: sqlite3.OperationalError("database is locked"),
    "sqlite-full": lambda: sqlite3.OperationalError("database or disk is full"),
    "disk-full": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "io-error": lambda: OSError(errno.EIO, "Input/output error"),
}


class Once(Recording):
    delivery = "at_most_once"


async def _terminal_events(sub: tickwork.Subscription, out: Counter[int]) -> None:
    async for ev in sub:
        if isinstance(ev, tickwork.TransitionEvent) and ev.to_state.terminal:
            out[ev.instance_id] += 1


@pytest.mark.parametrize("error", sorted(ERRORS))
@pytest.mark.parametrize(
    "method", ["insert", "claim", "next_pending_at", "start", "finish", "renew", "get"]
)
async def test_a_failing_call_is_retried_and_nothing_changes_twice(
    autojump_clock, caplog, method, error
):
    clock = VirtualClock()
    task = Once(clock)  # at-most-once: exercises start too
    store = FaultyStore(tickwork.MemoryStore())
    terminal: Counter[int] = Counter()
    async with (
        tickwork.open_scheduler(
            store,
            tasks=[task],
            clock=clock,
            lease=timedelta(seconds=3),
            batch_size=10,
            # insert and get are the API's calls (schedule_many, get): let them retry too
            user_call_retry=timedelta(minutes=1),
        ) as sched,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_terminal_events, sched.subscribe(), terminal)
        store.fail(method, 3, ERRORS[error]())
        for _ in range(3):  # more faults keep coming as the calls are retried
            store.fail(method, 1, ERRORS[error]())
        ids = await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now(), str(i).encode()) for i in range(25)]
        )
        late = await sched.schedule("rec", at=clock.now() + timedelta(seconds=30), params=b"L")
        await trio.sleep(40)
        await settle(sched)
        assert [(await sched.get(i)).state for i in [*ids, late]] == [State.SUCCEEDED] * 26
        health = sched.statistics().store
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert store.failed[method] == 6, "the faults were not all hit: nothing tested"
    expected = Counter([str(i).encode() for i in range(25)] + [b"L"])
    assert Counter(p for p, _ in task.runs) == expected
    assert terminal == Counter([*ids, late])
    assert health.healthy
    assert health.failures == 6
    assert health.last_error is not None
    assert method in health.last_error
    assert "retrying with backoff" in caplog.text
    assert "store recovered" in caplog.text


async def test_an_outage_is_reported_while_it_lasts(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        store.break_("finish", sqlite3.OperationalError("disk I/O error"))
        ids = await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now()) for _ in range(10)]
        )
        await trio.sleep(60)
        stats = sched.statistics()
        # the node keeps running: the runs happened, their outcomes wait for the store
        assert len(task.runs) == 10
        assert not stats.store.healthy
        assert 55 <= stats.store.degraded_for <= 60
        assert stats.store.last_error == "finish: OperationalError: disk I/O error"
        assert stats.counts["SUCCEEDED"] == 0
        assert [(await sched.get(i)).state for i in ids] == [State.CLAIMED] * 10
        store.heal()
        await settle(sched)
        stats = sched.statistics()
        assert stats.store.healthy
        assert stats.store.degraded_for == 0
        assert [(await sched.get(i)).state for i in ids] == [State.SUCCEEDED] * 10
    assert len(task.runs) == 10


@pytest.mark.parametrize("error", sorted(ERRORS))
async def test_user_calls_fail_fast_while_the_actors_keep_retrying(autojump_clock, error):
    clock = VirtualClock()
    task = Recording(clock)
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        [iid] = await sched.schedule_many([tickwork.NewInstance("rec", clock.now())])
        await settle(sched)
        due = await sched.schedule("rec", at=clock.now() + timedelta(seconds=5))
        store.break_("*", ERRORS[error]())
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "schedule": partial(sched.schedule, "rec", at=clock.now()),
            "get": partial(sched.get, iid),
            "abort": partial(sched.abort, due),
            "list": sched.list,
            "count": sched.count,
            "history": partial(sched.history, iid),
            "add_schedule": partial(
                sched.add_schedule, "rec", tickwork.Interval(timedelta(hours=1))
            ),
        }
        for name, call in calls.items():
            before = trio.current_time()
            with pytest.raises(StoreUnavailable, match="the store is unavailable") as info:
                await call()
            assert trio.current_time() == before, name  # at once, not after retries
            assert isinstance(info.value.__cause__, type(ERRORS[error]())), name
        await trio.sleep(30)
        # meanwhile the actors retried (claiming the due instance), and the node runs on
        health = sched.statistics().store
        assert not health.healthy
        assert health.degraded_for >= 25
        assert store.failed["claim"] + store.failed["next_pending_at"] > 1
        store.heal()  # the actors' next retry (within the 5 s backoff cap) goes through
        await wait_until(lambda: sched.statistics().counts["SUCCEEDED"] == 2, timeout=10)
        assert (await sched.get(due)).state is State.SUCCEEDED
        await wait_until(lambda: sched.statistics().store.healthy, timeout=10)
    assert [p for p, _ in task.runs] == [b"", b""]


async def test_user_calls_retry_as_long_as_configured(autojump_clock):
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(
        store, tasks=[Recording(clock)], clock=clock, user_call_retry=timedelta(seconds=10)
    ) as sched:
        [iid] = await sched.schedule_many([tickwork.NewInstance("rec", clock.now())])
        store.break_("get")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 4)
            got = []
            nursery.start_soon(lambda: _append(got, sched.get(iid)))
            await trio.sleep(4)
            store.heal()
        assert [i.id for i in got] == [iid]  # an outage shorter than the setting is waited out
        store.break_("get")
        before = trio.current_time()
        with pytest.raises(StoreUnavailable):
            await sched.get(iid)
        assert 10 <= trio.current_time() - before <= 15  # the setting plus one backoff step
        store.heal()


async def _append(out: list[Any], call: Awaitable[Any]) -> None:
    out.append(await call)


async def test_user_call_retry_is_checked():
    with pytest.raises(tickwork.InvalidArgument, match="user_call_retry must be a timedelta"):
        async with tickwork.open_scheduler(
            tickwork.MemoryStore(), tasks=[], user_call_retry=timedelta(seconds=-1)
        ):
            pass


async def test_a_store_broken_past_the_limit_stops_the_node(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    store = FaultyStore(tickwork.MemoryStore())
    start = trio.current_time()

    async def node() -> None:
        async with tickwork.open_scheduler(
            store, tasks=[task], clock=clock, store_outage_limit=timedelta(seconds=30)
        ) as sched:
            await sched.schedule_many([tickwork.NewInstance("rec", clock.now()) for _ in range(5)])
            store.break_("*", StoreUnavailable("database is locked"))
            await trio.sleep_forever()

    [error] = await _stops(node)
    took = trio.current_time() - start
    assert isinstance(error, StoreError)
    assert not isinstance(error, StoreUnavailable)
    assert "the store has been failing for" in str(error)
    assert "stopping the node" in str(error)
    assert 30 <= took <= 40  # the limit plus at most one backoff step (5 s cap)
    # a restart on the repaired store finishes everything; at-least-once: the runs whose
    # outcome never landed run again
    store.heal()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 5


async def test_one_call_failing_for_good_stops_the_node_while_others_succeed(autojump_clock):
    # other calls succeed meanwhile (each ends "the outage"): renew must still give up
    clock = VirtualClock()
    task = Recording(clock)
    task.sleep = timedelta(hours=1)
    store = FaultyStore(tickwork.MemoryStore())

    async def node() -> None:
        async with tickwork.open_scheduler(
            store,
            tasks=[task],
            clock=clock,
            lease=timedelta(seconds=3),
            store_outage_limit=timedelta(seconds=30),
        ) as sched:
            store.break_("renew", StoreUnavailable("connection lost"))
            while True:
                await sched.schedule("rec", at=clock.now())
                await trio.sleep(1)

    [error] = await _stops(node)
    assert isinstance(error, StoreError)
    assert "renew: StoreUnavailable: connection lost" in str(error)


async def test_a_non_transient_error_stops_the_node_at_once(autojump_clock):
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())
    start = trio.current_time()

    async def node() -> None:
        async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as s:
            store.fail("claim", 1, RuntimeError("bug in a custom store"))
            await s.schedule("rec", at=clock.now())
            await trio.sleep_forever()

    [error] = await _stops(node)
    assert isinstance(error, RuntimeError)
    assert trio.current_time() - start < 1
    assert store.failed["claim"] == 1


async def _stops(node: Callable[[], Awaitable[None]]) -> list[BaseException]:
    """Run ``node`` until it stops by itself (not a hang); returns what it raised."""
    with pytest.raises(ExceptionGroup) as info, trio.fail_after(3600):
        await node()
    return _leaves(info.value)


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


# -- a real SQLite lock ----------------------------------------------------------------------


def _short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite waits 20 ms for another connection's lock (not 10 s): where connections are
    opened, and where a call made on the trio thread sets it back."""
    monkeypatch.setattr(tickwork.stores.sqlite._open, "BUSY_TIMEOUT_MS", 20)
    monkeypatch.setattr(tickwork.stores.sqlite._store, "BUSY_TIMEOUT_MS", 20)


async def test_a_locked_sqlite_database_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # another process holds the write lock longer than the busy timeout: SQLITE_BUSY
    _short_busy_timeout(monkeypatch)
    db = tmp_path / "locked.db"
    task = Recording(VirtualClock())  # its clock is only for the run records
    async with tickwork.open_scheduler(
        tickwork.SQLiteStore(db),
        tasks=[task],
        poll_interval=timedelta(milliseconds=50),
        user_call_retry=timedelta(seconds=30),  # schedule() waits the lock out
    ) as sched:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(sched.schedule, "rec", at=sched.now()))
                    await wait_until(lambda: not sched.statistics().store.healthy, step=0.01)
                    await trio.sleep(0.5)
                    assert "SQLITE_BUSY" in (sched.statistics().store.last_error or "")
                    other.execute("ROLLBACK")
        finally:
            other.close()
        with trio.fail_after(10):
            while await sched.count(state=State.SUCCEEDED) < 1:
                await trio.sleep(0.02)
        assert sched.statistics().store.healthy
    assert len(task.runs) == 1
    assert "retrying with backoff" in caplog.text


async def test_a_locked_sqlite_database_fails_a_user_call_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _short_busy_timeout(monkeypatch)
    db = tmp_path / "locked.db"
    async with tickwork.open_scheduler(
        tickwork.SQLiteStore(db), tasks=[Recording(VirtualClock())]
    ) as sched:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with trio.fail_after(5), pytest.raises(StoreUnavailable, match="locked") as info:
                await sched.schedule("rec", at=sched.now())
            assert isinstance(info.value.__cause__, StoreUnavailable | sqlite3.OperationalError)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await sched.count() == 0
        await sched.schedule("rec", at=sched.now())  # the lock gone, it works again
        assert await sched.count() == 1
