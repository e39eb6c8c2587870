"""A property: across restarts and downtime, a schedule's fire times are written in order,
each is a fire time of its expression, none twice, and none skipped silently.

A node is simulated on a MemoryStore by the calls a node makes: claim its window (the
chain of next occurrences), finish what came due, and on a restart give back what it
held; then the clock jumps over the downtime.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

import tickwork
from tests.support.helpers import Recording
from tests.support.strategies import aware_datetimes, cron_expressions, zones
from tickwork._time import to_us
from tickwork.errors import InvalidArgument
from tickwork.model import Finish, Instance
from tickwork.schedules.schedule import new_schedule
from tickwork.schedules.triggers import Cron
from tickwork.state import State
from tickwork.stores import MemoryStore
from tickwork.testing import VirtualClock

S = 1_000_000
HOUR = 3600 * S
#: per step: (minutes the node runs, minutes it is then down; 0 = it keeps running)
_steps = st.lists(
    st.tuples(st.integers(1, 36 * 60), st.sampled_from([0, 0, 1, 30, 90, 600, 4000])),
    min_size=1,
    max_size=6,
)


async def _simulate(
    trigger: Cron, start_us: int, steps: list[tuple[int, int]], policy: str
) -> list[Instance]:
    store = MemoryStore()
    await store.open(node_id="n")
    await store.add_schedule(new_schedule("t", trigger, schedule_id="p", misfire=policy), start_us)
    now = start_us
    held: dict[int, Instance] = {}
    for run_minutes, down_minutes in steps:
        stop = now + run_minutes * 60 * S
        while now < stop:
            for _ in range(200):  # the Puller: claim until the window holds nothing more
                got = await store.claim("n", now + HOUR, 100, now, 60 * S)
                held.update((i.id, i) for i in got)
                if not got:
                    break
            due = [i for i in held.values() if i.run_at_us <= now]
            finishes = [Finish(i.id, i.claim_token or 0, State.SUCCEEDED, 1) for i in due]
            await store.finish("n", finishes, now)
            for i in due:
                del held[i.id]
            upcoming = [i.run_at_us for i in held.values()]
            nxt = await store.next_pending_at()
            if nxt is not None:
                upcoming.append(nxt - HOUR)
            now = min(stop, max(now + S, min(upcoming, default=stop)))
        if down_minutes:
            await store.release("n", now)
            held.clear()
            now += down_minutes * 60 * S
    found = await store.list(limit=100_000)
    await store.aclose()
    return sorted((i for i in found if i.schedule_id == "p"), key=lambda i: i.id)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    expr=cron_expressions(seconds=False),
    zone=zones,
    start=aware_datetimes(),
    steps=_steps,
    policy=st.sampled_from(["run_once", "run_all", "skip"]),
)
def test_fire_times_across_restarts_are_increasing_valid_and_unique(
    expr: str, zone: str, start: object, steps: list[tuple[int, int]], policy: str
) -> None:
    try:
        trigger = Cron(expr, zone)
    except InvalidArgument:
        assume(False)
        raise
    start_us = to_us(start)  # type: ignore[arg-type]
    rows = trio.run(_simulate, trigger, start_us, steps, policy)
    fires = [i.fire_at_us for i in rows]
    assert None not in fires  # nothing was detached: the schedule was never replaced
    assert fires == sorted(set(fires)), "written out of order, or twice"  # type: ignore[type-var]
    for row, fire in zip(rows, fires, strict=True):
        assert fire is not None
        assert trigger.next_after_us(fire - 1) == fire, "not a fire time of the expression"
        assert row.state in {State.SUCCEEDED, State.MISSED, State.PENDING, State.CLAIMED}
    # none skipped silently: between two written fire times there is none, except after
    # the one summary row a long catch-up writes for the ones it did not write one by one
    for row, (a, b) in zip(rows, itertools.pairwise(fires), strict=False):
        assert a is not None
        assert b is not None
        if not (row.error or "").startswith(f"misfire={policy}: this and "):
            assert trigger.next_after_us(a) == b, "a fire time is missing"


async def _on_a_node(
    trigger: Cron, start: datetime, steps: list[tuple[int, int]]
) -> list[Instance]:
    clock = VirtualClock(start)
    task = Recording(clock)
    store = MemoryStore()
    added = False
    for run_minutes, down_minutes in steps:
        async with tickwork.open_scheduler(
            store, tasks=[task], clock=clock, lease=timedelta(hours=1)
        ) as sched:
            if not added:
                await sched.add_schedule("rec", trigger, schedule_id="p")
                added = True
            await trio.sleep(run_minutes * 60)
        await trio.sleep(down_minutes * 60)
    await store.open()
    found = await store.list(limit=100_000)
    for inst in found:
        if inst.state is State.SUCCEEDED:
            assert len(await store.history(inst.id)) == 1, "ran twice"
            assert inst.run_at_us <= (await store.history(inst.id))[0].started_us
    await store.aclose()
    return sorted((i for i in found if i.schedule_id == "p"), key=lambda i: i.id)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=cron_expressions(seconds=False),
    zone=zones,
    start=aware_datetimes(),
    steps=st.lists(
        st.tuples(st.integers(1, 8 * 60), st.sampled_from([0, 1, 45, 300])),
        min_size=2,
        max_size=3,
    ),
)
def test_on_a_node_across_restarts(
    expr: str, zone: str, start: datetime, steps: list[tuple[int, int]]
) -> None:
    try:
        trigger = Cron(expr, zone)
    except InvalidArgument:
        assume(False)
        raise
    rows = trio.run(_on_a_node, trigger, start, steps, clock=MockClock(autojump_threshold=0))
    fires = [i.fire_at_us for i in rows]
    assert fires == sorted(set(fires))  # type: ignore[type-var]
    assert all(f is not None and trigger.next_after_us(f - 1) == f for f in fires)
