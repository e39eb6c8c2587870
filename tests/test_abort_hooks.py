"""``on_abort`` of an instance aborted while PENDING runs on the node, not on the caller.

``scheduler.abort()`` of a PENDING instance writes ABORTED at once; the task's hook then
runs in the node's hook nursery, bounded by ``hook_concurrency`` like every other hook,
so a slow hook neither holds up the caller nor escapes the bound.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

import tickwork
from tests.support.helpers import wait_until
from tickwork import State
from tickwork.testing import VirtualClock


class SlowAbortHook(tickwork.Task):
    name = "slow"

    def __init__(self) -> None:
        self.release = trio.Event()
        self.running = 0
        self.most = 0
        self.tasks: list[Any] = []
        self.aborted: list[int] = []

    async def run(self, params: bytes) -> None:
        pass

    async def on_abort(self, instance: tickwork.Instance) -> None:
        self.tasks.append(trio.lowlevel.current_task())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        self.aborted.append(instance.id)


async def test_the_hook_of_a_pending_abort_runs_on_the_node_under_hook_concurrency(
    autojump_clock,
):
    clock = VirtualClock()
    task = SlowAbortHook()
    later = clock.now() + timedelta(days=1)
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, hook_concurrency=2
    ) as sched:
        ids = [await sched.schedule("slow", at=later, params=str(i)) for i in range(5)]
        caller = trio.lowlevel.current_task()
        # the hooks block, yet abort() returns at once: they do not run on this task
        with trio.fail_after(1):
            for iid in ids[:2]:
                assert await sched.abort(iid) is State.ABORTED
        await wait_until(lambda: task.running == 2, timeout=60)
        assert caller not in task.tasks
        # two hooks hold the bound: the next abort is written, its hook waits for room
        async with trio.open_nursery() as nursery:
            for iid in ids[2:]:
                nursery.start_soon(sched.abort, iid)
            await trio.sleep(60)
            assert task.running == 2
            assert task.most == 2
            for iid in ids:
                assert (await sched.get(iid)).state is State.ABORTED
            task.release.set()
    assert sorted(task.aborted) == sorted(ids)
    assert task.most == 2


async def test_a_failing_pending_abort_hook_is_counted_like_the_others(autojump_clock, caplog):
    clock = VirtualClock()

    class Raises(tickwork.Task):
        name = "raises"

        async def run(self, params: bytes) -> None:
            pass

        async def on_abort(self, instance: tickwork.Instance) -> None:
            raise RuntimeError("hook bug")

    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Raises()], clock=clock
    ) as sched:
        iid = await sched.schedule("raises", at=clock.now() + timedelta(hours=3))
        assert await sched.abort(iid) is State.ABORTED
        await wait_until(lambda: sched.statistics().recorder.hooks_failed == 1, timeout=60)
    assert "on_abort hook raised" in caplog.text
