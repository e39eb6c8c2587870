"""Recurring schedules on a running node, on the virtual clock: weeks run in milliseconds.

A restart is the node's ``open_scheduler`` block ending and a new one opening on the same
store, with the virtual clock running on in between (the downtime).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.helpers import Recording
from tickwork import Cron, Interval, State
from tickwork.schedules.triggers import jitter_us
from tickwork.testing import VirtualClock

S = 1_000_000
MIN = 60 * S
#: Days of virtual time: a long lease keeps the heartbeat (every lease/3) from dominating.
LONG_LEASE = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def us(dt: datetime) -> int:
    return int(dt.timestamp()) * S


async def occurrences(sched: tickwork.Scheduler, schedule_id: str) -> list[tickwork.Instance]:
    found = await sched.list(limit=10_000)
    return sorted((i for i in found if i.schedule_id == schedule_id), key=lambda i: i.id)


async def rows_after(store: tickwork.MemoryStore, schedule_id: str) -> list[tickwork.Instance]:
    await store.open()
    try:
        found = await store.list(limit=10_000)
    finally:
        await store.aclose()
    return sorted((i for i in found if i.schedule_id == schedule_id), key=lambda i: i.id)


def fires_between(trigger: Cron | Interval, start: datetime, end: datetime) -> list[int]:
    out = []
    at = trigger.next_after_us(us(start))
    while at is not None and at <= us(end):
        out.append(at)
        at = trigger.next_after_us(at)
    return out


class Sleeper(Recording):
    """Records (params, start) and sleeps ``sleep``; keeps how many run at once."""

    def __init__(self, clock: VirtualClock, sleep: timedelta) -> None:
        super().__init__(clock, "sleeper")
        self.sleep = sleep
        self.running = 0
        self.most = 0
        self.ends: list[int] = []

    async def run(self, params: bytes) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().run(params)
        finally:
            self.running -= 1
            self.ends.append(self.clock.now_us())


async def node(
    store: tickwork.Store,
    clock: VirtualClock,
    tasks: list[tickwork.Task],
    until: datetime,
    **kw: Any,
) -> None:
    """Run a node until the wall clock reads ``until``."""
    kw.setdefault("shutdown_grace", timedelta(0))
    kw.setdefault("lease", LONG_LEASE)
    async with tickwork.open_scheduler(store, tasks=tasks, clock=clock, **kw):
        await clock.advance_to(until)


# -- weeks of schedule ---------------------------------------------------------------------


async def test_weeks_of_cron_and_interval_fire_at_each_time(autojump_clock):
    start = utc(2030, 3, 18)  # a Monday; Berlin moves to summer time on the 31st
    clock = VirtualClock(start)
    task = Recording(clock)
    store = tickwork.MemoryStore()
    workdays = Cron("0 9 * * MON-FRI", "Europe/Berlin")
    six = Interval(timedelta(hours=6))
    end = start + timedelta(weeks=3)
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock, lease=LONG_LEASE) as sched:
        sid = await sched.add_schedule("rec", workdays, schedule_id="workdays", params=b"w")
        assert sid == "workdays"
        await sched.add_schedule("rec", six, params=b"six")
        await clock.advance_to(end)
        await trio.sleep(1)
        stats = sched.statistics()
    got = {p: [t for q, t in task.runs if q == p] for p in (b"w", b"six")}
    assert got[b"w"] == fires_between(workdays, start, end)
    assert len(got[b"w"]) == 15
    # 09:00 Berlin is 08:00 UTC in winter, 07:00 UTC in summer
    assert {datetime.fromtimestamp(t / S, UTC).hour for t in got[b"w"]} == {7, 8}
    assert got[b"six"] == fires_between(six, start, end)
    assert stats.counts["MISSED"] == 0


async def test_jitter_delays_each_occurrence_deterministically(autojump_clock):
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Recording(clock)
    trigger = Interval(timedelta(minutes=10))
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        await sched.add_schedule("rec", trigger, schedule_id="j", jitter=timedelta(minutes=2))
        await clock.advance_to(start + timedelta(hours=2, minutes=5))
    fires = fires_between(trigger, start, start + timedelta(hours=2))
    expected = [f + jitter_us("j", f, 2 * MIN) for f in fires]
    assert [t for _, t in task.runs] == expected
    assert len({t - f for t, f in zip(expected, fires, strict=True)}) > 1  # spread out


# -- downtime: the misfire policy ----------------------------------------------------------


@pytest.mark.parametrize("misfire", ["run_once", "run_all", "skip"])
async def test_hours_of_downtime_with_each_misfire_policy(autojump_clock, misfire):
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Sleeper(clock, timedelta(seconds=1))
    store = tickwork.MemoryStore()
    trigger = Cron("*/10 * * * *")
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await sched.add_schedule("sleeper", trigger, schedule_id="s", misfire=misfire)
        await clock.advance_to(start + timedelta(hours=1, minutes=5))
    assert len(task.runs) == 6  # 00:10 .. 01:00
    # down from 01:05 to 04:05: 01:10 .. 04:00 are due meanwhile (18 fire times)
    restart = start + timedelta(hours=4, minutes=5)
    await clock.advance_to(restart)
    await node(store, clock, [task], restart + timedelta(minutes=30))
    rows = await rows_after(store, "s")
    by_fire = {i.fire_at_us: i for i in rows}
    assert len(by_fire) == len(rows)  # no fire time twice
    late = fires_between(trigger, start + timedelta(hours=1, minutes=5), restart)
    assert len(late) == 18
    caught_up = [t for _, t in task.runs[6:] if t < us(restart + timedelta(minutes=5))]
    missed = [f for f in late if by_fire[f].state is State.MISSED]
    if misfire == "run_once":
        assert caught_up == [us(restart)]
        assert by_fire[late[0]].state is State.SUCCEEDED
        assert missed == late[1:]
    elif misfire == "run_all":
        # every one, in order, one after another (each takes a second)
        assert caught_up == [us(restart) + k * S for k in range(18)]
        assert missed == []
        ran = sorted((i for i in rows if i.fire_at_us in late), key=lambda i: i.fire_at_us)
        assert [i.state for i in ran] == [State.SUCCEEDED] * 18
    else:
        assert caught_up == []
        assert missed == late
    assert all(f"misfire={misfire}" in (by_fire[f].error or "") for f in missed)
    # and then on time again: 04:10, 04:20, 04:30
    after = [t for _, t in task.runs if t >= us(restart + timedelta(minutes=5))]
    assert after == fires_between(trigger, restart, restart + timedelta(minutes=30))[:3]


# -- overlap -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", ["allow", "skip", "queue", "cancel_previous"])
async def test_a_long_task_with_each_overlap_policy(autojump_clock, overlap):
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Sleeper(clock, timedelta(minutes=25))
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, shutdown_grace=timedelta(0)
    ) as sched:
        await sched.add_schedule("sleeper", Cron("*/10 * * * *"), schedule_id="s", overlap=overlap)
        await clock.advance_to(start + timedelta(minutes=59))
        rows = await occurrences(sched, "s")
    starts = [(t - us(start)) // MIN for _, t in task.runs]
    by_minute = {(i.fire_at_us - us(start)) // MIN: i for i in rows if i.fire_at_us}
    state = {m: i.state for m, i in by_minute.items() if m < 59}
    if overlap == "allow":
        assert starts == [10, 20, 30, 40, 50]
        assert task.most == 3
    elif overlap == "skip":
        assert starts == [10, 40]
        assert {m for m, s in state.items() if s is State.MISSED} == {20, 30, 50}
        assert "overlap=skip" in (by_minute[20].error or "")
    elif overlap == "queue":
        # 00:20 waits for 00:10 and starts at 00:35; 00:30 finds 00:20 waiting: MISSED
        assert starts == [10, 35]
        assert {m for m, s in state.items() if s is State.MISSED} == {30, 50}
        assert "overlap=queue" in (by_minute[30].error or "")
        assert state[40] is State.CLAIMED  # waiting for 00:20's run when the node stopped
    else:
        # each newer one cancels the running one, which ends ABORTED with the reason
        assert starts == [10, 20, 30, 40, 50]
        assert task.most == 1
        assert {m for m, s in state.items() if s is State.ABORTED} == {10, 20, 30, 40}
        assert "overlap=cancel_previous" in (by_minute[10].error or "")
    assert task.most == (3 if overlap == "allow" else 1)


# -- pause, resume, remove -----------------------------------------------------------------


async def test_pause_and_resume(autojump_clock):
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Recording(clock)
    store = tickwork.MemoryStore()
    trigger = Cron("*/10 * * * *")
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await sched.add_schedule("rec", trigger, schedule_id="s")
        await clock.advance_to(start + timedelta(minutes=25))
        paused = await sched.pause_schedule("s")
        assert paused.paused
        await clock.advance_to(start + timedelta(hours=2, minutes=32))
        assert len(task.runs) == 2
        resumed = await sched.resume_schedule("s")
        assert not resumed.paused
        await clock.advance_to(start + timedelta(hours=3, minutes=5))
        rows = await occurrences(sched, "s")
        with pytest.raises(tickwork.NotFound):
            await sched.pause_schedule("nope")
    minutes = [(t - us(start)) // MIN for _, t in task.runs]
    assert minutes == [10, 20, 160, 170, 180]
    missed = [i for i in rows if i.state is State.MISSED]
    # the occurrences already in the node's window when it was paused came due: MISSED
    assert missed
    assert all(i.error == "schedule paused when this occurrence came due" for i in missed)
    assert all(us(start) + 30 * MIN <= i.fire_at_us <= us(start) + 90 * MIN for i in missed)
    fires = [i.fire_at_us for i in rows]
    assert len(fires) == len(set(fires))


async def test_remove_while_an_occurrence_runs(autojump_clock):
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Sleeper(clock, timedelta(minutes=15))
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await sched.add_schedule("sleeper", Cron("*/10 * * * *"), schedule_id="s")
        await clock.advance_to(start + timedelta(minutes=15))
        assert task.running == 1
        before = len(await occurrences(sched, "s"))
        await sched.remove_schedule("s")
        with pytest.raises(tickwork.NotFound):
            await sched.get_schedule("s")
        await clock.advance_to(start + timedelta(hours=3))
        rows = await occurrences(sched, "s")
    assert [(t - us(start)) // MIN for t in task.ends] == [25]  # it ran to its end
    assert len(task.runs) == 1
    assert len(rows) == before  # nothing new was created
    assert rows[0].state is State.SUCCEEDED
    assert {i.state for i in rows[1:]} == {State.ABORTED}
    assert {i.error for i in rows[1:]} == {"schedule removed before this occurrence ran"}


async def test_replacing_a_schedule_at_startup(autojump_clock):
    """An app that adds its schedules at start with replace=True, definition changed."""
    start = utc(2030, 1, 1)
    clock = VirtualClock(start)
    task = Recording(clock)
    store = tickwork.MemoryStore()
    await node(store, clock, [task], start + timedelta(minutes=5))
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await sched.add_schedule("rec", Cron("*/10 * * * *"), schedule_id="s")
        await clock.advance_to(start + timedelta(minutes=25))
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        await trio.sleep(1)  # the node has claimed its window of the old definition
        with pytest.raises(tickwork.InvalidArgument, match="replace=True"):
            await sched.add_schedule("rec", Cron("*/15 * * * *"), schedule_id="s")
        await sched.add_schedule("rec", Cron("*/15 * * * *"), schedule_id="s", replace=True)
        await clock.advance_to(start + timedelta(hours=1, minutes=5))
        rows = await occurrences(sched, "s")
    minutes = [(t - us(start)) // MIN for _, t in task.runs]
    assert minutes == [10, 20, 30, 45, 60]
    replaced = [i for i in rows if i.state is State.ABORTED]
    assert replaced
    assert all(i.fire_at_us is None and "replaced" in (i.error or "") for i in replaced)


# -- restarts across a daylight-saving change ----------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "start", "stop", "restart", "end", "expected"),
    [
        # Berlin springs forward 02:00 -> 03:00 CET/CEST on 2026-03-29: 02:30 fires once at
        # 03:00 CEST (01:00 UTC); the node is down across the gap and back 30 s later.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 12),
            utc(2026, 3, 29, 0, 59, 30),
            utc(2026, 3, 29, 1, 0, 30),
            utc(2026, 3, 30, 12),
            [utc(2026, 3, 29, 1, 0, 30), utc(2026, 3, 30, 0, 30)],
        ),
        # New York falls back 02:00 EDT -> 01:00 EST on 2026-11-01: 01:30 fires once, in
        # the first pass (05:30 UTC); the node restarts inside the repeated hour.
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            utc(2026, 11, 1, 6),
            utc(2026, 11, 1, 6, 10),
            utc(2026, 11, 2, 12),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
        # hourly follows real time: 01:00 EDT and 01:00 EST both fire, each once, with a
        # restart between them.
        (
            "0 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 3, 30),
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 5, 40),
            utc(2026, 11, 1, 7, 30),
            [utc(2026, 11, 1, h) for h in (4, 5, 6, 7)],
        ),
    ],
)
async def test_restart_in_the_middle_of_a_dst_change(  # noqa: PLR0917 - parametrized
    autojump_clock, expr, zone, start, stop, restart, end, expected
):
    clock = VirtualClock(start)
    task = Recording(clock)
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock, lease=LONG_LEASE) as sched:
        await sched.add_schedule("rec", Cron(expr, zone), schedule_id="dst")
        await clock.advance_to(stop)
    await clock.advance_to(restart)
    await node(store, clock, [task], end)
    assert [t for _, t in task.runs] == [us(e) for e in expected]
    rows = await rows_after(store, "dst")
    fires = [i.fire_at_us for i in rows]
    assert fires == sorted(set(fires))  # written in order, none twice
    assert not [i for i in rows if i.state is State.MISSED]


# -- the API refuses bad input -------------------------------------------------------------


async def test_add_schedule_refuses_bad_input(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
    ) as sched:
        with pytest.raises(tickwork.UnknownTask):
            await sched.add_schedule("nope", Cron("* * * * *"))
        with pytest.raises(tickwork.InvalidArgument, match="replace must be True or False"):
            await sched.add_schedule(
                "rec",
                Cron("* * * * *"),
                replace="yes",  # type: ignore[arg-type]
            )
        with pytest.raises(tickwork.InvalidArgument, match="limit must be"):
            await sched.list_schedules(limit=0)
        with pytest.raises(tickwork.NotFound):
            await sched.remove_schedule("nope")
        with pytest.raises(tickwork.NotFound):
            await sched.resume_schedule("nope")
        with pytest.raises(tickwork.InvalidArgument, match="schedule_id"):
            await sched.get_schedule("has space")
        assert await sched.list_schedules() == []


def test_the_schedules_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "schedules.py"
    proc = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tick from cron" in proc.stdout
    assert "added every-second, then every-second again: one schedule" in proc.stdout
    assert "every-two-seconds: every 2s from 1970-01-01T00:00:00+00:00" in proc.stdout
