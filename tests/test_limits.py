"""Limits a node enforces at the API: params size (item 9 of issue 11), the shortest
lease and poll interval, and what a node records about itself in the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

import tickwork
from tests.support.helpers import Recording
from tickwork.errors import InvalidArgument
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES
from tickwork.testing import VirtualClock

AT = datetime(2030, 1, 1, tzinfo=UTC)


async def test_params_over_the_default_limit_are_refused() -> None:
    store = tickwork.MemoryStore()
    async with tickwork.open_scheduler(store, tasks=[Recording(VirtualClock())]) as sched:
        assert sched.max_params_bytes == DEFAULT_MAX_PARAMS_BYTES == 1 << 20
        await sched.schedule("rec", at=AT, params=b"x" * (1 << 20))  # exactly the limit
        with pytest.raises(InvalidArgument, match=r"1,048,577 bytes, over the limit of 1 MiB"):
            await sched.schedule("rec", at=AT, params=b"x" * ((1 << 20) + 1))
        assert await sched.count() == 1


async def test_a_node_sets_its_own_limit_everywhere() -> None:
    store = tickwork.MemoryStore()
    task = Recording(VirtualClock())
    async with tickwork.open_scheduler(store, tasks=[task], max_params_bytes=100) as sched:
        assert store.max_params_bytes == 100  # the store refuses the same
        with pytest.raises(InvalidArgument, match="over the limit of 100 bytes"):
            await sched.schedule("rec", at=AT, params=b"x" * 101)
        batch = [
            tickwork.NewInstance("rec", AT, b"ok"),
            tickwork.NewInstance("rec", AT, b"x" * 101),
        ]
        with pytest.raises(InvalidArgument, match="over the limit of 100 bytes"):
            await sched.schedule_many(batch)
        assert await sched.count() == 0  # one bad item refuses the whole batch
        every = tickwork.Interval(timedelta(hours=1))
        with pytest.raises(InvalidArgument, match="schedule params are 101 bytes"):
            await sched.add_schedule("rec", every, params=b"x" * 101)
        await sched.schedule("rec", at=AT, params=b"x" * 100)
        [me] = await store.nodes()
        assert me.node_id == sched.node_id
        assert me.tasks == ("rec",)
        assert me.max_params_bytes == 100


@pytest.mark.parametrize("value", [0, -1, 1.5, True, None])
async def test_a_bad_params_limit_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="max_params_bytes must be an integer >= 1"):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), max_params_bytes=value):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease": timedelta(milliseconds=1)}, "lease must be at least 1 s"),
        ({"lease": timedelta(milliseconds=999)}, "lease must be at least 1 s"),
        ({"poll_interval": timedelta(milliseconds=1)}, "poll_interval must be at least 10 ms"),
    ],
)
async def test_leases_and_intervals_below_the_minimum_are_refused(
    kwargs: dict[str, timedelta], message: str
) -> None:
    store = tickwork.MemoryStore()
    with pytest.raises(InvalidArgument, match=message):
        async with tickwork.open_scheduler(store, **kwargs):  # type: ignore[arg-type]
            pass
    with trio.fail_after(5):  # the minimum itself is fine
        async with tickwork.open_scheduler(
            store, lease=timedelta(seconds=1), poll_interval=timedelta(milliseconds=10)
        ):
            pass
