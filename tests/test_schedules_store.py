"""Schedules in the store, held against every store (memory, SQLite, PostgreSQL, dicts).

The store methods are what the CLI uses without a node, and ``claim`` is where the next
occurrence and the misfire policy are written; a node is simulated here by calling
``claim`` / ``finish`` / ``release`` directly, at chosen times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tickwork._time import to_us
from tickwork.errors import InvalidArgument
from tickwork.model import Finish, Instance, NewRow
from tickwork.schedules.plan import MISSED_ROWS_LIMIT, PAUSED, REMOVED, REPLACED
from tickwork.schedules.schedule import Misfire, Overlap, Schedule, new_schedule
from tickwork.schedules.triggers import Cron, Interval
from tickwork.state import State
from tickwork.stores import Store

if TYPE_CHECKING:
    from pathlib import Path

S = 1_000_000
MIN = 60 * S
HOUR = 3600 * S
LEASE = 60 * S
#: a round UTC time (a multiple of every interval below), in the near future
T0 = to_us(datetime(2031, 6, 2, tzinfo=UTC))


@pytest.fixture(params=["memory", "sqlite", "postgres", "dict"])
def kind(request: pytest.FixtureRequest) -> str:
    """Every store, and a store of one's own (``tests/support/dict_store.py``)."""
    return str(request.param)


def every(minutes: int, **kw: object) -> Schedule:
    kw.setdefault("schedule_id", "s")
    return new_schedule("t", Interval(timedelta(minutes=minutes)), **kw)  # type: ignore[arg-type]


async def rows(store: Store, schedule_id: str = "s") -> list[Instance]:
    """Every instance of the schedule, oldest first."""
    found = await store.list(limit=10_000)
    return sorted((i for i in found if i.schedule_id == schedule_id), key=lambda i: i.id)


async def claim(store: Store, now: int, *, window: int = HOUR, limit: int = 1000) -> list[Instance]:
    return await store.claim("node", now + window, limit, now, LEASE)


async def done(store: Store, insts: list[Instance], now: int) -> None:
    finishes = [Finish(i.id, i.claim_token or 0, State.SUCCEEDED, 1, started_us=now) for i in insts]
    assert all(await store.finish("node", finishes, now))


def states(insts: list[Instance]) -> dict[State, int]:
    out: dict[State, int] = {}
    for i in insts:
        out[i.state] = out.get(i.state, 0) + 1
    return out


# -- add -----------------------------------------------------------------------------------


async def test_add_writes_the_first_occurrence_and_is_idempotent(store: Store) -> None:
    first = await store.add_schedule(every(5), T0 + 1)
    assert first.change == "created"
    assert first.next_run_us == T0 + 5 * MIN
    assert first.schedule.last_fire_us == T0 + 5 * MIN
    assert first.schedule.created_us == T0 + 1
    [occ] = await rows(store)
    assert (occ.state, occ.task, occ.fire_at_us, occ.run_at_us) == (
        State.PENDING,
        "t",
        T0 + 5 * MIN,
        T0 + 5 * MIN,
    )
    again = await store.add_schedule(every(5), T0 + 2 * MIN)
    assert again.change == "unchanged"
    assert again.next_run_us is None
    assert again.schedule == first.schedule
    assert len(await rows(store)) == 1
    assert await store.get_schedule("s") == first.schedule
    assert await store.get_schedule("nope") is None


async def test_add_keeps_every_setting(store: Store) -> None:
    s = new_schedule(
        "t",
        Cron("30 2 * * *", "Europe/Berlin"),
        params={"x": [1, 2]},
        schedule_id="full",
        start_at=datetime(2031, 7, 1, tzinfo=UTC),
        end_at=datetime(2031, 8, 1, tzinfo=UTC),
        jitter=timedelta(minutes=3),
        misfire="run_all",
        grace=timedelta(seconds=5),
        catchup_limit=7,
        overlap="queue",
    )
    written = await store.add_schedule(s, T0)
    got = await store.get_schedule("full")
    assert got == written.schedule
    assert got is not None
    assert got.definition() == s.definition()
    assert (got.misfire, got.overlap, got.catchup_limit) == (Misfire.RUN_ALL, Overlap.QUEUE, 7)
    # the first fire is 2031-07-01 02:30 Berlin (00:30 UTC), delayed by its jitter
    [occ] = await rows(store, "full")
    assert occ.fire_at_us == to_us(datetime(2031, 7, 1, 0, 30, tzinfo=UTC))
    assert occ.fire_at_us <= occ.run_at_us < occ.fire_at_us + 3 * MIN
    interval = new_schedule(
        "t",
        Interval(timedelta(seconds=90), datetime(2031, 1, 1, 0, 0, 1, tzinfo=UTC)),
        schedule_id="iv",
    )
    await store.add_schedule(interval, T0)
    got_iv = await store.get_schedule("iv")
    assert got_iv is not None
    assert got_iv.trigger == interval.trigger


async def test_another_definition_is_refused_unless_replaced(store: Store) -> None:
    await store.add_schedule(every(5), T0)
    [old] = await rows(store)
    with pytest.raises(InvalidArgument, match=r"different trigger, overlap; pass replace=True"):
        await store.add_schedule(every(7, overlap="allow"), T0)
    replaced = await store.add_schedule(every(7), T0 + MIN, replace=True)
    assert replaced.change == "replaced"
    assert replaced.schedule.created_us == T0
    old_now, new = await rows(store)
    assert old_now.id == old.id
    assert (old_now.state, old_now.error, old_now.fire_at_us) == (State.ABORTED, REPLACED, None)
    seven = Interval(timedelta(minutes=7)).next_after_us(T0 + MIN)
    assert (new.state, new.fire_at_us) == (State.PENDING, seven)


async def test_a_paused_schedule_is_added_without_occurrences(store: Store) -> None:
    written = await store.add_schedule(every(5, paused=True), T0)
    assert written.schedule.paused
    assert await rows(store) == []
    resumed = await store.resume_schedule("s", T0 + 12 * MIN)
    assert resumed is not None
    assert resumed.change == "resumed"
    assert resumed.next_run_us == T0 + 15 * MIN
    assert [i.fire_at_us for i in await rows(store)] == [T0 + 15 * MIN]


# -- claim: the next occurrence ------------------------------------------------------------


async def test_claiming_the_head_writes_the_next_occurrence(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    got = await claim(store, T0, window=5 * MIN)
    assert got == []
    got = await claim(store, T0 + 5 * MIN)  # window to 01:05: the chain follows in the window
    fires = [i.fire_at_us for i in got]
    assert fires == [T0 + 10 * MIN]
    for _ in range(10):
        more = await claim(store, T0 + 5 * MIN)
        fires += [i.fire_at_us for i in more]
    assert fires == [T0 + k * 10 * MIN for k in range(1, 7)]
    pending = [i for i in await rows(store) if i.state is State.PENDING]
    assert [i.fire_at_us for i in pending] == [T0 + 70 * MIN]
    sched = await store.get_schedule("s")
    assert sched is not None
    assert sched.last_fire_us == T0 + 70 * MIN


async def test_a_released_head_claimed_again_writes_nothing_twice(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    [head] = await claim(store, T0 + 9 * MIN, window=MIN)
    assert await store.release("node", T0 + 9 * MIN) == 1
    [again] = await claim(store, T0 + 9 * MIN, window=MIN)
    assert again.id == head.id
    fires = [i.fire_at_us for i in await rows(store)]
    assert fires == [T0 + 10 * MIN, T0 + 20 * MIN]
    assert len(set(fires)) == len(fires)


async def test_weeks_of_claims_fire_at_every_cron_time(store: Store) -> None:
    cron = Cron("15 9 * * MON-FRI", "America/New_York")
    await store.add_schedule(new_schedule("t", cron, schedule_id="s"), T0)
    now = T0
    for _ in range(3 * 7):
        got = await claim(store, now, window=24 * HOUR)
        await done(store, got, now)
        now += 24 * HOUR
    fires = [i.fire_at_us for i in await rows(store)]
    expected = []
    at: int | None = T0
    while len(expected) < len(fires):
        at = cron.next_after_us(at)  # type: ignore[arg-type]
        expected.append(at)
    assert fires == expected
    assert len(fires) == 16  # 15 weekdays claimed, the 16th pending
    assert states(await rows(store)) == {State.SUCCEEDED: 15, State.PENDING: 1}


async def test_end_at_ends_the_schedule(store: Store) -> None:
    s = every(10, end_at=datetime(2031, 6, 2, 0, 25, tzinfo=UTC))
    await store.add_schedule(s, T0)
    for _ in range(3):
        await claim(store, T0 + HOUR)
    assert [i.fire_at_us for i in await rows(store)] == [T0 + 10 * MIN, T0 + 20 * MIN]
    sched = await store.get_schedule("s")
    assert sched is not None
    assert sched.ended
    assert sched.last_fire_us == T0 + 20 * MIN


# -- claim: late occurrences (misfire) -------------------------------------------------------


async def _down_for_hours(
    store: Store, misfire: str, **kw: object
) -> tuple[list[Instance], list[Instance]]:
    """Every 10 minutes from T0; the node takes the first two, then is down for 3 hours
    with the window's occurrences released; returns (claimed at restart, every row)."""
    await store.add_schedule(every(10, misfire=misfire, **kw), T0)
    held = await claim(store, T0 + 5 * MIN, window=20 * MIN)
    held += await claim(store, T0 + 5 * MIN, window=20 * MIN)
    assert [i.fire_at_us for i in held] == [T0 + 10 * MIN, T0 + 20 * MIN]
    await store.release("node", T0 + 5 * MIN)  # stopped before either ran
    restart = T0 + 3 * HOUR + 5 * S
    got = await claim(store, restart, window=0)
    return got, await rows(store)


async def test_run_once_runs_the_first_late_occurrence_and_records_the_rest(store: Store) -> None:
    got, every_row = await _down_for_hours(store, "run_once")
    assert [i.fire_at_us for i in got] == [T0 + 10 * MIN]
    by_fire = {i.fire_at_us: i for i in every_row}
    # 00:10 runs; 00:20 .. 02:50 are MISSED (16 rows); 03:00 is 5 s late: within grace
    missed = [i for i in every_row if i.state is State.MISSED]
    assert [i.fire_at_us for i in missed] == [T0 + k * 10 * MIN for k in range(2, 18)]
    assert all("misfire=run_once" in (i.error or "") for i in missed)
    assert "coalesced into the run of the occurrence of 2031-06-02T00:10:00Z" in (
        missed[0].error or ""
    )
    assert by_fire[T0 + 3 * HOUR].state is State.PENDING
    assert len(by_fire) == len(every_row)  # one row per fire time


async def test_skip_records_every_late_occurrence(store: Store) -> None:
    got, every_row = await _down_for_hours(store, "skip")
    assert got == []
    assert states(every_row) == {State.MISSED: 17, State.PENDING: 1}
    assert [i.fire_at_us for i in every_row if i.state is State.PENDING] == [T0 + 3 * HOUR]


async def test_run_all_runs_up_to_the_limit_in_order(store: Store) -> None:
    got, every_row = await _down_for_hours(store, "run_all", catchup_limit=5)
    # both released ones and the head are claimed back; two more are written PENDING
    assert [i.fire_at_us for i in got] == [T0 + k * 10 * MIN for k in (1, 2, 3)]
    late = await claim(store, T0 + 3 * HOUR + 6 * S, window=0)
    # the two catch-up rows, and 03:00 (5 s late: within grace, on time)
    assert [i.fire_at_us for i in late] == [T0 + k * 10 * MIN for k in (4, 5, 18)]
    every_row = await rows(store)
    missed = [i for i in every_row if i.state is State.MISSED]
    assert [i.fire_at_us for i in missed] == [T0 + k * 10 * MIN for k in range(6, 18)]
    assert "beyond catchup_limit=5" in (missed[0].error or "")


async def test_a_catch_up_cut_by_the_claim_limit_still_runs_once(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    for _ in range(6):
        await claim(store, T0 + 5 * MIN)  # chain through the window: 6 held, 1 pending
    assert await store.release("node", T0 + 5 * MIN) == 6
    restart = T0 + 5 * HOUR
    # the first claim takes two of the seven late rows; the catch-up decides for all
    first = await claim(store, restart, window=0, limit=2)
    assert [i.fire_at_us for i in first] == [T0 + 10 * MIN]
    second = await claim(store, restart, window=0, limit=100)
    assert [i.fire_at_us for i in second] == [restart]  # due now: on time, not a misfire
    missed = [i.fire_at_us for i in await rows(store) if i.state is State.MISSED]
    assert missed == [T0 + k * 10 * MIN for k in range(2, 30)]
    assert states(await rows(store)) == {State.CLAIMED: 2, State.MISSED: 28, State.PENDING: 1}


async def test_missed_rows_per_catch_up_are_bounded(store: Store) -> None:
    await store.add_schedule(every(1, misfire="skip"), T0)
    ten_days = T0 + 10 * 24 * HOUR
    assert await claim(store, ten_days, window=0) == []
    every_row = await rows(store)
    missed = [i for i in every_row if i.state is State.MISSED]
    assert len(missed) == MISSED_ROWS_LIMIT + 1 + 1  # the claimed head, 100, one summary
    summary = missed[-1]
    # the late fire times (due more than a minute ago): the head, 100 recorded one by one,
    # this one and 14296 more; the one due a minute ago is within grace: pending
    assert summary.error is not None
    assert summary.error.startswith("misfire=skip: this and 14296 later occurrences up to ")
    assert "up to 2031-06-11T23:58:00Z" in summary.error
    assert [i.fire_at_us for i in every_row if i.state is State.PENDING] == [ten_days - MIN]


# -- pause, resume, remove, abort ------------------------------------------------------------


async def test_pause_stops_writing_and_resume_starts_after_now(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    paused = await store.pause_schedule("s", T0 + MIN)
    assert paused is not None
    assert paused.paused
    assert await store.pause_schedule("s", T0 + MIN) == paused  # again: nothing changes
    [head] = await claim(store, T0 + 5 * MIN)
    assert await claim(store, T0 + 5 * MIN) == []  # paused: no next occurrence
    [check] = await store.check_occurrences([head.id], T0 + 10 * MIN)
    assert (check.run, check.state, check.reason) == (False, State.MISSED, PAUSED)
    await store.finish(
        "node", [Finish(head.id, head.claim_token or 0, State.MISSED, 0, error=PAUSED)], T0
    )
    resumed = await store.resume_schedule("s", T0 + 2 * HOUR + MIN)
    assert resumed is not None
    assert (resumed.change, resumed.next_run_us) == ("resumed", T0 + 2 * HOUR + 10 * MIN)
    assert resumed.schedule.paused is False
    fires = [(i.fire_at_us, i.state) for i in await rows(store)]
    assert fires == [(T0 + 10 * MIN, State.MISSED), (T0 + 130 * MIN, State.PENDING)]
    assert await store.pause_schedule("nope", T0) is None
    assert await store.resume_schedule("nope", T0) is None


async def test_resume_records_what_came_due_while_paused_and_no_node_ran(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    await store.pause_schedule("s", T0)
    resumed = await store.resume_schedule("s", T0 + HOUR + 5 * MIN)
    assert resumed is not None
    got = [(i.fire_at_us, i.state, i.error) for i in await rows(store)]
    assert got == [
        (T0 + 10 * MIN, State.MISSED, PAUSED),
        (T0 + 70 * MIN, State.PENDING, None),
    ]


async def test_resume_before_the_occurrence_keeps_it(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    await store.pause_schedule("s", T0 + MIN)
    resumed = await store.resume_schedule("s", T0 + 2 * MIN)
    assert resumed is not None
    assert resumed.next_run_us is None
    assert [(i.fire_at_us, i.state) for i in await rows(store)] == [(T0 + 10 * MIN, State.PENDING)]
    running = await store.resume_schedule("s", T0 + 3 * MIN)
    assert running is not None
    assert running.change == "running"


async def test_resume_of_a_running_schedule_leaves_late_ones_to_the_misfire_policy(
    store: Store,
) -> None:
    await store.add_schedule(every(10), T0)
    running = await store.resume_schedule("s", T0 + 5 * HOUR)
    assert running is not None
    assert (running.change, running.next_run_us) == ("running", None)
    assert [(i.fire_at_us, i.state) for i in await rows(store)] == [(T0 + 10 * MIN, State.PENDING)]


async def test_remove_aborts_pending_and_detaches_held_occurrences(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    held = await claim(store, T0 + 5 * MIN, window=10 * MIN)
    assert len(held) == 1
    assert await store.remove_schedule("s", T0 + 6 * MIN)
    assert await store.get_schedule("s") is None
    assert not await store.remove_schedule("s", T0 + 6 * MIN)
    held_now, pending = await rows(store)
    assert (held_now.state, held_now.fire_at_us, held_now.error) == (State.CLAIMED, None, REMOVED)
    assert (pending.state, pending.fire_at_us, pending.error) == (State.ABORTED, None, REMOVED)
    [check] = await store.check_occurrences([held[0].id], T0 + 10 * MIN)
    assert (check.run, check.state, check.reason) == (False, State.ABORTED, REMOVED)
    # nothing is written when the held one is claimed again (after a restart)
    await store.release("node", T0 + 7 * MIN)
    await claim(store, T0 + 7 * MIN)
    assert len(await rows(store)) == 2
    # re-added, the same id starts afresh: the detached rows free their fire times
    again = await store.add_schedule(every(10), T0 + 8 * MIN)
    assert again.change == "created"
    assert again.next_run_us == T0 + 10 * MIN


async def test_aborting_the_pending_head_does_not_stop_the_schedule(store: Store) -> None:
    await store.add_schedule(every(10), T0)
    [head] = await rows(store)
    result = await store.request_abort(head.id, T0 + MIN)
    assert result.state is State.ABORTED
    fires = [(i.fire_at_us, i.state) for i in await rows(store)]
    assert fires == [(T0 + 10 * MIN, State.ABORTED), (T0 + 20 * MIN, State.PENDING)]


async def test_check_reports_overlap_and_catch_up(store: Store) -> None:
    await store.add_schedule(every(10, overlap="queue", misfire="run_all"), T0)
    [head] = await rows(store)
    on_time, late = await store.check_occurrences([head.id, head.id], T0 + 10 * MIN)
    assert (on_time.run, on_time.overlap, on_time.catchup) == (True, Overlap.QUEUE, False)
    assert on_time.misfire is Misfire.RUN_ALL  # decides a backlog (actors/overlap.py)
    [late] = await store.check_occurrences([head.id], T0 + 20 * MIN)
    assert (late.run, late.catchup) == (True, True)
    await store.add_schedule(every(10, schedule_id="once"), T0)
    [once] = await rows(store, "once")
    [check] = await store.check_occurrences([once.id], T0 + 10 * MIN)
    assert (check.misfire, check.overlap) == (Misfire.RUN_ONCE, Overlap.SKIP)
    [plain] = await store.insert([NewRow("t", T0, b"")], T0)
    [unknown] = await store.check_occurrences([plain], T0)
    assert unknown.run


async def test_list_schedules_pages_in_id_order(store: Store) -> None:
    for name in ["b", "a", "d", "c"]:
        await store.add_schedule(every(5, schedule_id=name), T0)
    first = await store.list_schedules(limit=3)
    assert [s.id for s in first] == ["a", "b", "c"]
    rest = await store.list_schedules(limit=3, after_id="c")
    assert [s.id for s in rest] == ["d"]


# -- SQLite: the statements use their indexes; an older file is migrated -------------------


async def test_sqlite_schedule_statements_use_indexes(tmp_path: Path) -> None:
    import re
    import sqlite3

    from tickwork.stores.sqlite import SQLiteStore

    db = tmp_path / "plans.db"
    store = SQLiteStore(db)
    await store.open(node_id="node")
    seen: list[str] = []
    conn = store._conn
    assert conn is not None
    assert store._worker is not None
    await store._worker.call(lambda: conn.set_trace_callback(seen.append))
    try:
        await store.add_schedule(every(10), T0)
        await claim(store, T0 + 5 * MIN)
        await store.release("node", T0)
        await claim(store, T0 + 5 * HOUR, window=0)
        [head] = await claim(store, T0 + 5 * HOUR)
        await store.check_occurrences([head.id], T0)
        await store.pause_schedule("s", T0)
        await store.resume_schedule("s", T0 + 6 * HOUR)
        pending = [i for i in await rows(store) if i.state is State.PENDING]
        await store.request_abort(pending[0].id, T0)
        await store.list_schedules(after_id="a")
        await store.add_schedule(every(5), T0, replace=True)
        await store.remove_schedule("s", T0)
    finally:
        await store._worker.call(lambda: conn.set_trace_callback(None))
        await store.aclose()
    plans = {}
    with sqlite3.connect(db) as c:
        for sql in seen:
            if sql.startswith(("SELECT", "UPDATE", "DELETE")) and "schedule" in sql:
                plans[sql] = " | ".join(str(r[-1]) for r in c.execute("EXPLAIN QUERY PLAN " + sql))
    assert len(plans) >= 6
    for sql, plan in plans.items():
        assert not re.search(r"SCAN (instances|schedules)(?! USING)", plan), (sql, plan)
        assert "TEMP B-TREE" not in plan, (sql, plan)


async def test_sqlite_file_of_an_older_schema_gets_the_schedules_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickwork.stores.sqlite import SQLiteStore
    from tickwork.stores.sqlite import _schema as _sqlite_schema

    db = tmp_path / "old.db"
    full = _sqlite_schema.MIGRATIONS
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full[:-1])
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full) - 1)
    old = SQLiteStore(db)
    await old.open()
    await old.aclose()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full))
    new = SQLiteStore(db)
    await new.open()
    try:
        written = await new.add_schedule(every(5), T0)
        assert written.change == "created"
    finally:
        await new.aclose()
