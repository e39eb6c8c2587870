"""A hypothesis state machine over schedule / abort / advance time / restart.

After every step the store is checked against a simple model: no instance lost, each in
exactly one state, none run twice (restarts here are graceful: no crash in between), and
every instance that is due and not aborted has run and SUCCEEDED.
"""

from __future__ import annotations

import bisect
from collections import Counter
from datetime import datetime, timedelta

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tickwork
from tests.support.trio_portal import TrioPortal
from tickwork import State
from tickwork.testing import VirtualClock


class Counting(tickwork.Task):
    name = "count"

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()

    async def run(self, params: bytes) -> None:
        self.runs[int(params)] += 1
        await trio.sleep(int(params) % 3)  # some take a while: aborts hit running ones


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal = TrioPortal()
        self.store = tickwork.MemoryStore()
        self.task = Counting()
        self.clock: VirtualClock = self.portal.run(self._make_clock)
        self.due: dict[int, int] = {}  # id -> due (µs)
        self.aborted: set[int] = set()
        self.serial = 0
        self.sched: tickwork.Scheduler | None = None
        self._start()

    async def _make_clock(self) -> VirtualClock:
        return VirtualClock()

    def _now(self) -> datetime:
        async def now() -> datetime:
            return self.clock.now()

        return self.portal.run(now)

    def _start(self) -> None:
        self._stop = None

        async def node(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            stop = trio.Event()
            self._stop = stop
            self._stopped = trio.Event()
            async with tickwork.open_scheduler(
                self.store,
                tasks=[self.task],
                clock=self.clock,
                window=timedelta(minutes=20),
                max_in_memory=8,
                batch_size=4,
                max_concurrency=3,
                shutdown_grace=timedelta(seconds=5),
            ) as sched:
                self.sched = sched
                self.up_since = self.clock.now_us()
                task_status.started()
                await stop.wait()
            self.sched = None
            self._stopped.set()

        self.portal.run(self.portal.nursery.start, node)

    def _stop_node(self) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self._stop.set()
            await self._stopped.wait()  # the portal moves time during the grace

        self.portal.run(stop)

    @rule(delay=st.integers(-600, 7200), count=st.integers(1, 6))
    def schedule(self, delay: int, count: int) -> None:
        assert self.sched is not None
        at = self._now() + timedelta(seconds=delay)
        news = []
        for _ in range(count):
            self.serial += 1
            news.append(tickwork.NewInstance("count", at, str(self.serial).encode()))
        ids = self.portal.run(self.sched.schedule_many, news)
        scheduled_at = int((at - timedelta(seconds=delay)).timestamp() * 1_000_000)
        for iid in ids:
            # when it must have run by: due, or scheduled if it was already due then
            self.due[iid] = max(int(at.timestamp() * 1_000_000), scheduled_at)

    @precondition(lambda self: bool(self.due))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        assert self.sched is not None
        iid = data.draw(st.sampled_from(sorted(self.due)))
        state = self.portal.run(self.sched.abort, iid)
        if state is State.ABORTED:
            self.aborted.add(iid)
        else:
            assert state.terminal, state

    @rule(seconds=st.integers(1, 5400))
    def advance(self, seconds: int) -> None:
        self.portal.advance(seconds)

    @rule()
    def restart(self) -> None:
        self._stop_node()
        self._start()

    @invariant()
    def nothing_lost_and_every_due_one_ran(self) -> None:
        async def snapshot() -> tuple[dict[int, tickwork.Instance | None], int]:
            return {iid: await self.store.get(iid) for iid in self.due}, self.clock.now_us()

        if self.sched is None:
            return
        stored, now = self.portal.run(snapshot)
        runs = {int(p): n for p, n in self.task.runs.items()}
        live = sorted(d for i, d in self.due.items() if i not in self.aborted)
        for iid, inst in stored.items():
            assert inst is not None, f"instance {iid} lost"
            serial = int(inst.params)
            ran = runs.get(serial, 0)
            assert ran <= 1, f"instance {iid} ran {ran} times without a crash"
            if inst.state is State.SUCCEEDED:
                assert ran == 1
                assert iid not in self.aborted
            if inst.state is State.ABORTED:
                assert iid in self.aborted
            if iid in self.aborted:
                assert inst.state is State.ABORTED
            elif max(self.due[iid], self.up_since) + self._slack(live, self.due[iid]) <= now:
                # this node has been up long enough since it was due to run it and every
                # instance due before it: it has run, once
                assert inst.state is State.SUCCEEDED, (iid, inst.state, self.due[iid], now)

    @staticmethod
    def _slack(live: list[int], due: int) -> int:
        """10 s, plus the longest runs (2 s) of every instance due no later, over the 3
        workers: instances due earlier (even if scheduled later) are run first."""
        ahead = bisect.bisect_right(live, due)
        return 10_000_000 + ahead * 2_000_000 // 3

    def teardown(self) -> None:
        try:
            if self.sched is not None:
                self._stop_node()
        finally:
            self.portal.close()


SchedulerMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_machine = SchedulerMachine.TestCase
