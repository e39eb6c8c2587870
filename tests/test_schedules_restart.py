"""A node stopped gracefully and started again: what came due meanwhile is decided by the
misfire policy, never recorded as an overlap with a run that is not in flight.

Each test runs on the memory and SQLite stores on the virtual clock (a PostgreSQL node
takes its leases from the server's clock, so it cannot run on a virtual one; the decision
is the Executor's, the same on every store, and ``tests/test_schedules_store.py`` checks
that every store, PostgreSQL included, hands it the schedule's misfire policy). A restart
is the ``open_scheduler`` block ending and a new one opening on the same database (a new
store object for SQLite), the virtual clock running on in between (the downtime). The
node keeps its default window (1 hour), so the occurrences it held are given back at the
stop and all come due together at the restart. The schedule is per minute, so that a
store call that takes real time (the virtual clock may jump meanwhile, by the node's
shorter timers) cannot make one occurrence come due during another's start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import tickwork
from tests.support.helpers import Recording
from tickwork import Cron, State
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MIN = 60_000_000
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def trio_clock(kind: str) -> trio.testing.MockClock:
    """Virtual time; on a durable store it jumps only after a real pause (a store call in
    flight on its thread looks like every task blocked)."""
    return trio.testing.MockClock(autojump_threshold=0 if kind == "memory" else 0.01)


@pytest.fixture
def stores(kind: str, tmp_path: Path) -> Any:
    """A factory of store objects that all open the same database."""
    if kind == "memory":
        mem = tickwork.MemoryStore()
        yield lambda: mem
        return
    yield lambda: tickwork.SQLiteStore(tmp_path / "restart.db")


async def _run(
    stores: Callable[[], tickwork.Store], *, misfire: str, grace: timedelta, down_until: int
) -> tuple[dict[int, tickwork.Instance], int]:
    """Per-minute schedule: a node from 00:00:30 to 00:03:10, down until ``down_until``
    minutes and 30 s, then up for two more minutes. Returns the occurrence per fire
    minute, and how many ran before the stop (occurrences 1 .. that many)."""
    clock = VirtualClock(START + timedelta(seconds=30))
    task = Recording(clock)
    kw: dict[str, Any] = {"clock": clock}
    async with tickwork.open_scheduler(stores(), tasks=[task], **kw) as sched:
        await sched.add_schedule(
            "rec", Cron("* * * * *"), schedule_id="s", misfire=misfire, grace=grace
        )
        # (bounds inside the node's life: a bound with no shorter timer beside it is where
        # the virtual clock jumps while a store call runs on its thread)
        with trio.fail_after(3600):
            await clock.advance_to(START + timedelta(minutes=3, seconds=10))
    # 00:01 .. 00:03, and on SQLite sometimes one or two more: the virtual clock may jump
    # to the next occurrence while the stop's store calls run on the store's thread
    ran = len(task.runs)
    assert 3 <= ran < down_until
    await clock.advance_to(START + timedelta(minutes=down_until, seconds=30))
    async with tickwork.open_scheduler(stores(), tasks=[task], **kw) as sched:
        with trio.fail_after(3600):
            await clock.advance_to(START + timedelta(minutes=down_until + 2, seconds=30))
            rows = await sched.list(limit=1000)
    start_us = int(START.timestamp()) * 1_000_000
    by_minute = {
        (i.fire_at_us - start_us) // MIN: i
        for i in rows
        if i.schedule_id == "s" and i.fire_at_us is not None
    }
    return by_minute, ran


def _check(
    by_minute: dict[int, tickwork.Instance], ran: int, *, misfire: str, down: int, grace: int
) -> None:
    """Occurrences 1..``ran`` ran before the stop; ``ran+1``..``down`` came due while no
    node ran (the backlog, due together at the restart at ``down`` min 30 s); the two after
    the restart ran on time. ``grace`` in minutes: a backlog occurrence is late when it was
    due more than ``grace`` before the restart (the claim's misfire decision)."""
    ok, missed = State.SUCCEEDED, State.MISSED
    states = {m: by_minute[m].state for m in range(1, down + 3)}
    normal = [*range(1, ran + 1), down + 1, down + 2]
    assert {m: states[m] for m in normal} == dict.fromkeys(normal, ok)
    backlog = list(range(ran + 1, down + 1))
    late = [m for m in backlog if m * 60 < down * 60 + 30 - grace * 60]
    if misfire == "run_all":  # every one runs, in order
        runs = backlog
    elif misfire == "run_once":  # one run for the whole backlog, late or not
        runs = backlog[:1]
    else:  # the late ones are skipped; of the others, the first runs
        runs = [m for m in backlog if m not in late][:1]
    assert {m: states[m] for m in backlog} == {m: ok if m in runs else missed for m in backlog}
    for m in backlog:
        error = by_minute[m].error or ""
        assert "overlap" not in error
        if states[m] is missed:
            assert error.startswith(f"misfire={misfire}: ")
            if m not in late:  # coalesced at due time into the one that ran
                assert f"occurrence {by_minute[runs[0]].id} " in error


@pytest.mark.parametrize("misfire", ["run_once", "run_all", "skip"])
async def test_a_short_downtime_within_grace(trio_clock, stores, misfire):
    """Down from 00:03:10 to 00:08:30 with grace 10 min: 00:04 .. 00:08 came due while no
    node ran; none is late, and no run was in flight when they came due."""
    by_minute, ran = await _run(stores, misfire=misfire, grace=timedelta(minutes=10), down_until=8)
    _check(by_minute, ran, misfire=misfire, down=8, grace=10)


@pytest.mark.parametrize("misfire", ["run_once", "run_all", "skip"])
async def test_a_downtime_with_late_and_recent_occurrences(trio_clock, stores, misfire):
    """Down from 00:03:10 to 00:06:30 with the default grace (1 min): 00:04 and 00:05 are
    late (a misfire), 00:06 is not, and all three are due at the restart."""
    by_minute, ran = await _run(stores, misfire=misfire, grace=timedelta(minutes=1), down_until=6)
    _check(by_minute, ran, misfire=misfire, down=6, grace=1)
