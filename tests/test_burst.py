"""A burst: tens of thousands of instances due at the same second.

They are claimed, run and recorded with memory bounded by ``max_in_memory`` (checked at
every iteration of trio's scheduler loop, through an Instrument), and the node stays
responsive while the burst drains: ``schedule()`` and ``abort()`` answer within a bounded
number of scheduler-loop iterations and of virtual time. No wall-clock timing here; the
benchmark suite measures rates (``benchmarks/``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio
import trio.abc

import tickwork
from tests.support.helpers import settle
from tickwork import State
from tickwork.testing import VirtualClock

N = 50_000
MAX_IN_MEMORY = 5_000


class Work(tickwork.Task):
    name = "work"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, params: bytes) -> Any:
        self.runs += 1
        await trio.sleep(0.05)


class Loop(trio.abc.Instrument):
    """Counts scheduler-loop iterations and checks the node's bounds at each one."""

    def __init__(self) -> None:
        self.ticks = 0
        self.sched: tickwork.Scheduler | None = None
        self.peak_in_memory = 0
        self.peak_ready = 0

    def after_io_wait(self, timeout: float) -> None:
        self.ticks += 1
        if self.sched is not None:
            stats = self.sched.statistics()
            self.peak_in_memory = max(self.peak_in_memory, stats.in_memory)
            self.peak_ready = max(self.peak_ready, stats.ready + stats.running)


async def _timed(loop: Loop, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, int, float]:
    """(result, scheduler-loop iterations, virtual seconds) of one call."""
    ticks, start = loop.ticks, trio.current_time()
    result = await fn(*args, **kwargs)
    return result, loop.ticks - ticks, trio.current_time() - start


async def test_a_burst_drains_in_bounded_memory_and_the_node_stays_responsive(autojump_clock):
    clock = VirtualClock()
    task = Work()
    loop = Loop()
    trio.lowlevel.add_instrument(loop)
    probes: list[tuple[str, int, float]] = []
    try:
        async with tickwork.open_scheduler(
            tickwork.MemoryStore(),
            tasks=[task],
            clock=clock,
            max_in_memory=MAX_IN_MEMORY,
            max_concurrency=500,
            batch_size=1_000,
        ) as sched:
            now = clock.now()
            ids: list[int] = []
            for _ in range(N // 10_000):
                ids += await sched.schedule_many(
                    [tickwork.NewInstance("work", now) for _ in range(10_000)]
                )
            loop.sched = sched
            aborted = []
            while sched.statistics().counts["SUCCEEDED"] < N // 2:
                # while it drains: schedule one, abort a held one and a pending one
                _, ticks, took = await _timed(
                    loop, sched.schedule, "work", at=clock.now() + timedelta(minutes=5)
                )
                probes.append(("schedule", ticks, took))
                held = _a_waiting_instance(sched)
                if held is not None:
                    state, ticks, took = await _timed(loop, sched.abort, held)
                    assert state is State.ABORTED
                    probes.append(("abort held", ticks, took))
                    aborted.append(held)
                pending = ids[-1 - len(aborted)]
                state, ticks, took = await _timed(loop, sched.abort, pending)
                assert state is State.ABORTED
                probes.append(("abort pending", ticks, took))
                aborted.append(pending)
                await trio.sleep(0.2)
            await settle(sched)
            succeeded = await sched.count(state=State.SUCCEEDED)
            stats = sched.statistics()
    finally:
        trio.lowlevel.remove_instrument(loop)
    assert succeeded == N - len(aborted) + sum(1 for p in probes if p[0] == "schedule")
    assert task.runs == succeeded
    assert stats.in_memory == 0
    # memory: never more held than max_in_memory, at any iteration of the loop
    assert MAX_IN_MEMORY // 2 <= loop.peak_in_memory <= MAX_IN_MEMORY
    assert loop.peak_ready <= MAX_IN_MEMORY
    # responsiveness: every call answered within a few loop iterations and no virtual time
    kinds = {kind for kind, _, _ in probes}
    assert kinds == {"schedule", "abort held", "abort pending"}
    assert len(probes) > 30
    bounds = {"schedule": 3, "abort pending": 5, "abort held": 20}  # measured: 1, 2, 8
    for kind, ticks, took in probes:
        assert ticks <= bounds[kind], (kind, ticks)
        assert took <= 0.001, (kind, took)


def _a_waiting_instance(sched: tickwork.Scheduler) -> int | None:
    """An instance the node holds, waiting for a worker (private look, for the probe)."""
    ready = sched._node.actors.executor._ready  # private: the probe picks one held now
    return ready[len(ready) // 2].id if len(ready) > 2 else None
