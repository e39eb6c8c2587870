"""The base of the hypothesis state machines: a node driven by schedule / abort / advance
time / restart, checked against a model after every step, on a memory or SQLite store.

``test_stateful.py`` runs it as it is (graceful restarts only); ``test_crash_machine.py``
adds crashes between store writes. The model is one for both: a crash only loosens what
a run count may be (an at-least-once instance may run again after one).

* no instance is lost, and a terminal state never changes;
* only the instances the test aborted end ABORTED, and each of them does;
* an instance ran at most once, unless a crash happened and it is at-least-once;
  an at-most-once instance that ends FAILED was interrupted by a crash;
* an instance that is due (and not aborted), on a node up long enough since, has run
  and ended SUCCEEDED (or, after a crash, an at-most-once one FAILED as interrupted).
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tickwork
from tests.support.faults import FaultyStore, Node
from tests.support.trio_portal import TrioPortal
from tickwork import State
from tickwork.stores.base import INTERRUPTED, Store
from tickwork.testing import VirtualClock

S = 1_000_000


class Counting(tickwork.Task):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.runs: Counter[int] = Counter()

    async def run(self, params: bytes) -> None:
        self.runs[int(params)] += 1
        await trio.sleep(int(params) % 3)  # some take a while: aborts and crashes hit them


class CountingOnce(Counting):
    delivery = "at_most_once"


def _make_store(kind: str, folder: Path) -> Store:
    if kind == "memory":
        return tickwork.MemoryStore()
    assert kind == "sqlite", kind
    return tickwork.SQLiteStore(folder / "machine.db")


class NodeMachine(RuleBasedStateMachine):
    #: the store under the node: "memory" or "sqlite"
    kind: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="tickwork-machine-"))
        self.portal = TrioPortal()
        self.store = FaultyStore(_make_store(self.kind, self.folder))
        # A SQLite call runs on a thread: time must not move while one is under way.
        self.portal.busy = lambda: self.store.in_flight > 0
        #: instances are scheduled for both: at least once and at most once
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
            # nothing else writes to the store: SQLite's 0.5 s change poll would only cost a
            # settle of the portal per half second (advance goes from deadline to deadline)
            poll_interval=timedelta(seconds=10),
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
            # when it must have run by: due, or scheduled if it was already due then
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

    # -- the model --------------------------------------------------------------------------

    @invariant()
    def nothing_lost_ended_once_and_delivery_kept(self) -> None:
        async def snapshot() -> tuple[dict[int, tickwork.Instance | None], int]:
            # The time first: a row read later can only be further along. The reads go past
            # the fault gate (allowed after a crash) but count as store calls, so the portal
            # does not move the clock while one is on SQLite's thread: it did, one second
            # per read, and a row read RUNNING was then judged against a later time.
            now = self.clock.now_us()

            async def read(inner: Store) -> dict[int, tickwork.Instance | None]:
                return {iid: await inner.get(iid) for iid in self.due}

            stored = await self.store.peek(read)
            assert self.clock.now_us() == now, "time moved while the model read the store"
            return stored, now

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
        if task == "amo" or not self.crashes:
            assert ran <= 1, f"instance {iid} ({task}) ran {ran} times, crashes: {self.crashes}"
        if inst.state is State.FAILED:  # the tasks never fail: only an interruption does
            assert (task, inst.error) == ("amo", INTERRUPTED), (iid, task, inst.error)
            assert self.crashes
        if inst.state is State.SUCCEEDED:
            assert ran >= 1
            assert iid not in self.aborted
        if iid in self.aborted:
            assert inst.state is State.ABORTED
        else:
            assert inst.state is not State.ABORTED, f"instance {iid} aborted by nobody"
            if max(self.due[iid], self.up_since) + _slack(live, self.due[iid]) <= now:
                # this node has been up long enough since it was due to run it and every
                # instance due before it
                assert inst.state in (State.SUCCEEDED, State.FAILED), (
                    iid, inst.state, self.due[iid], now,
                )  # fmt: skip

    def teardown(self) -> None:
        try:
            if self.node.sched is not None:
                self.portal.run(self.node.stop)
        finally:
            try:
                self.portal.close()
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)


def _slack(live: list[int], due: int) -> int:
    """10 s, plus the longest runs (2 s) of every instance due no later, over 3 workers:
    instances due earlier (even if scheduled later) are run first."""
    return 10 * S + bisect.bisect_right(live, due) * 2 * S // 3
