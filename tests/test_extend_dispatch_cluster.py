"""A dispatcher on two nodes sharing PostgreSQL: while a remote run is in flight its
claim stays valid (renewed), no other node takes it; given back, it is dispatched again
under the same (instance id, attempt) key, so the pool can recognise it.

Real clock and server (leases are durations on the server's terms): about 5 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.pg_support import drop_schema, fresh_schema, require_pg
from tests.test_extend_dispatch import Held, Remote
from tickwork import State
from tickwork.testing import VirtualClock

pytestmark = [pytest.mark.postgres]

LEASE = timedelta(seconds=1)


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


class NodeHeld(Held):
    """One pool shared by both nodes; notes which node dispatched each key."""

    def __init__(self, by_node: list[tuple[str, tuple[int, int]]]) -> None:
        super().__init__()
        self.by_node = by_node

    async def dispatch(self, run: tickwork.RunContext) -> Any:
        self.by_node.append((run.node_id, (run.instance.id, run.instance.attempts + 1)))
        return await super().dispatch(run)


async def _until(predicate: Any, seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_remote_run_keeps_its_claim_then_moves_with_the_same_key(
    pg: tuple[str, str],
) -> None:
    from tickwork.stores.postgres import PostgresStore

    dsn, schema = pg
    by_node: list[tuple[str, tuple[int, int]]] = []
    pools = {"a": NodeHeld(by_node), "b": NodeHeld(by_node)}

    def node(name: str, **opts: Any) -> Any:
        return tickwork.open_scheduler(
            PostgresStore(dsn, schema=schema),
            tasks=[Remote(VirtualClock())],
            node_id=name,
            dispatcher=pools[name],
            lease=LEASE,
            poll_interval=timedelta(milliseconds=50),
            claim_horizon=timedelta(milliseconds=500),
            **opts,
        )

    stops = {name: trio.Event() for name in pools}
    nodes: dict[str, tickwork.Scheduler] = {}

    async def run_node(name: str, *, task_status: trio.TaskStatus[None]) -> None:
        async with node(name, shutdown_grace=timedelta(0)) as sched:
            nodes[name] = sched
            task_status.started()
            await stops[name].wait()

    async with trio.open_nursery() as nursery:
        for name in pools:
            await nursery.start(run_node, name)
        first = await nodes["a"].schedule("remote", at=datetime.now(UTC))
        await _until(lambda: by_node)
        [(owner, key)] = by_node
        assert key == (first, 1)
        await trio.sleep(4 * LEASE.total_seconds())  # four leases long
        assert len(by_node) == 1  # renewed all along: nobody took it over
        assert (await nodes["a"].get(first)).owner == owner
        assert pools[owner].answer(key, value="done")

        second = await nodes["a"].schedule("remote", at=datetime.now(UTC))
        await _until(lambda: len(by_node) == 2)
        holder = by_node[1][0]
        other = "b" if holder == "a" else "a"
        stops[holder].set()  # it stops (no grace) while the pool works on the run
        # interrupted and given back: the other node dispatches it again, same key
        await _until(lambda: len(by_node) == 3)
        assert by_node[1:] == [(holder, (second, 1)), (other, (second, 1))]
        assert pools[holder].cancelled == [(second, 1)]
        assert pools[other].answer((second, 1), value="done")
        with trio.fail_after(20):
            while (await nodes[other].get(second)).state is not State.SUCCEEDED:
                await trio.sleep(0.01)
        assert (await nodes[other].get(first)).state is State.SUCCEEDED
        stops[other].set()
