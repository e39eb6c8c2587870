"""Timeouts: per task (``timeout`` class attribute) and per instance (``schedule(timeout=)``).

A run past its timeout is cancelled and counts as a failed attempt with ``TaskTimeout``.
For ``BashTask`` the whole process group is killed, whichever timeout fired: the
executor's (task or instance) or the command's own ``timeout`` param.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import trio

import tickwork
from tests.support.bash_pids import SPAWN, assert_gone, wait_for_pids
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from pathlib import Path

S = 1_000_000


class Slow(Recording):
    timeout = timedelta(seconds=10)

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, "slow")
        self.errors: list[BaseException] = []

    async def on_fail(self, instance: tickwork.Instance, error: BaseException) -> None:
        self.errors.append(error)
        await super().on_fail(instance, error)


async def test_a_run_past_the_task_timeout_fails_with_task_timeout(autojump_clock):
    clock = VirtualClock()
    task = Slow(clock)
    task.sleep = timedelta(hours=1)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        start = clock.now_us()
        iid = await sched.schedule("slow", at=clock.now())
        await settle(sched)
        inst = await sched.get(iid)
        [attempt] = await sched.history(iid)
    assert (inst.state, inst.attempts) == (State.FAILED, 1)
    assert inst.error == "TaskTimeout: task 'slow' exceeded its timeout of 10 s"
    assert attempt.error_type == "TaskTimeout"
    assert attempt.duration == timedelta(seconds=10)
    assert clock.now_us() - start < 11 * S  # cancelled, not waited for
    [error] = task.errors
    assert isinstance(error, tickwork.TaskTimeout)


@pytest.mark.parametrize("seconds", [2, 30])
async def test_the_instance_timeout_overrides_the_tasks(autojump_clock, seconds):
    clock = VirtualClock()
    task = Slow(clock)
    task.sleep = timedelta(seconds=20)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("slow", at=clock.now(), timeout=timedelta(seconds=seconds))
        await settle(sched)
        inst = await sched.get(iid)
        [attempt] = await sched.history(iid)
    if seconds < 20:
        assert inst.state is State.FAILED
        assert attempt.duration == timedelta(seconds=seconds)
    else:  # longer than the task's 10 s: the instance's wins, and the run finishes
        assert inst.state is State.SUCCEEDED
        assert attempt.duration == timedelta(seconds=20)


async def test_a_run_within_its_timeout_succeeds(autojump_clock):
    clock = VirtualClock()
    task = Slow(clock)
    task.sleep = timedelta(seconds=9)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("slow", at=clock.now())
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED


async def test_a_timeout_runs_on_the_monotonic_clock_not_the_wall_clock(autojump_clock):
    clock = VirtualClock()
    task = Slow(clock)
    task.sleep = timedelta(seconds=8)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("slow", at=clock.now())
        await wait_until(lambda: sched.statistics().running == 1, step=0.01)
        clock.jump(timedelta(hours=2))  # an NTP step: the run has not taken 2 hours
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED


async def test_a_timeout_does_not_hold_the_other_runs(autojump_clock):
    clock = VirtualClock()
    task = Slow(clock)
    task.sleep = timedelta(hours=1)
    quick = Recording(clock)
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task, quick], clock=clock, max_concurrency=2
    ) as sched:
        start = clock.now_us()
        await sched.schedule_many([tickwork.NewInstance("slow", clock.now()) for _ in range(4)])
        await sched.schedule("rec", at=clock.now() + timedelta(seconds=15))
        await settle(sched)
        assert await sched.count(state=State.FAILED) == 4
    # two runs at a time, each cancelled after 10 s: the slots are free again at 20 s
    assert quick.runs[0][1] - start == pytest.approx(20 * S, abs=1_000)


# -- BashTask: real processes, the real clock -----------------------------------------------


async def _run_bash(params: bytes, **schedule: object) -> tuple[tickwork.Instance, float]:
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[tickwork.BashTask()]) as s:
        iid = await s.schedule("bash", at=s.now(), params=params, **schedule)  # type: ignore[arg-type]
        start = trio.current_time()
        with trio.fail_after(10):
            while not (inst := await s.get(iid)).state.terminal:
                await trio.sleep(0.02)
        return inst, trio.current_time() - start


async def test_bash_executor_timeout_kills_the_process_group(tmp_path: Path) -> None:
    params = tickwork.BashTask.params(SPAWN, cwd=tmp_path)
    async with trio.open_nursery() as nursery:
        result: list[tuple[tickwork.Instance, float]] = []

        async def go() -> None:
            result.append(await _run_bash(params, timeout=timedelta(seconds=0.5)))

        nursery.start_soon(go)
        bash_pid, child_pid = await wait_for_pids(tmp_path)
    [(inst, took)] = result
    assert inst.state is State.FAILED
    assert (inst.error or "").startswith("TaskTimeout: task 'bash' exceeded its timeout of 0.5 s")
    assert took < 5
    await assert_gone(bash_pid)
    await assert_gone(child_pid)


async def test_bash_params_timeout_kills_the_process_group(tmp_path: Path) -> None:
    params = tickwork.BashTask.params(SPAWN, cwd=tmp_path, timeout=0.5)
    async with trio.open_nursery() as nursery:
        result: list[tuple[tickwork.Instance, float]] = []

        async def go() -> None:
            result.append(await _run_bash(params))

        nursery.start_soon(go)
        bash_pid, child_pid = await wait_for_pids(tmp_path)
    [(inst, took)] = result
    assert inst.state is State.FAILED
    # BashTimeout is a TaskTimeout that also carries the output printed until then.
    assert (inst.error or "").startswith("BashTimeout: bash command timed out after 0.5 s")
    assert took < 5
    await assert_gone(bash_pid)
    await assert_gone(child_pid)
