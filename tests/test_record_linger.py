"""The Recorder's linger: outcomes that come slowly share a commit (record_linger)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import tickwork
from tests.support.helpers import Recording, settle
from tickwork import State
from tickwork.errors import InvalidArgument
from tickwork.testing import VirtualClock

N = 20
SPACING = timedelta(milliseconds=5)


class _OnceRecording(Recording):
    delivery = "at_most_once"


async def _commits_for_a_slow_stream(
    linger: timedelta | None, *, at_most_once: bool = False
) -> int:
    """Record N runs due 5 ms apart; returns the Recorder's batches (one commit each)."""
    clock = VirtualClock()
    task = _OnceRecording(clock) if at_most_once else Recording(clock)
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(
        store, tasks=[task], clock=clock, record_linger=linger
    ) as sched:
        start = clock.now() + timedelta(seconds=1)
        await sched.schedule_many(
            [tickwork.NewInstance("rec", start + SPACING * i, b"") for i in range(N)]
        )
        await clock.advance_to(start + SPACING * N + timedelta(seconds=1))
        await settle(sched)
        assert await sched.count(state=State.SUCCEEDED) == N
        return sched.statistics().recorder.batches


async def test_slow_outcomes_share_a_commit_when_lingering(autojump_clock):
    # 20 runs over 100 ms, a linger of 50 ms: a commit gathers the runs of ~50 ms
    assert await _commits_for_a_slow_stream(timedelta(milliseconds=50)) <= 4


async def test_a_single_node_store_commits_each_batch_as_it_comes_by_default(autojump_clock):
    # no linger on a single-node store (MemoryStore, SQLiteStore): one commit per run here
    assert await _commits_for_a_slow_stream(None) >= N - 2
    assert await _commits_for_a_slow_stream(timedelta(0)) >= N - 2


async def test_runs_of_an_at_most_once_task_are_recorded_without_lingering(autojump_clock):
    # until recorded, a crash or a lost lease would end them FAILED "interrupted"
    batches = await _commits_for_a_slow_stream(timedelta(milliseconds=50), at_most_once=True)
    assert batches >= N - 2


@pytest.mark.parametrize("bad", [timedelta(seconds=-1), timedelta(seconds=2), 0.05, "50ms"])
async def test_a_bad_record_linger_is_refused(bad):
    with pytest.raises(InvalidArgument, match="record_linger must be a timedelta from 0 to 1 s"):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), record_linger=bad):
            pass
