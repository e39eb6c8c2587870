"""Overlap policies hold across nodes: an occurrence running on one node is seen by another.

Two kinds of test:

* On the virtual clock, one real node on a MemoryStore and a *simulated* other node
  (owner ``other``) that claims and admits an occurrence through the store API, exactly
  as a node's Executor would: the policies' reasons, the recheck every second of the
  node's clock, and the abort request of ``cancel_previous``, deterministic and instant.
* Two real nodes on one PostgreSQL schema, in one trio process (real time: leases and
  notices are the database's). Each node holds at most one instance (``max_in_memory=1``),
  so while the node that runs the first occurrence holds it, the *other* node claims the
  next ones: whatever it does with them, it must see the first one running.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

import tickwork
from tests.support.helpers import Recording, wait_until
from tickwork import Interval, State
from tickwork.actors.overlap import RECHECK_US
from tickwork.model import Finish
from tickwork.stores._rules import HELD
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

S = 1_000_000
MIN = 60 * S
HOUR = 3600 * S
START = datetime(2030, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp()) * S
N1, N2, N3 = T0 + 10 * MIN, T0 + 20 * MIN, T0 + 30 * MIN


async def by_fire(sched: tickwork.Scheduler) -> dict[int, tickwork.Instance]:
    found = await sched.list(limit=1000)
    return {i.fire_at_us: i for i in found if i.fire_at_us is not None}


# -- one node and a simulated other node, on the virtual clock ------------------------------


@attrs.define
class Other:
    """A node simulated through the store: it claims and admits the first occurrence."""

    store: tickwork.MemoryStore
    held: tickwork.Instance | None = None

    async def run_first(self) -> tickwork.Instance:
        [first] = await self.store.claim("other", N1, 10, T0, HOUR)
        assert first.fire_at_us == N1
        [check] = await self.store.check_occurrences([first.id], N1, admit=[first.id])
        assert check.run
        assert check.in_flight is None
        self.held = first
        return first

    async def finish(self, state: State = State.SUCCEEDED) -> None:
        assert self.held is not None
        assert self.held.claim_token is not None
        done = Finish(self.held.id, self.held.claim_token, state, 1)
        assert await self.store.finish("other", [done], N2) == [True]


@asynccontextmanager
async def open_node(
    store: tickwork.MemoryStore, clock: VirtualClock, task: Recording
) -> AsyncIterator[tickwork.Scheduler]:
    async with tickwork.open_scheduler(
        store,
        tasks=[task],
        clock=clock,
        node_id="here",
        window=timedelta(minutes=5),  # the first occurrence is left to "other"
        lease=timedelta(hours=1),
        shutdown_grace=timedelta(0),
    ) as sched:
        yield sched


async def test_skip_names_the_occurrence_running_on_another_node(autojump_clock: Any) -> None:
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    other = Other(store)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule("rec", Interval(timedelta(minutes=10)), schedule_id="s")
        first = await other.run_first()
        await clock.advance_to(START + timedelta(minutes=25))
        rows = await by_fire(sched)
        assert task.runs == []  # the second one did not run alongside the first
        assert rows[N2].state is State.MISSED
        assert rows[N2].error == (
            f"overlap=skip: occurrence {first.id} of this schedule was still running on node other"
        )
        await other.finish()
        await clock.advance_to(START + timedelta(minutes=35))
        assert [t for _, t in task.runs] == [N3]  # the first ended: the next one runs


async def test_queue_waits_for_another_nodes_occurrence_and_rechecks_every_second(
    autojump_clock: Any,
) -> None:
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    other = Other(store)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule(
            "rec", Interval(timedelta(minutes=10)), schedule_id="s", overlap="queue"
        )
        first = await other.run_first()
        await clock.advance_to(START + timedelta(minutes=20, seconds=30))
        assert task.runs == []
        assert sched.statistics().in_memory >= 1  # the second one waits here
        await other.finish()
        ended = clock.now_us()
        await wait_until(lambda: task.runs)
        [(_, started)] = task.runs
        # it starts at the next recheck on the node's clock, within a second
        assert ended <= started <= ended + RECHECK_US
        rows = await by_fire(sched)
        assert rows[N1].id == first.id
        assert rows[N2].state is State.SUCCEEDED


async def test_queue_lets_one_wait_for_another_nodes_occurrence(autojump_clock: Any) -> None:
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    other = Other(store)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule(
            "rec", Interval(timedelta(minutes=10)), schedule_id="s", overlap="queue"
        )
        first = await other.run_first()
        await clock.advance_to(START + timedelta(minutes=35))
        rows = await by_fire(sched)
        assert task.runs == []
        assert rows[N2].state is State.CLAIMED  # waiting
        assert rows[N3].state is State.MISSED
        assert rows[N3].error == (
            f"overlap=queue: occurrence {rows[N2].id} of this schedule still waited for "
            "the previous one"
        )
        assert rows[N1].id == first.id
        await other.finish()
        await clock.advance_to(START + timedelta(minutes=36))
        [(_, started)] = task.runs
        assert T0 + 35 * MIN <= started <= T0 + 35 * MIN + RECHECK_US


async def test_cancel_previous_requests_the_abort_of_another_nodes_occurrence(
    autojump_clock: Any,
) -> None:
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    other = Other(store)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule(
            "rec", Interval(timedelta(minutes=10)), schedule_id="s", overlap="cancel_previous"
        )
        first = await other.run_first()
        await clock.advance_to(START + timedelta(minutes=20, seconds=10))
        # the abort was requested on the other node's row; it still runs there
        assert (await store.abort_requests("other")) == [first.id]
        assert task.runs == []
        # the other node carries the abort out: the waiting one starts at the next recheck
        await other.finish(State.ABORTED)
        aborted = clock.now_us()
        await wait_until(lambda: task.runs)
        [(_, started)] = task.runs
        assert aborted <= started <= aborted + RECHECK_US
        rows = await by_fire(sched)
        assert (rows[N1].state, rows[N2].state) == (State.ABORTED, State.SUCCEEDED)


async def test_cancel_previous_never_cancels_a_newer_occurrence(autojump_clock: Any) -> None:
    """A late older occurrence that comes due while another node already runs a newer one
    is superseded itself (MISSED), instead of aborting the newer one."""
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule(
            "rec",
            Interval(timedelta(minutes=10)),
            schedule_id="s",
            overlap="cancel_previous",
        )
        # the other node holds the first occurrence and gives it back (e.g. a shutdown)
        # after the second one came due and it started that one
        [first] = await store.claim("other", N1, 10, T0, HOUR)
        [second] = await store.claim("other", N2, 10, T0, HOUR)
        [check] = await store.check_occurrences([second.id], N2, admit=[second.id])
        assert check.in_flight is None
        await store.release("other", T0, [first.id])
        # here, the first one is claimed (late) with the third, 5 minutes before it
        await clock.advance_to(START + timedelta(minutes=26))
        rows = await by_fire(sched)
        assert task.runs == []
        assert rows[N1].state is State.MISSED
        assert rows[N1].error == (
            f"overlap=cancel_previous: superseded by occurrence {second.id}, already "
            "running on node other"
        )
        assert await store.abort_requests("other") == []


# -- two real nodes on one PostgreSQL schema --------------------------------------------------


@attrs.define
class Shared:
    """What the two nodes' tasks record, in this process."""

    running: int = 0
    most: int = 0
    #: (node, start, end) of every run, in start order (monotonic seconds)
    runs: list[tuple[str, float, float | None]] = attrs.Factory(list)
    #: (node, instance id, when) of every on_abort
    aborted: list[tuple[str, int, float]] = attrs.Factory(list)
    release: trio.Event = attrs.Factory(trio.Event)
    first_node: str | None = None

    def first_run_on(self, node: str) -> tuple[str, float, float | None] | None:
        return next((r for r in self.runs if r[0] == node), None)


class Hold(tickwork.Task):
    """The first run (on whichever node) holds until released or cancelled."""

    name = "hold"

    def __init__(self, node: str, shared: Shared) -> None:
        self.node = node
        self.shared = shared

    async def run(self, params: bytes) -> None:
        sh = self.shared
        sh.running += 1
        sh.most = max(sh.most, sh.running)
        k = len(sh.runs)
        sh.runs.append((self.node, time.monotonic(), None))
        try:
            if sh.first_node is None:
                sh.first_node = self.node
                await sh.release.wait()
        finally:
            sh.running -= 1
            sh.runs[k] = (self.node, sh.runs[k][1], time.monotonic())

    async def on_abort(self, instance: tickwork.Instance) -> None:
        self.shared.aborted.append((self.node, instance.id, time.monotonic()))


@pytest.fixture
def pg() -> Any:
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg

    dsn = require_pg()
    schema = fresh_schema()
    yield dsn, schema
    drop_schema(dsn, schema)


#: The schedules' period: long enough that the other node's recheck (every second) comes
#: before the node that ran the first occurrence could claim the next but one.
PERIOD = timedelta(seconds=2)


async def two_nodes(
    pg: tuple[str, str], overlap: str, check: Any, shared: Shared
) -> dict[int, tickwork.Instance]:
    """Run nodes "a" and "b" with a schedule every PERIOD under ``overlap``; once the first
    run started, ``await check(scheduler)``; returns the rows by fire time."""
    from tickwork.stores.postgres import PostgresStore

    dsn, schema = pg

    def node(name: str) -> Any:
        return tickwork.open_scheduler(
            PostgresStore(dsn, schema=schema),
            tasks=[Hold(name, shared)],
            node_id=name,
            max_in_memory=1,  # holding the first run, a node claims nothing else
            claim_horizon=timedelta(milliseconds=500),
            shutdown_grace=timedelta(0),
        )

    async with node("a") as a, node("b"):
        await a.add_schedule("hold", Interval(PERIOD), schedule_id="s", overlap=overlap)
        with trio.fail_after(20):
            while shared.first_node is None:
                await trio.sleep(0.01)
            await check(a)
        shared.release.set()
        # the runs end now; their outcomes take a moment (a commit, a linger) to be stored
        with trio.fail_after(20):
            while True:
                rows = await by_fire(a)
                if all(rows[f].state not in HELD for f in sorted(rows)[:2]):
                    return rows
                await trio.sleep(0.01)


def other_than(node: str | None) -> str:
    return {"a": "b", "b": "a"}[node or ""]


async def test_two_nodes_skip(pg: tuple[str, str]) -> None:
    shared = Shared()

    async def check(sched: tickwork.Scheduler) -> None:
        # the other node claims the next occurrence (this one holds its only place)
        while not any(
            i.state is State.MISSED and "running on node" in (i.error or "")
            for i in (await by_fire(sched)).values()
        ):
            await trio.sleep(0.05)

    rows = await two_nodes(pg, "skip", check, shared)
    assert shared.most == 1
    assert len(shared.runs) == 1  # the first one held its place until now
    first, second = (rows[f] for f in sorted(rows)[:2])
    there = other_than(shared.first_node)
    assert (second.state, second.owner) == (State.MISSED, there)
    assert second.error == (
        f"overlap=skip: occurrence {first.id} of this schedule was still running on node "
        f"{shared.first_node}"
    )


async def test_two_nodes_queue(pg: tuple[str, str]) -> None:
    shared = Shared()

    async def check(sched: tickwork.Scheduler) -> None:
        # the next occurrence comes due on the other node, which waits for this one
        await trio.sleep(PERIOD.total_seconds() + 0.5)
        assert len(shared.runs) == 1
        shared.release.set()
        while shared.first_run_on(other_than(shared.first_node)) is None:
            await trio.sleep(0.01)
        del sched

    rows = await two_nodes(pg, "queue", check, shared)
    assert shared.most == 1
    _, _, first_end = shared.runs[0]
    there = shared.first_run_on(other_than(shared.first_node))
    assert there is not None
    assert first_end is not None
    # the waiting one started after the first ended, at the next recheck
    assert first_end <= there[1] < first_end + 1.5 * RECHECK_US / S
    second = rows[sorted(rows)[1]]
    assert (second.owner, second.error) == (other_than(shared.first_node), None)


async def test_two_nodes_cancel_previous(pg: tuple[str, str]) -> None:
    shared = Shared()

    async def check(sched: tickwork.Scheduler) -> None:
        # the next occurrence, on the other node, has the first one cancelled there
        while not shared.aborted or len(shared.runs) < 2:
            await trio.sleep(0.01)
        del sched

    rows = await two_nodes(pg, "cancel_previous", check, shared)
    assert shared.most == 1
    [(node, aborted_id, _)] = shared.aborted
    assert node == shared.first_node
    (_, _, first_end), (there, second_start, _) = shared.runs[:2]
    assert there == other_than(shared.first_node)
    assert first_end is not None
    assert first_end <= second_start
    first, second = (rows[f] for f in sorted(rows)[:2])
    assert (first.id, first.state) == (aborted_id, State.ABORTED)
    assert (second.owner, second.state) == (there, State.SUCCEEDED)


async def test_queue_the_older_occurrence_waiting_on_another_node_goes_first(
    autojump_clock: Any,
) -> None:
    """At most one occurrence waits, cluster-wide: an older one that came due on another
    node and was not admitted there (it waits for its turn) goes first."""
    clock = VirtualClock(START)
    store = tickwork.MemoryStore()
    task = Recording(clock)
    async with open_node(store, clock, task) as sched:
        await sched.add_schedule(
            "rec", Interval(timedelta(minutes=10)), schedule_id="s", overlap="queue"
        )
        [first] = await store.claim("other", N1, 10, T0, HOUR)  # due at N1, never admitted
        await clock.advance_to(START + timedelta(minutes=25))
        rows = await by_fire(sched)
        assert task.runs == []
        assert rows[N2].state is State.MISSED
        assert rows[N2].error == (
            f"overlap=queue: occurrence {first.id} of this schedule was still waiting to run "
            "on node other"
        )
        # once the other node ran it, the schedule goes on here
        [check] = await store.check_occurrences([first.id], N1, admit=[first.id])
        assert check.in_flight is None
        other = Other(store, first)
        await other.finish()
        await clock.advance_to(START + timedelta(minutes=35))
        assert [t for _, t in task.runs] == [N3]
