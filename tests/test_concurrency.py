"""Concurrency limits: the global ``max_concurrency`` and a per-task ``max_concurrent``.

A noisy task with a per-task limit cannot starve the others: its instances wait for a
slot without holding a worker. Lateness is counted when an instance starts, and the
statistics show the instances waiting for a slot and the time they waited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.testing import VirtualClock

S = 1_000_000


class Noisy(tickwork.Task):
    name = "noisy"
    max_concurrent: int | None = 2  # type: ignore[misc]

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.running = 0
        self.peak = 0
        self.starts: list[int] = []

    async def run(self, params: bytes) -> Any:
        self.starts.append(self.clock.now_us())
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await trio.sleep(10)
        finally:
            self.running -= 1


@pytest.mark.parametrize("limit", [2, None])
async def test_a_noisy_task_cannot_starve_the_others(autojump_clock, limit):
    clock = VirtualClock()
    noisy = Noisy(clock)
    noisy.max_concurrent = limit  # type: ignore[misc]
    quiet = Recording(clock)
    quiet.sleep = timedelta(seconds=1)
    t0 = clock.now()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[noisy, quiet], clock=clock, max_concurrency=20
    ) as sched:
        await sched.schedule_many([tickwork.NewInstance("noisy", t0) for _ in range(50)])
        quiet_at = t0 + timedelta(seconds=1)
        await sched.schedule_many([tickwork.NewInstance("rec", quiet_at) for _ in range(10)])
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == 60
    late = [(t - int(quiet_at.timestamp() * S)) / S for _, t in quiet.runs]
    if limit is None:  # the control: 20 noisy runs hold every worker for 10 s
        assert noisy.peak == 20
        assert min(late) >= 9
    else:
        assert noisy.peak == 2
        assert max(late) < 0.01  # every quiet instance started on time
        # 25 rounds of two 10 s runs
        assert (max(noisy.starts) - min(noisy.starts)) / S == pytest.approx(240, abs=0.01)


async def test_waiting_for_a_slot_is_reported_and_counted_late_only_at_start(autojump_clock):
    clock = VirtualClock()
    noisy = Noisy(clock)
    t0 = clock.now_us()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[noisy], clock=clock, max_concurrency=20
    ) as sched:
        await sched.schedule_many([tickwork.NewInstance("noisy", clock.now()) for _ in range(5)])
        await wait_until(lambda: noisy.running == 2, step=0.001, timeout=60)
        stats = sched.statistics()
        assert stats.executor.waiting_for_task_slot == 3
        assert stats.running == 2
        assert stats.executor.workers <= 2  # the waiting ones hold no worker
        await trio.sleep(9)
        # still waiting: not counted late yet (lag is the last start's, on time)
        stats = sched.statistics()
        assert stats.lag == 0
        assert stats.executor.slot_wait_us == 0
        await wait_until(lambda: len(noisy.starts) >= 3, step=0.001, timeout=60)
        assert len(noisy.starts) == 4  # the two slots freed at once
        stats = sched.statistics()
        assert stats.lag == pytest.approx(10, abs=0.01)  # it started 10 s after it was due
        assert stats.executor.slot_wait_us == pytest.approx(2 * 10 * S, abs=10_000)
        assert stats.executor.waiting_for_task_slot == 1
        await settle(sched)
        stats = sched.statistics()
    assert stats.executor.waiting_for_task_slot == 0
    # waits: 10 s, 10 s, 20 s
    assert stats.executor.slot_wait_us == pytest.approx(40 * S, abs=10_000)
    assert [(s - t0) // S for s in noisy.starts] == [0, 0, 10, 10, 20]


async def test_an_instance_waiting_for_a_slot_can_be_aborted(autojump_clock):
    clock = VirtualClock()
    noisy = Noisy(clock)
    noisy.max_concurrent = 1  # type: ignore[misc]
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[noisy], clock=clock) as sched:
        first, waiting = await sched.schedule_many(
            [tickwork.NewInstance("noisy", clock.now()) for _ in range(2)]
        )
        await wait_until(lambda: sched.statistics().executor.waiting_for_task_slot == 1, step=0.001)
        assert await sched.abort(waiting) is State.ABORTED
        assert sched.statistics().executor.waiting_for_task_slot == 0
        await settle(sched)
        assert (await sched.get(first)).state is State.SUCCEEDED
    assert len(noisy.starts) == 1


async def test_max_concurrency_bounds_every_run(autojump_clock):
    clock = VirtualClock()
    noisy = Noisy(clock)
    noisy.max_concurrent = None  # type: ignore[misc]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sched.statistics().running, noisy.running)
            await trio.sleep(0.5)

    async with (
        tickwork.open_scheduler(
            tickwork.MemoryStore(), tasks=[noisy], clock=clock, max_concurrency=7
        ) as sched,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(watch)
        await sched.schedule_many([tickwork.NewInstance("noisy", clock.now()) for _ in range(30)])
        await settle(sched)
        nursery.cancel_scope.cancel()
    assert peak == noisy.peak == 7
