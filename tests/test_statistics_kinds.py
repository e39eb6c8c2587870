"""``statistics()`` keeps gauges (what the node holds now) apart from counters (totals
since it started): gauges go up and down, counters only grow, and the HTTP API and
``/metrics`` read them as such."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import attrs
import trio

import tickwork
from tests.support.helpers import Recording, settle
from tests.support.http_support import in_process
from tickwork.testing import VirtualClock


def _counter_values(c: tickwork.Counters) -> dict[str, float]:
    values = {k: v for k, v in attrs.asdict(c).items() if not isinstance(v, dict)}
    values.update({f"ended.{k}": v for k, v in c.ended.items()})
    return values


async def test_gauges_rise_and_fall_while_counters_only_grow(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    task.sleep = timedelta(seconds=10)
    snapshots: list[tickwork.SchedulerStatistics] = []
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, max_concurrency=5
    ) as sched:
        await sched.schedule_many(
            [tickwork.NewInstance("rec", clock.now(), str(k)) for k in range(20)]
        )
        for _ in range(60):
            snapshots.append(sched.statistics())
            await trio.sleep(1)
        await settle(sched)
        snapshots.append(sched.statistics())
    running = [s.gauges.running for s in snapshots]
    assert max(running) == 5  # rose to the bound ...
    last = snapshots[-1]
    assert (last.gauges.running, last.gauges.in_memory, last.gauges.claimed) == (0, 0, 0)
    assert max(s.gauges.in_memory for s in snapshots) == 20  # ... and fell back
    for before, after in pairwise(snapshots):
        old, new = _counter_values(before.counters), _counter_values(after.counters)
        assert all(new[k] >= old[k] for k in old), (old, new)
    assert last.counters.claimed == 20
    assert last.counters.started == 20
    assert last.counters.ended == {"SUCCEEDED": 20, "FAILED": 0, "ABORTED": 0, "MISSED": 0}
    assert last.counters.requeued == last.counters.retried == 0
    assert last.gauges.uptime == last.uptime


async def test_the_parts_of_statistics_are_the_public_gauges_and_counters(autojump_clock):
    clock = VirtualClock()
    async with tickwork.open_scheduler(tickwork.MemoryStore(), clock=clock) as sched:
        stats = sched.statistics()
    assert type(stats) is tickwork.SchedulerStatistics
    assert type(stats.gauges) is tickwork.Gauges
    assert type(stats.counters) is tickwork.Counters
    for cls in (tickwork.Gauges, tickwork.Counters):
        assert cls.__module__ == "tickwork.node.statistics"  # the one class, re-exported


async def test_a_retry_is_counted_as_requeued_and_retried(autojump_clock):
    clock = VirtualClock()

    class FailsOnce(tickwork.Task):
        name = "once"
        max_attempts = 2
        retry_on = (RuntimeError,)

        def __init__(self) -> None:
            self.runs = 0

        async def run(self, params: bytes) -> None:
            self.runs += 1
            if self.runs == 1:
                raise RuntimeError("first attempt fails")

    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[FailsOnce()], clock=clock
    ) as sched:
        await sched.schedule("once", at=clock.now())
        await settle(sched)
        counters = sched.statistics().counters
    assert counters.retried == 1
    assert counters.requeued == 1
    assert counters.started == 2
    assert counters.ended["SUCCEEDED"] == 1
    assert counters.ended["FAILED"] == 0


async def test_the_http_stats_give_gauges_and_counters(autojump_clock):
    clock = VirtualClock()
    async with (
        tickwork.open_scheduler(
            tickwork.MemoryStore(), tasks=[Recording(clock)], clock=clock
        ) as sched,
        in_process(sched) as api,
    ):
        await sched.schedule("rec", at=clock.now())
        await settle(sched)
        doc = (await api.get("/api/stats")).json()
    assert doc["gauges"]["running"] == 0
    assert doc["gauges"]["max_concurrency"] == 1000
    assert doc["counters"]["started"] == 1
    assert doc["counters"]["ended"]["SUCCEEDED"] == 1
