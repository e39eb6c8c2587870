"""Upcoming instances apart from the history (``Scheduler.list(upcoming=...)``, ``tickwork
ls``, the web UI), on every store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

import tickwork
from tickwork._time import to_us
from tickwork.model import Finish, InstanceFilter, NewRow
from tickwork.node.listing import list_instances
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.stores.base import Store

S = 1_000_000


async def test_upcoming_and_history_split_every_instance_once(store: Store) -> None:
    now = to_us(datetime.now(UTC))
    rows = [
        NewRow("t", now - 10 * S, b""),  # 1 overdue PENDING: history
        NewRow("t", now + 10 * S, b""),  # 2 PENDING ahead: upcoming
        NewRow("t", now + 20 * S, b"", schedule_id="s", fire_at_us=now + 20 * S),  # 3
        NewRow("t", now + 30 * S, b""),  # 4 claimed ahead: upcoming
        NewRow("t", now + 40 * S, b""),  # 5 aborted before due: history
        NewRow("u", now - 5 * S, b"", state=State.SUCCEEDED),  # 6 ended: history
        NewRow("t", now, b""),  # 7 due exactly now: upcoming (due at or after now)
    ]
    ids = await store.insert(rows, now)
    claimed = await store.claim("n", now + 30 * S, 10, now, 60 * S)
    # give back all but 4 so that only 4 stays CLAIMED
    back = [
        Finish(c.id, c.claim_token or 0, State.PENDING, 0, run_at_us=c.run_at_us)
        for c in claimed
        if c.id != ids[3]
    ]
    await store.finish("n", back, now)
    await store.request_abort(ids[4], now)
    assert (await store.get(ids[3])).state is State.CLAIMED  # type: ignore[union-attr]

    async def page(upcoming: bool | None, **kw: object) -> list[int]:
        args: dict[str, object] = {
            "state": None, "task": None, "limit": 100, "before_id": None,
            "where": InstanceFilter(),
        }  # fmt: skip
        args.update(kw)
        found = await list_instances(store, upcoming=upcoming, now_us=now, **args)  # type: ignore[arg-type]
        return [i.id for i in found]

    one, two, three, four, five, six, seven = ids
    assert await page(upcoming=True) == [seven, four, three, two]
    assert await page(upcoming=False) == [six, five, one]
    assert await page(upcoming=None) == [seven, six, five, four, three, two, one]
    assert await page(upcoming=True, state=State.CLAIMED) == [four]
    assert await page(upcoming=True, state=State.SUCCEEDED) == []
    assert await page(upcoming=False, state=State.PENDING) == [one]
    assert await page(upcoming=True, where=InstanceFilter(schedule_id="s")) == [three]
    assert await page(upcoming=True, limit=2) == [seven, four]
    assert await page(upcoming=True, before_id=four) == [three, two]
    assert await page(upcoming=False, task="u") == [six]
    later = InstanceFilter(due_from_us=now + 15 * S)
    assert await page(upcoming=True, where=later) == [four, three]
    # the history filter alone, as each store applies it
    history = InstanceFilter(history_at_us=now)
    assert [i.id for i in await store.list(where=history)] == [six, five, one]
    assert all(history.matches(i) is (i.id in {one, five, six}) for i in await store.list())


async def test_scheduler_list_takes_upcoming(autojump_clock: object) -> None:
    del autojump_clock
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[]) as sched:
        with pytest.raises(tickwork.InvalidArgument, match="upcoming must be True, False or None"):
            await sched.list(upcoming="yes")  # type: ignore[arg-type]
        assert await sched.list(upcoming=True) == []


async def test_sqlite_schedule_list_is_the_same_across_its_two_steps(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule's page walks the newest ids, then its index: the rows on either side of
    the boundary come out once each, newest first, with every other filter applied."""
    from tickwork.stores.sqlite import _reads as _sqlite_reads

    monkeypatch.setattr(_sqlite_reads, "_SCHEDULE_SCAN", 7)
    store = tickwork.SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        now = to_us(datetime.now(UTC))
        rows = []
        for i in range(60):
            sid = "a" if i % 3 == 0 else ("b" if i % 17 == 0 else None)
            state = State.FAILED if i % 2 else State.SUCCEEDED
            fire = now + i if sid else None
            rows.append(NewRow("t", now + i, b"", schedule_id=sid, fire_at_us=fire, state=state))
        ids = await store.insert(rows, now)
        a = [ids[i] for i in range(60) if i % 3 == 0][::-1]
        b = [ids[i] for i in range(60) if i % 17 == 0 and i % 3][::-1]
        where_a = InstanceFilter(schedule_id="a")
        assert [i.id for i in await store.list(where=where_a, limit=100)] == a
        assert [i.id for i in await store.list(where=where_a, limit=5)] == a[:5]
        assert [i.id for i in await store.list(where=where_a, limit=7, before_id=a[2])] == a[3:10]
        assert [i.id for i in await store.list(where=InstanceFilter(schedule_id="b"))] == b
        assert await store.list(where=InstanceFilter(schedule_id="c")) == []
        failed = [i.id for i in await store.list(where=where_a, task="t", limit=100)]
        assert failed == a
        history = InstanceFilter(schedule_id="a", history_at_us=now)
        assert [i.id for i in await store.list(where=history, limit=100)] == a
    finally:
        await store.aclose()
