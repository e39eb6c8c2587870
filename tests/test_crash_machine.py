"""A hypothesis state machine with crash points: schedule / abort / advance time / restart,
and crashes between any two store writes.

A crash drops the process state without a graceful shutdown: the FaultyStore refuses every
call from the chosen write on (that write applied or not: the commit landed and the reply
was lost, or the process died first) and the node's task tree is cancelled; then the store
is opened again by a new node. Tasks of both delivery modes run throughout. After every
step the store is checked against a model:

* no instance is lost, and none is ever in two terminal states (a terminal state never
  changes);
* an at-most-once instance never runs twice; when it ends FAILED it was interrupted;
* an at-least-once instance that is due (and not aborted) runs at least once and ends
  SUCCEEDED, however many crashes it went through.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import trio
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tickwork
from tests.support.faults import FaultyStore, Node
from tests.support.trio_portal import TrioPortal
from tickwork import State
from tickwork.stores.base import INTERRUPTED
from tickwork.testing import VirtualClock

S = 1_000_000


class Counting(tickwork.Task):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.runs: Counter[int] = Counter()

    async def run(self, params: bytes) -> None:
        self.runs[int(params)] += 1
        await trio.sleep(int(params) % 3)  # some take a while: crashes hit running ones


class CountingOnce(Counting):
    delivery = "at_most_once"


class CrashMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal = TrioPortal()
        self.store = FaultyStore(tickwork.MemoryStore())
        self.tasks = {"alo": Counting("alo"), "amo": CountingOnce("amo")}
        self.clock: VirtualClock = self.portal.run(self._make_clock)
        self.node = Node(
            self.store,
            tasks=list(self.tasks.values()),
            clock=self.clock,
            window=timedelta(minutes=20),
            max_in_memory=8,
            batch_size=4,
            max_concurrency=3,
            lease=timedelta(seconds=30),
            shutdown_grace=timedelta(seconds=5),
        )
        self.due: dict[int, int] = {}  # id -> must have run by (µs), before slack
        self.task_of: dict[int, str] = {}
        self.serial_of: dict[int, int] = {}
        self.aborted: set[int] = set()
        self.ended: dict[int, State] = {}  # the terminal state first seen
        self.serial = 0
        self.crashes = 0
        self._start()

    async def _make_clock(self) -> VirtualClock:
        return VirtualClock()

    def _now(self) -> datetime:
        async def now() -> datetime:
            return self.clock.now()

        return self.portal.run(now)

    def _start(self) -> None:
        async def start() -> int:
            await self.node.start(self.portal.nursery)
            return self.clock.now_us()

        self.up_since = self.portal.run(start)

    @property
    def sched(self) -> tickwork.Scheduler:
        assert self.node.sched is not None
        return self.node.sched

    # -- rules ----------------------------------------------------------------------------

    @rule(
        delay=st.integers(-600, 3600),
        count=st.integers(1, 5),
        task=st.sampled_from(["alo", "amo"]),
    )
    def schedule(self, delay: int, count: int, task: str) -> None:
        at = self._now() + timedelta(seconds=delay)
        news = []
        serials = []
        for _ in range(count):
            self.serial += 1
            serials.append(self.serial)
            news.append(tickwork.NewInstance(task, at, str(self.serial).encode()))
        ids = self.portal.run(self.sched.schedule_many, news)
        scheduled_at = int((at - timedelta(seconds=delay)).timestamp() * S)
        for iid, serial in zip(ids, serials, strict=True):
            self.due[iid] = max(int(at.timestamp() * S), scheduled_at)
            self.task_of[iid] = task
            self.serial_of[iid] = serial

    @precondition(lambda self: bool(self.due))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        iid = data.draw(st.sampled_from(sorted(self.due)))
        state = self.portal.run(self.sched.abort, iid)
        if state is State.ABORTED:
            self.aborted.add(iid)
        else:
            assert state.terminal, state

    @rule(seconds=st.integers(1, 3600))
    def advance(self, seconds: int) -> None:
        self.portal.advance(seconds)

    @rule()
    def restart(self) -> None:
        self.portal.run(self.node.stop)
        self._start()

    @rule(writes=st.integers(1, 20), apply=st.booleans(), seconds=st.integers(1, 1800))
    def crash_between_writes(self, writes: int, apply: bool, seconds: int) -> None:
        """Let time pass; the process dies at the n-th store write from now."""
        self.store.arm_crash(writes, apply=apply)
        self.portal.advance(seconds)
        if self.store.crashed:
            _event(f"crash at a store write ({'applied' if apply else 'not applied'})")
            self.crashes += 1
            self.portal.run(self.node.wait_crashed)
            self._start()
        else:
            _event("an armed crash point was not reached")
            self.store.disarm()

    @rule()
    def crash_now(self) -> None:
        self.crashes += 1
        self.portal.run(self.node.crash)
        self._start()

    # -- the model --------------------------------------------------------------------------

    @invariant()
    def nothing_lost_ended_once_and_delivery_kept(self) -> None:
        async def snapshot() -> tuple[dict[int, tickwork.Instance | None], int]:
            inner = self.store.inner
            return {iid: await inner.get(iid) for iid in self.due}, self.clock.now_us()

        stored, now = self.portal.run(snapshot)
        live = sorted(d for i, d in self.due.items() if i not in self.aborted)
        for iid, inst in stored.items():
            assert inst is not None, f"instance {iid} lost"
            if iid in self.ended:
                assert inst.state is self.ended[iid], (iid, self.ended[iid], inst.state)
            elif inst.state.terminal:
                self.ended[iid] = inst.state
            self._check_delivery(iid, inst, now, live)

    def _check_delivery(self, iid: int, inst: tickwork.Instance, now: int, live: list[int]) -> None:
        task = self.task_of[iid]
        ran = self.tasks[task].runs[self.serial_of[iid]]
        if task == "amo":
            assert ran <= 1, f"at-most-once instance {iid} ran {ran} times"
            if inst.state is State.FAILED:
                assert inst.error == INTERRUPTED, inst.error
        if inst.state is State.SUCCEEDED:
            assert ran >= 1
            assert iid not in self.aborted
        if iid in self.aborted:
            assert inst.state is State.ABORTED
        elif max(self.due[iid], self.up_since) + _slack(live, self.due[iid]) <= now:
            # this node has been up long enough since it was due to run it and every
            # instance due before it
            if task == "alo":
                assert inst.state is State.SUCCEEDED, (iid, inst.state)
                assert ran >= 1
            else:
                assert inst.state in (State.SUCCEEDED, State.FAILED), (iid, inst.state)

    def teardown(self) -> None:
        try:
            if self.node.sched is not None:
                self.portal.run(self.node.stop)
        finally:
            self.portal.close()


def _event(text: str) -> None:
    """hypothesis.event, also when a rule is called outside a hypothesis run."""
    with contextlib.suppress(HypothesisException):
        event(text)


def _slack(live: list[int], due: int) -> int:
    """10 s, plus the longest runs (2 s) of every instance due no later, over 3 workers."""
    return 10 * S + bisect.bisect_right(live, due) * 2 * S // 3


CrashMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_crash_machine = CrashMachine.TestCase


def test_crashes_were_exercised() -> None:
    """The machine does crash nodes (a guard against a harness that never fires)."""
    machine = CrashMachine()
    try:
        machine.schedule(delay=0, count=3, task="amo")
        machine.schedule(delay=0, count=3, task="alo")
        machine.crash_between_writes(writes=2, apply=True, seconds=600)
        machine.nothing_lost_ended_once_and_delivery_kept()
        assert machine.crashes == 1
        machine.advance(600)
        machine.nothing_lost_ended_once_and_delivery_kept()
        states: Any = Counter(machine.ended.values())
        assert sum(states.values()) == 6
    finally:
        machine.teardown()
