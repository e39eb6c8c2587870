"""A node keeps the leases of what it holds until everything of it is done.

The Leases actor is started first and stopped last: a graceful stop whose
``shutdown_grace`` is longer than the lease still renews the claims of the runs it lets
finish, so no other node (or claimer) takes them over and runs them again, and their
outcomes are recorded. One node on memory and SQLite (virtual time, an "intruder" claim
playing the other node), then two real nodes on PostgreSQL (real time, short lease).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import tickwork
from tests.support.helpers import wait_until
from tickwork import State
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tickwork.stores.base import Store

S = 1_000_000
HOUR = 3600 * S
LEASE = timedelta(seconds=10)


class Sleeps(tickwork.Task):
    """Sleeps ``float(params)`` seconds; remembers who ran what."""

    name = "sleeps"

    def __init__(self, node: str = "") -> None:
        self.node = node
        self.started: list[tuple[str, bytes]] = []
        self.finished: list[tuple[str, bytes]] = []

    async def run(self, params: bytes) -> None:
        self.started.append((self.node, params))
        await trio.sleep(float(params))
        self.finished.append((self.node, params))


def _store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return tickwork.MemoryStore()
    return tickwork.SQLiteStore(tmp_path / "leases.db")


async def _read(kind: str, store: Store, tmp_path: Path, iid: int) -> tuple[Any, Any]:
    """The instance and its history, after the node closed the store."""
    reader = store if kind == "memory" else _store(kind, tmp_path)
    await reader.open()
    try:
        return await reader.get(iid), await reader.history(iid)
    finally:
        await reader.aclose()


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def trio_clock(kind: str) -> trio.testing.MockClock:
    """Virtual time. It must not jump while a SQLite call is in flight on the store's
    thread (trio sees every task blocked then): jump only after a real pause."""
    return trio.testing.MockClock(autojump_threshold=0 if kind == "memory" else 0.01)


async def _tick() -> None:
    """Always a timer one second ahead: while a SQLite call runs on its thread, the mock
    clock may jump (every task looks blocked), but only to the next timer, never as far
    as the test's ``fail_after`` deadline."""
    while True:
        await trio.sleep(1)


async def test_a_graceful_stop_longer_than_the_lease_keeps_renewing(
    kind: str, tmp_path: Path, trio_clock: trio.testing.MockClock
) -> None:
    clock = VirtualClock()
    task = Sleeps()
    store = _store(kind, tmp_path)
    stop = trio.Event()
    stopped = trio.Event()
    seen: dict[str, Any] = {}

    async def node(*, task_status: trio.TaskStatus[int]) -> None:
        async with tickwork.open_scheduler(
            store, tasks=[task], clock=clock, lease=LEASE, shutdown_grace=timedelta(minutes=2)
        ) as sched:
            task_status.started(await sched.schedule("sleeps", at=clock.now(), params=b"60"))
            await stop.wait()
        seen["stats"] = sched.statistics()
        stopped.set()

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_tick)
            iid = await nursery.start(node)
            await wait_until(lambda: task.started, step=0.001)
            stop.set()
            # Draining, three leases later: the claim is still renewed, so a node that
            # looks for lapsed leases (here: a claim by another owner) finds nothing.
            await trio.sleep(3 * LEASE.total_seconds())
            assert not stopped.is_set()
            now = clock.now_us()
            held = await store.get(iid)
            assert held is not None
            assert held.state is State.RUNNING  # at-least-once: with the Recorder's batch
            assert held.lease_until_us is not None
            assert held.lease_until_us > now
            assert await store.claim("intruder", now + HOUR, 10, now, 10 * S) == []
            await stopped.wait()
            nursery.cancel_scope.cancel()
    inst, history = await _read(kind, store, tmp_path, iid)
    assert task.finished == [("", b"60")]  # ran once, to its end
    assert inst.state is State.SUCCEEDED
    assert inst.attempts == 1
    assert [(a.state, a.node) for a in history] == [(State.SUCCEEDED, inst.owner)]
    assert seen["stats"].recorder.refused == 0


async def test_renewals_go_on_through_the_drain_and_end_before_the_release(
    autojump_clock: object,
) -> None:
    """The Leases actor stops last: it renews all through the drain, up to the outcome,
    and never after the node gave its claims back."""
    from tests.support.faults import FaultyStore

    clock = VirtualClock()
    task = Sleeps()
    store = FaultyStore(tickwork.MemoryStore())
    order: list[str] = []

    def spy(name: str) -> None:
        real = getattr(store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            order.append(name)
            return await real(*args, **kwargs)

        setattr(store, name, call)

    for name in ("renew", "finish", "release"):
        spy(name)
    with trio.fail_after(3600):
        async with tickwork.open_scheduler(
            store, tasks=[task], clock=clock, lease=LEASE, shutdown_grace=timedelta(minutes=2)
        ) as sched:
            await sched.schedule("sleeps", at=clock.now(), params=b"25")
            await wait_until(lambda: task.started, step=0.001)
            order.append("stop")
    assert task.finished == [("", b"25")]
    # the last finish writes the outcome (an earlier one may write RUNNING)
    outcome = len(order) - 1 - order[::-1].index("finish")
    during_drain = order[order.index("stop") : outcome]
    # every lease / 3 through the run's 25 s
    assert during_drain.count("renew") >= 7, order
    assert order[-1] == "release", order
    assert "renew" not in order[order.index("release") :], order


# -- two nodes on PostgreSQL ----------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg

    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


@pytest.mark.postgres
async def test_a_cluster_node_stopping_gracefully_keeps_its_work(pg: tuple[str, str]) -> None:
    """Node a runs a 5 s at-least-once instance with a 2 s lease and is stopped with a
    15 s grace while node b runs: b never starts it, a's outcome is recorded."""
    from tickwork.stores.postgres import PostgresStore

    dsn, schema = pg
    lease = timedelta(seconds=2)
    task_a, task_b = Sleeps("a"), Sleeps("b")

    def node(name: str, task: Sleeps, grace: float) -> Any:
        return tickwork.open_scheduler(
            PostgresStore(dsn, schema=schema),
            tasks=[task],
            node_id=name,
            lease=lease,
            claim_horizon=timedelta(milliseconds=500),
            shutdown_grace=timedelta(seconds=grace),
        )

    b_up = trio.Event()
    stop_b = trio.Event()

    async def run_b() -> None:
        async with node("b", task_b, 0):
            b_up.set()
            await stop_b.wait()

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            async with node("a", task_a, 15) as a:
                iid = await a.schedule("sleeps", at=a.now(), params=b"5")
                while not task_a.started:
                    await trio.sleep(0.01)
                nursery.start_soon(run_b)
                await b_up.wait()
                await trio.sleep(0.5)  # b has beaten: it knows of a and a's leases
            # a drained: its run ended and was recorded, two leases after the stop
            stats = a.statistics()
            await trio.sleep(lease.total_seconds() * 1.5)  # b had every chance to take over
            stop_b.set()
        store = PostgresStore(dsn, schema=schema)
        await store.open()
        try:
            inst = await store.get(iid)
            history = await store.history(iid)
        finally:
            await store.aclose()
    assert task_b.started == []
    assert task_a.finished == [("a", b"5")]
    assert stats.recorder.refused == 0
    assert inst is not None
    assert (inst.state, inst.attempts) == (State.SUCCEEDED, 1)
    assert [(h.state, h.node) for h in history] == [(State.SUCCEEDED, "a")]
