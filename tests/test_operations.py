"""The operator methods of the Scheduler on every store: retry, run a schedule now, next
fire times, list filters with keyset pagination, and the nodes listing.

The real clock, with work due now or far in the future: a run is awaited through
``subscribe()``, never by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

import tickwork
from tickwork import Cron, Interval, State
from tickwork.model import NewRow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

FAR = datetime(2100, 1, 1, tzinfo=UTC)


class Boom(tickwork.Task):
    name = "boom"

    async def run(self, params: bytes) -> Any:
        raise RuntimeError("boom: " + params.decode())


class Quiet(tickwork.Task):
    name = "quiet"

    async def run(self, params: bytes) -> Any:
        return None


@pytest.fixture
async def node(kind: str, tmp_path: Path) -> AsyncIterator[tickwork.Scheduler]:
    schema = dsn = None
    s: tickwork.Store
    if kind == "memory":
        s = tickwork.MemoryStore()
    elif kind == "sqlite":
        s = tickwork.SQLiteStore(tmp_path / "ops.db")
    else:
        from tests.support.pg_support import drop_schema, fresh_schema, require_pg

        dsn = require_pg()
        schema = fresh_schema()
        s = tickwork.PostgresStore(dsn, schema=schema)
    try:
        async with tickwork.open_scheduler(s, tasks=[Boom(), Quiet()]) as scheduler:
            yield scheduler
    finally:
        if dsn is not None and schema is not None:
            drop_schema(dsn, schema)


async def ended(scheduler: tickwork.Scheduler, sub: tickwork.Subscription, iid: int) -> State:
    """Wait for ``iid``'s terminal transition (seen through ``sub``)."""
    with trio.fail_after(20):
        async for event in sub:
            if (
                isinstance(event, tickwork.TransitionEvent)
                and event.instance_id == iid
                and event.to_state.terminal
            ):
                return event.to_state
    raise AssertionError("subscription closed")


async def test_retry_links_a_new_pending_instance_to_a_failed_one(node):
    with node.subscribe() as sub:
        failed = await node.schedule("boom", at=node.now(), params=b"x", max_attempts=1)
        assert await ended(node, sub, failed) is State.FAILED
        new = await node.retry(failed)
        assert new != failed
        assert await ended(node, sub, new) is State.FAILED  # it ran again, and failed again
    inst = await node.get(new)
    assert inst.retry_of == failed
    assert inst.task == "boom"
    assert inst.params == b"x"
    assert inst.max_attempts == 1
    assert inst.state is State.FAILED
    old = await node.get(failed)
    assert old.state is State.FAILED  # the old instance is untouched
    assert old.retry_of is None
    # a second retry of the same instance (a double click) stores nothing new
    assert await node.retry(failed) == new


async def test_retry_of_aborted_and_missed_instances(node):
    aborted = await node.schedule("quiet", at=FAR)
    assert await node.abort(aborted) is State.ABORTED
    retry = await node.get(await node.retry(aborted))
    assert retry.retry_of == aborted
    assert retry.state is not State.ABORTED
    inner = node._store.inner
    (missed,) = await inner.insert(
        [NewRow("quiet", 1, b"m", state=State.MISSED, error="skipped")], 1
    )
    assert (await node.get(await node.retry(missed))).retry_of == missed


@pytest.mark.parametrize("state", ["pending", "succeeded"])
async def test_retry_refuses_what_has_not_failed(node, state):
    if state == "pending":
        iid = await node.schedule("quiet", at=FAR)
    else:
        with node.subscribe() as sub:
            iid = await node.schedule("quiet", at=node.now())
            assert await ended(node, sub, iid) is State.SUCCEEDED
    with pytest.raises(tickwork.InvalidState, match="only a FAILED, ABORTED or MISSED"):
        await node.retry(iid)
    with pytest.raises(tickwork.NotFound):
        await node.retry(10**9)
    with pytest.raises(tickwork.InvalidArgument, match="positive integer"):
        await node.retry("1")  # type: ignore[arg-type]


async def test_users_cannot_forge_the_retry_link(node):
    with pytest.raises(tickwork.InvalidArgument, match="retry-of:"):
        await node.schedule("quiet", at=FAR, dedup_key="retry-of:1")


async def test_users_cannot_forge_the_run_now_link(node):
    with pytest.raises(tickwork.InvalidArgument, match="run-now:"):
        await node.schedule("quiet", at=FAR, dedup_key="run-now:x:nightly")
    iid = await node.schedule("quiet", at=FAR, dedup_key="mine")
    assert (await node.get(iid)).run_now_of is None


async def test_run_schedule_now_leaves_the_schedule_as_it_was(node):
    sid = await node.add_schedule("quiet", Cron("0 0 1 1 *"), params=b"p", start_at=FAR)
    before = await node.get_schedule(sid)
    with node.subscribe() as sub:
        iid = await node.run_schedule_now(sid)
        assert await ended(node, sub, iid) is State.SUCCEEDED
    inst = await node.get(iid)
    assert (inst.task, inst.params, inst.schedule_id) == ("quiet", b"p", None)
    assert inst.run_now_of == sid  # recorded, though not one of its occurrences
    after = await node.get_schedule(sid)
    assert after.last_fire_us == before.last_fire_us
    await node.pause_schedule(sid)
    again = await node.run_schedule_now(sid)
    assert again > iid  # paused: still runs on demand, a new instance each time
    assert (await node.get(again)).run_now_of == sid
    with pytest.raises(tickwork.NotFound):
        await node.run_schedule_now("nope")


async def test_next_fire_times(node):
    sid = await node.add_schedule("quiet", Cron("30 9 * * *", "Europe/Paris"), start_at=FAR)
    times = await node.next_fire_times(sid, 3)
    assert times == [
        datetime(2100, 1, 1, 8, 30, tzinfo=UTC),
        datetime(2100, 1, 2, 8, 30, tzinfo=UTC),
        datetime(2100, 1, 3, 8, 30, tzinfo=UTC),
    ]
    ends = await node.add_schedule(
        "quiet", Interval(timedelta(hours=1)), start_at=FAR, end_at=FAR + timedelta(hours=1)
    )
    assert len(await node.next_fire_times(ends, 10)) == 2  # the trigger runs out
    for bad in (0, 1001, True, "3"):
        with pytest.raises(tickwork.InvalidArgument, match="n must be"):
            await node.next_fire_times(sid, bad)
    with pytest.raises(tickwork.NotFound):
        await node.next_fire_times("nope")


async def test_list_filters_and_keyset_pagination(node):
    base = FAR
    ids = await node.schedule_many(
        [tickwork.NewInstance("quiet", base + timedelta(minutes=k)) for k in range(10)]
    )
    sid = await node.add_schedule("quiet", Interval(timedelta(days=1)), start_at=FAR)
    (occurrence,) = await node.list(schedule_id=sid)
    assert occurrence.schedule_id == sid
    assert await node.list(schedule_id="no-such") == []
    due = await node.list(
        due_after=base + timedelta(minutes=2), due_before=base + timedelta(minutes=5)
    )
    assert [i.id for i in due] == list(reversed(ids[2:5]))
    # keyset pages walk everything once, newest first
    seen: list[int] = []
    before = None
    while True:
        page = await node.list(task="quiet", limit=3, before_id=before, due_after=base)
        if not page:
            break
        seen += [i.id for i in page]
        before = page[-1].id
    assert seen == sorted(set(ids) | {occurrence.id}, reverse=True)
    # ended: only terminal instances, by when they ended
    assert await node.abort(ids[0]) is State.ABORTED
    end = await node.get(ids[0])
    found = await node.list(ended_after=end.updated_at, ended_before=end.updated_at + timedelta(1))
    assert [i.id for i in found] == [ids[0]]
    assert await node.list(ended_before=end.updated_at) == []
    with pytest.raises(tickwork.InvalidArgument, match="aware"):
        await node.list(due_after=datetime(2100, 1, 1))  # noqa: DTZ001 - the refusal tested
    with pytest.raises(tickwork.InvalidArgument, match="before_id"):
        await node.list(before_id="5")  # type: ignore[arg-type]


async def test_nodes_lists_this_node(node):
    nodes = await node.nodes()
    mine = [n for n in nodes if n.node_id == node.node_id]
    assert len(mine) == 1
    assert mine[0].alive
    assert mine[0].stopped_us is None


class StoreBeforeFilters(tickwork.MemoryStore):
    """A store whose ``list`` predates the ``where`` argument (a user's own store)."""

    async def list(  # type: ignore[override]
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[tickwork.Instance]:
        return await super().list(state=state, task=task, limit=limit, before_id=before_id)


async def test_a_store_without_list_filters_still_lists():
    async with tickwork.open_scheduler(StoreBeforeFilters(), tasks=[Quiet()]) as node:
        iid = await node.schedule("quiet", at=FAR)
        assert [i.id for i in await node.list()] == [iid]
        assert [i.id for i in await node.list(state=State.PENDING)] == [iid]


def test_retry_of_reads_only_ascii_digits() -> None:
    """A user's own dedup key that starts like a retry's: never an error on read."""
    base = tickwork.Instance(1, "t", 0, b"", State.PENDING, 0, None, None, None, None)
    for key, expected in (("retry-of:12", 12), ("retry-of:\u00b2", None), ("retry-of:x", None)):
        assert attrs.evolve(base, dedup_key=key).retry_of == expected, key
