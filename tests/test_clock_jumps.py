"""Wall-clock jumps (an NTP step, a suspended laptop) on an injected clock.

A jump back never fires anything early; a jump forward strands nothing (what became due
runs at once) and, even past the lease, never makes the node take its own claims again
(which would run them twice, or fail a running at-most-once instance).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import trio

import tickwork
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork._time import from_us
from tickwork.testing import VirtualClock

S = 1_000_000


def _us(clock: VirtualClock, delta: timedelta) -> int:
    return clock.now_us() + int(delta.total_seconds() * S)


async def test_a_jump_back_never_fires_anything_early(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        due = _us(clock, timedelta(minutes=10))
        iid = await sched.schedule("rec", at=from_us(due))
        await trio.sleep(60)  # claimed: waiting in the Timekeeper
        assert sched.statistics().waiting == 1
        clock.jump(-timedelta(hours=1))
        await trio.sleep(60 * 60)  # 61 min of real time: the wall clock reads due - 1 s
        assert task.runs == []
        assert (await sched.get(iid)).state is State.CLAIMED  # still held, waiting
        await wait_until(lambda: task.runs, step=0.01)
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED
    [(_, ran_at)] = task.runs
    assert due <= ran_at < due + 20_000  # at its wall time: neither early nor stranded


async def test_a_jump_forward_runs_what_became_due_and_strands_nothing(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    start = clock.now()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, window=timedelta(hours=1)
    ) as sched:
        offsets = [timedelta(minutes=10), timedelta(minutes=50), timedelta(hours=3)]
        for off in offsets:
            await sched.schedule("rec", at=start + off, params=str(off).encode())
        await trio.sleep(60)
        jumped_at = trio.current_time()
        clock.jump(timedelta(hours=2))  # the laptop slept for two hours
        await wait_until(lambda: len(task.runs) == 2, step=0.001)
        assert trio.current_time() - jumped_at < 0.1  # at once, not after some poll
        await wait_until(lambda: len(task.runs) == 3)
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 3
    ran = dict(task.runs)
    three_h = int((start + offsets[2]).timestamp() * S)
    assert three_h <= ran[str(offsets[2]).encode()] < three_h + 20_000  # on its wall time


class Long(Recording):
    def __init__(self, clock: VirtualClock, name: str, delivery: str) -> None:
        super().__init__(clock, name)
        self.delivery = delivery  # type: ignore[misc]
        self.sleep = timedelta(seconds=30)


async def test_a_jump_past_the_lease_never_takes_the_nodes_own_claims_again(autojump_clock):
    clock = VirtualClock()
    alo = Long(clock, "alo", "at_least_once")
    amo = Long(clock, "amo", "at_most_once")
    store = FaultyStore(tickwork.MemoryStore())
    now = clock.now()
    async with tickwork.open_scheduler(
        store, tasks=[alo, amo], clock=clock, lease=timedelta(seconds=60)
    ) as sched:
        ids = await sched.schedule_many(
            [
                tickwork.NewInstance("alo", now, b"running"),
                tickwork.NewInstance("amo", now, b"running"),
                tickwork.NewInstance("alo", now + timedelta(minutes=30), b"claimed"),
            ]
        )
        await wait_until(lambda: sched.statistics().running == 2, step=0.001)
        assert sched.statistics().in_memory == 3
        # ten minutes forward: every lease this node holds looks expired now
        clock.jump(timedelta(minutes=10))
        # a new instance wakes the Puller at once: it claims before any renewal
        ids.append(await sched.schedule("alo", at=clock.now(), params=b"new"))
        await trio.sleep(0.001)
        await wait_until(lambda: len(alo.runs) + len(amo.runs) == 4)
        await settle(sched)
        states = [(await sched.get(i)).state for i in ids]
        stats = sched.statistics()
    assert states == [State.SUCCEEDED] * 4
    runs = Counter(p for p, _ in alo.runs + amo.runs)
    assert runs == {b"running": 2, b"claimed": 1, b"new": 1}  # one per instance
    assert stats.recorder.refused == 0  # no outcome lost to a claim taken from under it


async def test_renewals_go_on_after_a_jump_back(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    task.sleep = timedelta(hours=1)
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, lease=timedelta(seconds=30)
    ) as sched:
        await sched.schedule("rec", at=clock.now())
        await wait_until(lambda: sched.statistics().running == 1, step=0.001)
        clock.jump(-timedelta(days=1))
        before = store.calls["renew"]
        await trio.sleep(300)
        # every lease/3 = 10 s of elapsed time, whatever the wall clock says
        assert store.calls["renew"] - before == pytest.approx(30, abs=1)
        inst = await sched.get(1)
        assert inst.lease_until_us is not None
        assert inst.lease_until_us > clock.now_us()


async def test_a_retry_backoff_counts_from_the_wall_clock_after_a_jump(autojump_clock):
    clock = VirtualClock()

    class Fails(Recording):
        max_attempts = 2
        backoff_base = backoff_cap = timedelta(minutes=10)

    task = Fails(clock, "fails")
    task.fail = ConnectionError("x")
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        await sched.schedule("fails", at=clock.now())
        await wait_until(lambda: sched.statistics().recorder.retried == 1, step=0.001)
        retry = (await sched.get(1)).run_at_us
        clock.jump(timedelta(hours=1))  # the retry is overdue now: it runs at once
        await wait_until(lambda: len(task.runs) == 2, step=0.001)
        assert task.runs[1][1] >= retry
