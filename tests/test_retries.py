"""Retries: per task and per instance, exponential backoff with a cap and full jitter.

A retry is the Recorder writing the instance back to PENDING with ``run_at`` moved and
``attempts + 1``; ``on_fail`` is called once, after the last attempt; an exception outside
``retry_on`` is final at once.
"""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.actors._outcomes import backoff_us
from tickwork.testing import VirtualClock

S = 1_000_000


class Flaky(Recording):
    """Fails with ``ConnectionError`` until it has run ``succeed_on`` times."""

    max_attempts = 5
    retry_on = (ConnectionError,)
    backoff_base = timedelta(seconds=10)
    backoff_cap = timedelta(seconds=25)

    def __init__(self, clock: VirtualClock, succeed_on: int | None = None) -> None:
        super().__init__(clock, "flaky")
        self.succeed_on = succeed_on
        self.fail_with: BaseException = ConnectionError("refused")

    async def run(self, params: bytes) -> Any:
        self.runs.append((params, self.clock.now_us()))
        if self.succeed_on is not None and len(self.runs) >= self.succeed_on:
            return "done"
        raise self.fail_with


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    rng = random.Random(4)  # noqa: S311 - reproducible jitter, not cryptography
    task = Flaky.__new__(Flaky)
    ceilings = {1: 10, 2: 20, 3: 25, 4: 25, 10: 25}  # base * 2^(n-1), capped at 25 s
    for attempt, ceiling in ceilings.items():
        draws = [backoff_us(task, attempt, rng) / S for _ in range(2_000)]
        assert 0 <= min(draws) < 0.05 * ceiling  # full jitter: from zero ...
        assert 0.95 * ceiling < max(draws) <= ceiling  # ... up to the ceiling
        assert abs(sum(draws) / len(draws) - ceiling / 2) < 0.05 * ceiling  # uniform


async def test_retries_back_off_then_succeed_and_hooks_run_once(autojump_clock):
    clock = VirtualClock()
    task = Flaky(clock, succeed_on=4)
    store = FaultyStore(tickwork.MemoryStore())
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await wait_until(lambda: sched.statistics().recorder.retried == 1, step=0.001)
        # the Recorder wrote it back: PENDING, run_at moved, the attempt counted
        [retry] = store.finished
        assert (retry.id, retry.state, retry.attempts) == (iid, State.PENDING, 1)
        assert retry.error == "ConnectionError: refused"
        assert retry.run_at_us is not None
        assert task.runs[0][1] <= retry.run_at_us <= task.runs[0][1] + 10 * S
        inst = await sched.get(iid)  # due inside the window: claimed again at once
        assert (inst.state, inst.attempts, inst.run_at_us) == (
            State.CLAIMED,
            1,
            retry.run_at_us,
        )
        await wait_until(lambda: len(task.runs) == 4)
        await settle(sched)
        inst = await sched.get(iid)
        assert sched.statistics().recorder.retried == 3
    assert inst.state is State.SUCCEEDED
    assert inst.attempts == 4
    times = [t for _, t in task.runs]
    gaps = [(b - a) / S for a, b in itertools.pairwise(times)]
    for gap, ceiling in zip(gaps, [10, 20, 25], strict=True):
        assert 0 <= gap <= ceiling + 0.01, gaps
    assert task.successes == [iid]
    assert task.failures == []  # never called for the attempts that were retried


async def test_on_fail_is_called_once_after_the_last_attempt(autojump_clock):
    clock = VirtualClock()
    task = Flaky(clock)
    failures: list[tuple[int, int, str]] = []

    async def on_fail(instance: tickwork.Instance, error: BaseException) -> None:
        failures.append((instance.id, instance.attempts, repr(error)))

    task.on_fail = on_fail  # type: ignore[method-assign]
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await wait_until(lambda: failures)
        await trio.sleep(3600)
        inst = await sched.get(iid)
    assert len(task.runs) == 5
    assert failures == [(iid, 5, "ConnectionError('refused')")]
    assert (inst.state, inst.attempts) == (State.FAILED, 5)


async def test_an_exception_outside_retry_on_is_final_at_once(autojump_clock):
    clock = VirtualClock()
    task = Flaky(clock)
    task.fail_with = ValueError("bad input")
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await settle(sched)
        await trio.sleep(3600)
        inst = await sched.get(iid)
        assert sched.statistics().recorder.retried == 0
    assert (inst.state, inst.attempts, inst.error) == (State.FAILED, 1, "ValueError: bad input")
    assert len(task.runs) == 1


@pytest.mark.parametrize(("task_attempts", "instance_attempts", "runs"), [(None, 3, 3), (5, 2, 2)])
async def test_schedule_max_attempts_overrides_the_task(
    autojump_clock, task_attempts, instance_attempts, runs
):
    clock = VirtualClock()
    task = Flaky(clock)
    task.max_attempts = task_attempts  # type: ignore[misc]
    other = Flaky(clock)
    other.name = "other"  # type: ignore[misc]
    other.max_attempts = task_attempts  # type: ignore[misc]
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task, other], clock=clock
    ) as sched:
        iid = await sched.schedule("flaky", at=clock.now(), max_attempts=instance_attempts)
        default = await sched.schedule("other", at=clock.now())
        await trio.sleep(3600)
        await settle(sched)
        assert (await sched.get(iid)).attempts == runs
        assert (await sched.get(default)).attempts == (task_attempts or 1)
    assert len(task.runs) == runs
    assert len(other.runs) == (task_attempts or 1)


async def test_without_max_attempts_a_failure_is_final(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    task.fail = ConnectionError("once")
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("rec", at=clock.now())
        await trio.sleep(3600)
        assert (await sched.get(iid)).state is State.FAILED
    assert len(task.runs) == 1


async def test_a_retry_beyond_the_window_leaves_memory_and_comes_back(autojump_clock):
    clock = VirtualClock()
    task = Flaky(clock, succeed_on=2)
    task.backoff_base = timedelta(hours=6)  # type: ignore[misc]
    task.backoff_cap = timedelta(hours=6)  # type: ignore[misc]
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, window=timedelta(minutes=5)
    ) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await wait_until(lambda: sched.statistics().recorder.retried == 1, step=0.001)
        retry = await sched.get(iid)
        # full jitter may draw a time inside the 5-minute window (1 in 72): then the node
        # claims it at once and holds it (CLAIMED), which this test does not look at
        if retry.run_at_us > clock.now_us() + 5 * 60 * S:
            assert retry.state is State.PENDING
            await trio.sleep(1)
            assert sched.statistics().in_memory == 0  # held by the store, not the node
        await wait_until(lambda: len(task.runs) == 2)
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED
    assert task.runs[1][1] == pytest.approx(retry.run_at_us, abs=1_000)


async def test_a_pending_retry_can_be_aborted(autojump_clock):
    clock = VirtualClock()
    task = Flaky(clock)
    task.backoff_base = task.backoff_cap = timedelta(hours=1)  # type: ignore[misc]
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, window=timedelta(seconds=1)
    ) as sched:
        iid = await sched.schedule("flaky", at=clock.now())
        await wait_until(lambda: sched.statistics().recorder.retried == 1, step=0.001)
        retry = await sched.get(iid)
        if retry.run_at_us > clock.now_us() + S:  # full jitter may draw ~0: then it is held
            assert retry.state is State.PENDING
        assert await sched.abort(iid) is State.ABORTED
        await trio.sleep(3 * 3600)
    assert len(task.runs) == 1
    assert task.aborts == [iid]


async def test_an_abort_that_reaches_the_node_before_the_retry_is_recorded_wins(
    autojump_clock,
):
    """The run failed and its retry waits in the Recorder's linger when ``abort`` comes:
    the retry is written ABORTED, ``abort`` returns ABORTED and ``on_abort`` runs once."""
    clock = VirtualClock()
    task = Flaky(clock)
    events: list[tuple[State, State]] = []
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, record_linger=timedelta(seconds=1)
    ) as sched:

        async def collect() -> None:
            with sched.subscribe() as sub:
                async for ev in sub:
                    if isinstance(ev, tickwork.TransitionEvent):
                        events.append((ev.from_state, ev.to_state))  # noqa: PERF401 - read while it fills

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.sleep(0)
            iid = await sched.schedule("flaky", at=clock.now() + timedelta(seconds=1))
            await clock.advance_to(clock.now() + timedelta(seconds=1.5))
            assert len(task.runs) == 1
            assert (await sched.get(iid)).state is State.CLAIMED  # the outcome lingers
            assert await sched.abort(iid) is State.ABORTED
            assert (await sched.get(iid)).state is State.ABORTED
            await trio.sleep(3600)
            nursery.cancel_scope.cancel()
    assert len(task.runs) == 1
    assert task.aborts == [iid]
    assert task.failures == []
    assert events[-1] == (State.RUNNING, State.ABORTED)


async def test_a_timeout_is_a_failed_attempt_that_is_retried(autojump_clock):
    clock = VirtualClock()

    class Hangs(Recording):
        max_attempts = 3
        timeout = timedelta(seconds=5)
        backoff_base = timedelta(seconds=1)

    task = Hangs(clock, "hangs")
    task.sleep = timedelta(hours=1)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[task], clock=clock) as sched:
        iid = await sched.schedule("hangs", at=clock.now())
        await wait_until(lambda: task.failures)
        inst = await sched.get(iid)
        history = await sched.history(iid)
    assert (inst.state, inst.attempts) == (State.FAILED, 3)
    assert [a.error_type for a in history] == ["TaskTimeout"] * 3
    assert len(task.runs) == 3
