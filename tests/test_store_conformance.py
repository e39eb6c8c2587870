"""The Store contract (``tickwork.stores.base``), held against every store.

Each test runs on the memory store, the SQLite store (a fresh file), PostgreSQL (a
fresh schema; skipped without a server) and a store of one's own over plain dicts
(``tests/support/dict_store.py``, written with only what ``tickwork.stores`` exports).
Times are real UTC microseconds around "now", so a store that takes lease times from its
own clock (PostgreSQL's ``now()``) agrees with one that uses ``now_us``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.protocol_check import protocol_mismatches
from tests.support.store_fixtures import NODE
from tickwork._time import to_us
from tickwork.errors import IllegalTransition, InvalidArgument
from tickwork.model import (
    DEFAULT_MAX_PARAMS_BYTES,
    LIST_PARAMS_BYTES,
    Finish,
    Instance,
    NewRow,
    RunOutput,
)
from tickwork.schedules.schedule import new_schedule
from tickwork.schedules.triggers import Interval
from tickwork.state import State
from tickwork.stores import INTERRUPTED, Store
from tickwork.stores.cluster import NodeRegistry

S = 1_000_000  # one second in µs
LEASE = 60 * S


@pytest.fixture(params=["memory", "sqlite", "postgres", "dict"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def now() -> int:
    return to_us(datetime.now(UTC))


def row(task: str = "t", at: int = 0, **kw: object) -> NewRow:
    return NewRow(task=task, run_at_us=at, params=kw.pop("params", b"p"), **kw)  # type: ignore[arg-type]


def done(inst: Instance, state: State = State.SUCCEEDED, **kw: object) -> Finish:
    assert inst.claim_token is not None
    kw.setdefault("attempts", inst.attempts + 1)
    return Finish(id=inst.id, claim_token=inst.claim_token, state=state, **kw)  # type: ignore[arg-type]


async def claim_all(store: Store, owner: str, now: int, **kw: int) -> list[Instance]:
    return await store.claim(
        owner,
        kw.get("due", now + 3600 * S),
        kw.get("limit", 1000),
        kw.get("at", now),
        kw.get("lease", LEASE),
    )


# -- insert --------------------------------------------------------------------------------


async def test_a_mixed_batch_keeps_every_row_its_own_values(store: Store, now: int) -> None:
    """Rows sharing task and params, interleaved with rows that differ (params, optional
    columns, dedup keys): every row gets its own id, in order, and its own values (the
    SQLite store inserts shared rows in groups, with ids that are not consecutive)."""
    rows = []
    for i in range(60):
        if i % 3 == 0:
            rows.append(row(at=now + i, params=b"shared"))
        elif i % 3 == 1:
            rows.append(row(task="u", at=now + i, params=i.to_bytes(2, "big")))
        else:
            rows.append(row(at=now + i, params=b"shared", max_attempts=3, dedup_key=f"k{i}"))
    rows += [row(at=now + 100 + i, params=b"run") for i in range(40)]  # one run of ids
    ids = await store.insert(rows, now)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(rows)
    for iid, r in zip(ids, rows, strict=True):
        got = await store.get(iid)
        assert got is not None
        assert (got.task, got.run_at_us, got.params, got.max_attempts, got.dedup_key) == (
            r.task, r.run_at_us, r.params, r.max_attempts, r.dedup_key,
        )  # fmt: skip
        assert got.state is State.PENDING
    assert await store.count() == 100
    claimed = await claim_all(store, "a", now + 200, limit=1000)
    assert [i.id for i in claimed] == ids  # in due order, which is id order here


async def test_insert_returns_ids_in_order_and_stores_the_rows(store: Store, now: int) -> None:
    ids = await store.insert(
        [
            row("a", now + 3 * S, params=b"one", max_attempts=3, timeout_us=5 * S),
            row("b", now + 1 * S),
            row("c", now + 2 * S),
        ],
        now,
    )
    assert len(ids) == 3
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    first = await store.get(ids[0])
    assert first is not None
    assert (first.id, first.task, first.run_at_us, first.params) == (
        ids[0],
        "a",
        now + 3 * S,
        b"one",
    )
    assert (first.state, first.attempts, first.error) == (State.PENDING, 0, None)
    assert (first.owner, first.claim_token, first.lease_until_us) == (None, None, None)
    assert (first.max_attempts, first.timeout_us) == (3, 5 * S)
    assert first.created_us == now
    more = await store.insert([row("d", now)], now)
    assert more[0] > ids[-1]
    assert await store.insert([], now) == []


async def test_insert_dedup_key_returns_the_existing_id(store: Store, now: int) -> None:
    [first] = await store.insert([row(at=now, dedup_key="k1")], now)
    ids = await store.insert(
        [row(at=now + S, dedup_key="k1"), row(at=now, dedup_key="k2"), row(at=now, dedup_key="k2")],
        now,
    )
    assert ids[0] == first
    assert ids[1] == ids[2] != first
    assert await store.count() == 2
    kept = await store.get(first)
    assert kept is not None
    assert kept.run_at_us == now  # the duplicate did not overwrite it
    assert kept.dedup_key == "k1"


async def test_dedup_key_holds_after_the_instance_ended(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now, dedup_key="once")], now)
    await store.request_abort(iid, now)
    assert await store.insert([row(at=now, dedup_key="once")], now) == [iid]
    assert await store.count() == 1


async def test_schedule_fire_time_is_unique(store: Store, now: int) -> None:
    ids = await store.insert(
        [
            row(at=now, schedule_id="s1", fire_at_us=now),
            row(at=now, schedule_id="s1", fire_at_us=now + S),
            row(at=now, schedule_id="s2", fire_at_us=now),
        ],
        now,
    )
    assert len(set(ids)) == 3
    again = await store.insert(
        [
            row(at=now, schedule_id="s1", fire_at_us=now + S),
            row(at=now, schedule_id="s3", fire_at_us=now),
            row(at=now, schedule_id="s3", fire_at_us=now),
        ],
        now,
    )
    assert again[0] == ids[1]
    assert again[1] == again[2] not in ids
    assert await store.count() == 4
    inst = await store.get(ids[1])
    assert inst is not None
    assert (inst.schedule_id, inst.fire_at_us) == ("s1", now + S)


async def test_insert_a_terminal_row(store: Store, now: int) -> None:
    [iid] = await store.insert(
        [row(at=now, state=State.MISSED, error="skipped", schedule_id="s", fire_at_us=now)], now
    )
    inst = await store.get(iid)
    assert inst is not None
    assert (inst.state, inst.error) == (State.MISSED, "skipped")
    assert await claim_all(store, "a", now) == []
    assert await store.next_pending_at() is None


# -- claim ---------------------------------------------------------------------------------


async def test_claim_takes_due_rows_in_run_at_then_id_order(store: Store, now: int) -> None:
    ids = await store.insert(
        [
            row("t3", now + 3 * S),
            row("t1", now + 1 * S),
            row("t2a", now + 2 * S),
            row("t2b", now + 2 * S),
            row("late", now + 100 * S),
        ],
        now,
    )
    got = await store.claim("a", now + 10 * S, 3, now, LEASE)
    assert [i.id for i in got] == [ids[1], ids[2], ids[3]]
    got = await store.claim("a", now + 10 * S, 3, now, LEASE)
    assert [i.id for i in got] == [ids[0]]  # the horizon leaves "late" alone
    assert await store.claim("a", now + 10 * S, 3, now, LEASE) == []
    late = await store.get(ids[4])
    assert late is not None
    assert late.state is State.PENDING
    got = await store.claim("a", now + 100 * S, 3, now, LEASE)  # run_at == horizon is due
    assert [i.id for i in got] == [ids[4]]


async def test_claim_sets_owner_token_and_lease(store: Store, now: int) -> None:
    await store.insert([row(at=now), row(at=now + S)], now)
    got = await store.claim("node-a", now + 10 * S, 10, now, LEASE)
    assert len(got) == 2
    tokens = {i.claim_token for i in got}
    assert len(tokens) == 1  # one fresh token per claim call
    assert None not in tokens
    for inst in got:
        assert inst.state is State.CLAIMED
        assert inst.owner == "node-a"
        assert inst.lease_until_us is not None
        assert abs(inst.lease_until_us - (now + LEASE)) < 30 * S
        assert await store.get(inst.id) == inst


async def test_each_claim_gets_a_fresh_token(store: Store, now: int) -> None:
    await store.insert([row(at=now), row(at=now)], now)
    [a] = await store.claim("a", now, 1, now, LEASE)
    [b] = await store.claim("a", now, 1, now, LEASE)
    assert a.claim_token != b.claim_token


async def test_claim_with_zero_limit_takes_nothing(store: Store, now: int) -> None:
    await store.insert([row(at=now)], now)
    assert await store.claim("a", now, 0, now, LEASE) == []
    assert await store.count(state=State.PENDING) == 1


async def test_held_rows_are_not_claimed_again_while_the_lease_lives(
    store: Store, now: int
) -> None:
    await store.insert([row(at=now)], now)
    assert len(await claim_all(store, "a", now)) == 1
    assert await claim_all(store, "b", now, at=now + S) == []
    assert await claim_all(store, "a", now, at=now + S) == []


async def test_expired_lease_is_taken_over_with_a_new_token(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [old] = await claim_all(store, "a", now, lease=1)
    [new] = await claim_all(store, "b", now, at=now + 10 * S)
    assert new.id == iid
    assert new.owner == "b"
    assert new.state is State.CLAIMED
    assert new.claim_token != old.claim_token
    # the old holder is fenced out, the new one writes
    assert await store.finish("a", [done(old)], now + 11 * S) == [False]
    assert await store.start("a", [(iid, old.claim_token or 0)], now + 11 * S) == [False]
    assert await store.finish("b", [done(new)], now + 11 * S) == [True]


async def test_takeover_and_pending_share_one_due_order(store: Store, now: int) -> None:
    [early] = await store.insert([row(at=now - 5 * S)], now)
    await claim_all(store, "a", now, lease=1)
    [mid, late] = await store.insert([row(at=now - 3 * S), row(at=now - 1 * S)], now)
    got = await store.claim("b", now, 2, now + 10 * S, LEASE)
    assert [i.id for i in got] == [early, mid]
    assert all(i.owner == "b" for i in got)
    left = await store.get(late)
    assert left is not None
    assert left.state is State.PENDING


async def test_expired_durable_running_row_fails_as_interrupted(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now, lease=1)
    assert await store.start("a", [(iid, inst.claim_token or 0)], now) == [True]
    assert await claim_all(store, "b", now, at=now + 10 * S) == []
    after = await store.get(iid)
    assert after is not None
    assert (after.state, after.error) == (State.FAILED, INTERRUPTED)


async def test_abort_requested_row_is_aborted_instead_of_claimed(store: Store, now: int) -> None:
    [iid, other] = await store.insert([row(at=now), row(at=now + S)], now)
    [inst, _] = await claim_all(store, "a", now, lease=1)
    assert (await store.request_abort(iid, now)).requested
    got = await claim_all(store, "b", now, at=now + 10 * S)
    assert [i.id for i in got] == [other]  # taken over; the aborted one is not handed out
    aborted = await store.get(iid)
    assert aborted is not None
    assert aborted.state is State.ABORTED
    assert await store.finish("a", [done(inst)], now) == [False]


# -- start / finish / fencing ---------------------------------------------------------------


async def test_start_makes_running_durable_and_is_fenced(store: Store, now: int) -> None:
    [i1, i2] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now)
    token = c1.claim_token or 0
    assert await store.start("b", [(i1, token)], now) == [False]
    assert await store.start("a", [(i1, token + 1000)], now) == [False]
    assert await store.start("a", [(999_999, token)], now) == [False]
    assert (await store.get(i1)) == c1
    assert await store.start("a", [(i1, token), (i2, token)], now + S) == [True, True]
    running = await store.get(i1)
    assert running is not None
    assert (running.state, running.owner, running.claim_token) == (State.RUNNING, "a", token)
    assert c2.id == i2


async def test_finish_is_fenced_by_owner_and_token(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    token = inst.claim_token or 0
    wrong_owner = Finish(id=iid, claim_token=token, state=State.SUCCEEDED, attempts=1)
    stale = Finish(id=iid, claim_token=token + 1, state=State.SUCCEEDED, attempts=1)
    unknown = Finish(id=iid + 1000, claim_token=token, state=State.SUCCEEDED, attempts=1)
    assert await store.finish("b", [wrong_owner], now) == [False]
    assert await store.finish("a", [stale, unknown], now) == [False, False]
    assert await store.get(iid) == inst
    assert await store.history(iid) == []


async def test_finish_to_a_terminal_state(store: Store, now: int) -> None:
    [iid, other] = await store.insert([row(at=now), row(at=now)], now)
    [inst, inst2] = await claim_all(store, "a", now)
    ok = await store.finish(
        "a",
        [done(inst, State.FAILED, error="boom"), done(inst2, State.SUCCEEDED)],
        now + S,
    )
    assert ok == [True, True]
    failed = await store.get(iid)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.error) == (State.FAILED, 1, "boom")
    assert failed.owner == "a"  # the last node is kept
    assert failed.lease_until_us is None
    assert failed.updated_us == now + S
    succeeded = await store.get(other)
    assert succeeded is not None
    assert succeeded.state is State.SUCCEEDED
    # an ended instance is never written again
    assert await store.finish("a", [done(inst, State.SUCCEEDED)], now + 2 * S) == [False]
    again = await store.get(iid)
    assert again is not None
    assert again.state is State.FAILED


async def test_finish_to_pending_is_a_retry(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    retry = done(inst, State.PENDING, error="flaky", run_at_us=now + 30 * S)
    assert await store.finish("a", [retry], now + S) == [True]
    back = await store.get(iid)
    assert back is not None
    assert (back.state, back.attempts, back.error, back.run_at_us) == (
        State.PENDING,
        1,
        "flaky",
        now + 30 * S,
    )
    assert (back.owner, back.claim_token, back.lease_until_us) == (None, None, None)
    assert await store.next_pending_at() == now + 30 * S
    assert await store.claim("a", now + 29 * S, 10, now + S, LEASE) == []
    [again] = await store.claim("a", now + 30 * S, 10, now + S, LEASE)
    assert (again.id, again.attempts) == (iid, 1)
    assert again.claim_token != inst.claim_token


async def test_finish_to_pending_without_run_at_keeps_it(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now - S)], now)
    [inst] = await claim_all(store, "a", now)
    assert await store.finish("a", [done(inst, State.PENDING, attempts=0)], now) == [True]
    back = await store.get(iid)
    assert back is not None
    assert (back.state, back.run_at_us, back.attempts) == (State.PENDING, now - S, 0)


async def test_finish_refuses_a_non_outcome_state(store: Store, now: int) -> None:
    [i1, i2] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now)
    for bad in (State.CLAIMED,):  # RUNNING: an at-least-once start (test_store_running)
        with pytest.raises(IllegalTransition):
            await store.finish("a", [done(c1), done(c2, bad)], now)
    # nothing of the refused batch was written
    assert await store.get(i1) == c1
    assert await store.get(i2) == c2


async def test_running_row_cannot_be_missed(store: Store, now: int) -> None:
    [i1, i2] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now)
    assert await store.start("a", [(i1, c1.claim_token or 0)], now) == [True]
    assert await store.finish("a", [done(c1, State.MISSED), done(c2, State.MISSED)], now) == [
        False,
        True,
    ]
    r1, r2 = await store.get(i1), await store.get(i2)
    assert r1 is not None
    assert r2 is not None
    assert (r1.state, r2.state) == (State.RUNNING, State.MISSED)


async def test_a_batch_finishing_one_row_twice_applies_it_once(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    ok = await store.finish(
        "a", [done(inst, State.SUCCEEDED, started_us=now), done(inst, State.FAILED)], now
    )
    assert ok == [True, False]
    final = await store.get(iid)
    assert final is not None
    assert final.state is State.SUCCEEDED
    assert len(await store.history(iid)) == 1


# -- history --------------------------------------------------------------------------------


async def test_history_records_attempts_with_a_start(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [c] = await claim_all(store, "a", now)
    first = done(
        c,
        State.PENDING,
        error="ValueError: no",
        error_type="ValueError",
        run_at_us=now,
        started_us=now + 1,
        finished_us=now + 2,
    )
    assert await store.finish("a", [first], now + 3) == [True]
    [c] = await claim_all(store, "b", now, at=now + 3)
    second = done(c, State.SUCCEEDED, result="42", started_us=now + 4, finished_us=now + 5)
    assert await store.finish("b", [second], now + 6) == [True]
    h = await store.history(iid)
    assert [(a.attempt, a.node, a.started_us, a.finished_us, a.state) for a in h] == [
        (1, "a", now + 1, now + 2, State.FAILED),
        (2, "b", now + 4, now + 5, State.SUCCEEDED),
    ]
    assert (h[0].error_type, h[0].error, h[0].result) == ("ValueError", "ValueError: no", None)
    assert (h[1].error_type, h[1].error, h[1].result) == (None, None, "42")
    assert all(a.instance_id == iid for a in h)
    assert await store.history(iid + 1000) == []


async def test_history_keeps_each_attempts_output_structured(store: Store, now: int) -> None:
    """A retried attempt and the last one keep their own output (SQLite keeps the last in
    the instance's row, the retried ones in ``history``): text with any characters, the
    exit code apart; an attempt without output reads None."""
    [iid] = await store.insert([row(at=now)], now)
    [c] = await claim_all(store, "a", now)
    big = "é" * 70_000 + "\n\x00'\"\\"
    failed = RunOutput(stdout=big, stderr="boom ✗\n", exit_code=3)
    first = done(
        c, State.PENDING, error="BashFailed: 3", error_type="BashFailed", run_at_us=now,
        started_us=now + 1, finished_us=now + 2, output=failed.to_json(),
    )  # fmt: skip
    assert await store.finish("a", [first], now + 3) == [True]
    [c] = await claim_all(store, "a", now, at=now + 3)
    timed_out = RunOutput(stdout="", stderr="partial", exit_code=None)
    second = done(
        c, State.PENDING, error="BashTimeout: late", error_type="BashTimeout", run_at_us=now,
        started_us=now + 4, finished_us=now + 5, output=timed_out.to_json(),
    )  # fmt: skip
    assert await store.finish("a", [second], now + 6) == [True]
    [c] = await claim_all(store, "a", now, at=now + 6)
    ok = RunOutput(stdout="fine\n", stderr="", exit_code=0)
    third = done(c, started_us=now + 7, finished_us=now + 8, output=ok.to_json())
    assert await store.finish("a", [third], now + 9) == [True]
    [other] = await store.insert([row(at=now)], now + 9)
    [c] = await claim_all(store, "a", now, at=now + 9)
    assert await store.finish("a", [done(c, result="7", started_us=now + 9)], now + 10) == [True]
    assert [a.output for a in await store.history(iid)] == [failed, timed_out, ok]
    [plain] = await store.history(other)
    assert (plain.output, plain.result) == (None, "7")


async def test_finish_without_start_writes_no_history(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [c] = await claim_all(store, "a", now)
    assert await store.finish("a", [done(c, State.ABORTED, attempts=0)], now) == [True]
    assert await store.history(iid) == []


async def test_history_finished_time_defaults_to_now(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [c] = await claim_all(store, "a", now)
    assert await store.finish("a", [done(c, started_us=now + 1)], now + 9) == [True]
    [a] = await store.history(iid)
    assert (a.started_us, a.finished_us) == (now + 1, now + 9)


# -- release / renew / recover -------------------------------------------------------------


async def test_release_gives_back_what_an_owner_holds(store: Store, now: int) -> None:
    ids = await store.insert([row(at=now) for _ in range(4)], now)
    mine = await claim_all(store, "a", now, limit=3)
    [theirs] = await claim_all(store, "b", now)
    assert await store.start("a", [(mine[1].id, mine[1].claim_token or 0)], now) == [True]
    await store.request_abort(mine[2].id, now)
    assert await store.release("a", now + S) == 3
    states = {i: (await store.get(i)) for i in ids}
    claimed, running, aborted = (states[m.id] for m in mine)
    assert claimed is not None
    assert running is not None
    assert aborted is not None
    assert (claimed.state, claimed.owner, claimed.claim_token) == (State.PENDING, None, None)
    assert claimed.lease_until_us is None
    assert claimed.attempts == 0
    assert (running.state, running.error, running.attempts) == (State.FAILED, INTERRUPTED, 1)
    assert aborted.state is State.ABORTED
    assert states[theirs.id] == theirs  # b's row is untouched
    assert await store.abort_requests("a") == []
    assert await store.release("a", now + S) == 0


async def test_release_only_the_given_ids(store: Store, now: int) -> None:
    ids = await store.insert([row(at=now) for _ in range(3)], now)
    await claim_all(store, "a", now, limit=2)
    assert await store.release("a", now, [ids[0], ids[2], 12345]) == 1
    states = [(await store.get(i)).state for i in ids]  # type: ignore[union-attr]
    assert states == [State.PENDING, State.CLAIMED, State.PENDING]
    assert await store.release("b", now, [ids[1]]) == 0


async def test_renew_extends_every_lease_of_the_owner(store: Store, now: int) -> None:
    await store.insert([row(at=now) for _ in range(3)], now)
    [theirs] = await claim_all(store, "b", now, limit=1)
    await claim_all(store, "a", now, limit=2, lease=1)
    assert await store.renew("a", now + S, LEASE) == 2
    assert await store.renew("nobody", now + S, LEASE) == 0
    for inst in await store.list(state=State.CLAIMED):
        assert inst.lease_until_us is not None
        assert inst.lease_until_us > now + LEASE // 2
    # renewed: no takeover shortly after
    assert await claim_all(store, "c", now, at=now + 2 * S) == []
    assert theirs.owner == "b"


async def test_recover_releases_every_claim(kind: str, store: Store, now: int) -> None:
    ids = await store.insert([row(at=now) for _ in range(3)], now)
    [a1, a2] = await claim_all(store, "a", now, limit=2)
    [b1] = await claim_all(store, "b", now)
    assert await store.start("a", [(a2.id, a2.claim_token or 0)], now) == [True]
    changed = await store.recover(now + S)
    if kind == "postgres":  # a cluster store leaves dead claims to lease expiry
        assert changed == 0
        return
    assert changed == 3
    got = {i: await store.get(i) for i in ids}
    assert got[a1.id].state is State.PENDING  # type: ignore[union-attr]
    assert got[a2.id].state is State.FAILED  # type: ignore[union-attr]
    assert got[a2.id].error == INTERRUPTED  # type: ignore[union-attr]
    assert got[b1.id].state is State.PENDING  # type: ignore[union-attr]
    assert await store.recover(now + S) == 0


# -- aborts --------------------------------------------------------------------------------


async def test_request_abort_in_every_state(store: Store, now: int) -> None:
    pending, claimed, running, ended = await store.insert([row(at=now) for _ in range(4)], now)
    r = await store.request_abort(pending, now)
    assert (r.found, r.state, r.requested, r.previous) == (
        True,
        State.ABORTED,
        False,
        State.PENDING,
    )
    assert r.owner is None
    cs = await claim_all(store, "a", now)
    by_id = {c.id: c for c in cs}
    assert set(by_id) == {claimed, running, ended}
    await store.start("a", [(running, by_id[running].claim_token or 0)], now)
    await store.finish("a", [done(by_id[ended])], now)

    r = await store.request_abort(pending, now)  # a second time: already ended
    assert (r.found, r.state, r.requested, r.previous) == (
        True,
        State.ABORTED,
        False,
        State.ABORTED,
    )
    r = await store.request_abort(claimed, now)
    assert (r.found, r.state, r.owner, r.requested) == (True, State.CLAIMED, "a", True)
    assert r.previous is State.CLAIMED
    r = await store.request_abort(running, now)
    assert (r.found, r.state, r.owner, r.requested) == (True, State.RUNNING, "a", True)
    assert r.previous is State.RUNNING
    r = await store.request_abort(ended, now)
    assert (r.found, r.state, r.requested) == (True, State.SUCCEEDED, False)
    assert r.previous is State.SUCCEEDED
    r = await store.request_abort(999_999, now)
    assert not r.found
    assert (r.state, r.previous) == (None, None)

    assert await store.abort_requests("a") == sorted([claimed, running])
    assert await store.abort_requests("b") == []
    # the request did not change the held rows' state
    held = await store.get(claimed)
    assert held is not None
    assert held.state is State.CLAIMED
    ended_row = await store.get(ended)
    assert ended_row is not None
    assert ended_row.state is State.SUCCEEDED


async def test_the_owner_carries_out_an_abort(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [c] = await claim_all(store, "a", now)
    await store.request_abort(iid, now)
    assert await store.finish("a", [done(c, State.ABORTED, attempts=0)], now) == [True]
    assert await store.abort_requests("a") == []
    after = await store.get(iid)
    assert after is not None
    assert after.state is State.ABORTED
    # an ABORTED row is never finished again
    assert await store.finish("a", [done(c, State.SUCCEEDED)], now) == [False]


async def test_a_retry_of_an_abort_requested_row_is_aborted_at_once(store: Store, now: int) -> None:
    """An abort that was requested wins at once: a retry (or a give-back) of the row is
    written ABORTED by the finish itself, so ``get``, ``list`` and the counts agree on
    every store before any claim runs; the failed attempt stays in the history."""
    ids = await store.insert([row(at=now), row(at=now)], now)
    retried, given_back = await claim_all(store, "a", now)
    for iid in ids:
        await store.request_abort(iid, now)
    retry = done(
        retried,
        State.PENDING,
        error="ValueError: no",
        error_type="ValueError",
        run_at_us=now + S,
        started_us=now + 1,
        finished_us=now + 2,
    )
    back = done(given_back, State.PENDING, attempts=0)
    assert await store.finish("a", [retry, back], now + 3) == [True, True]
    for iid in ids:
        after = await store.get(iid)
        assert after is not None
        assert after.state is State.ABORTED
        assert (after.claim_token, after.lease_until_us) == (None, None)
    assert await store.count(state=State.ABORTED) == 2
    assert await store.count(state=State.PENDING) == 0
    counts = await store.count_by_state()
    assert (counts[State.ABORTED], counts[State.PENDING], counts[State.CLAIMED]) == (2, 0, 0)
    assert [i.id for i in await store.list(state=State.ABORTED)] == sorted(ids, reverse=True)
    assert await store.list(state=State.PENDING) == []
    assert await store.next_pending_at() is None
    assert await store.abort_requests("a") == []
    [attempt] = await store.history(retried.id)
    assert (attempt.attempt, attempt.state, attempt.error) == (1, State.FAILED, "ValueError: no")
    assert await store.history(given_back.id) == []
    assert await claim_all(store, "a", now + 2 * S, at=now + 2 * S) == []


# -- reads ---------------------------------------------------------------------------------


async def test_list_is_newest_first_filtered_and_paged(store: Store, now: int) -> None:
    ids = await store.insert([row("x" if i % 2 else "y", now) for i in range(10)], now)
    await store.request_abort(ids[3], now)
    await store.request_abort(ids[7], now)
    page = await store.list(limit=4)
    assert [i.id for i in page] == ids[::-1][:4]
    page2 = await store.list(limit=4, before_id=page[-1].id)
    assert [i.id for i in page2] == ids[::-1][4:8]
    assert [i.id for i in await store.list(state=State.ABORTED)] == [ids[7], ids[3]]
    assert [i.id for i in await store.list(task="x", limit=100)] == ids[1::2][::-1]
    xs = await store.list(task="x", state=State.PENDING, before_id=ids[7])
    assert [i.id for i in xs] == [ids[5], ids[1]]
    assert await store.list(task="nope") == []
    assert await store.list(limit=0) == []
    assert await store.list(before_id=ids[0]) == []


async def test_count_and_count_by_state(store: Store, now: int) -> None:
    assert await store.count() == 0
    assert await store.count_by_state() == dict.fromkeys(State, 0)
    ids = await store.insert([row("x", now), row("x", now), row("y", now), row("y", now)], now)
    await store.request_abort(ids[0], now)
    [c] = await store.claim("a", now, 1, now, LEASE)
    await store.start("a", [(c.id, c.claim_token or 0)], now)
    assert await store.count() == 4
    assert await store.count(task="x") == 2
    assert await store.count(state=State.PENDING) == 2
    assert await store.count(state=State.PENDING, task="y") == 2
    assert await store.count(state=State.ABORTED, task="y") == 0
    assert await store.count(state=State.RUNNING, task="x") == 1
    expected = dict.fromkeys(State, 0) | {State.PENDING: 2, State.ABORTED: 1, State.RUNNING: 1}
    assert await store.count_by_state() == expected
    await store.finish("a", [done(c)], now)
    by_state = await store.count_by_state()
    assert (by_state[State.RUNNING], by_state[State.SUCCEEDED]) == (0, 1)


async def test_next_pending_at(store: Store, now: int) -> None:
    assert await store.next_pending_at() is None
    await store.insert([row(at=now + 5 * S), row(at=now + 2 * S), row(at=now + 9 * S)], now)
    assert await store.next_pending_at() == now + 2 * S
    await store.claim("a", now + 5 * S, 10, now, LEASE)
    assert await store.next_pending_at() == now + 9 * S
    await store.claim("a", now + 9 * S, 10, now, LEASE)
    assert await store.next_pending_at() is None


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.get(424242) is None


async def test_change_token_ignores_our_own_commits(kind: str, store: Store, now: int) -> None:
    before = await store.change_token()
    if kind in ("memory", "dict"):  # nothing else can write to it: the Puller does not poll
        assert before is None
        return
    assert isinstance(before, int)
    await store.insert([row(at=now)], now)
    if kind != "postgres":
        assert await store.change_token() == before


async def test_has_every_protocol_method_with_its_signature(store: Store) -> None:
    # not isinstance(store, Store): a runtime_checkable protocol only looks for the names
    assert protocol_mismatches(store) == []


# -- own claims (wall-clock jumps, restarts) ------------------------------------------------


async def test_claim_never_takes_over_the_claimers_own_rows(store: Store, now: int) -> None:
    # After a wall-clock jump forward past the lease, a node's own claims look expired:
    # taking them again would run them twice (and fail a running at-most-once one).
    await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now, lease=1)
    assert await store.start("a", [(c2.id, c2.claim_token or 0)], now) == [True]
    assert await claim_all(store, "a", now, at=now + 10 * S) == []
    held = [await store.get(c1.id), await store.get(c2.id)]
    assert [(i.state, i.owner, i.claim_token) for i in held if i is not None] == [
        (State.CLAIMED, "a", c1.claim_token),
        (State.RUNNING, "a", c2.claim_token),
    ]
    assert await store.finish("a", [done(c1), done(c2)], now + 11 * S) == [True, True]


async def test_recover_gives_back_the_openers_own_claims(store: Store, now: int) -> None:
    # A node restarted under the same id finds its own claims of the previous run again.
    ids = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "node", now)
    assert await store.start("node", [(c2.id, c2.claim_token or 0)], now) == [True]
    assert await store.recover(now + S) == 2
    got = [await store.get(i) for i in ids]
    assert [(i.state, i.claim_token) for i in got if i is not None] == [
        (State.PENDING, None),
        (State.FAILED, None),
    ]
    assert await store.finish("node", [done(c1)], now + 2 * S) == [False]


# -- retention ------------------------------------------------------------------------------


async def test_prune_deletes_old_ended_instances_and_history(store: Store, now: int) -> None:
    ids = await store.insert([row(at=now) for _ in range(5)], now)
    c = await claim_all(store, "a", now, limit=4)
    ended = [
        done(c[0], started_us=now, finished_us=now),
        done(c[1], State.FAILED, error="boom", started_us=now, finished_us=now),
        done(c[2], State.ABORTED),  # never started: no history
        # a retry: PENDING again, one old history row
        done(c[3], State.PENDING, run_at_us=now + 3600 * S, started_us=now, finished_us=now),
    ]
    assert await store.finish("a", ended, now) == [True] * 4
    # not old enough: nothing goes
    assert await store.prune(now - S, 1000) == 0
    # 3 ended instances + 3 history rows (c0, c1, the retry's)
    assert await store.prune(now + S, 1000) == 6
    assert [await store.get(i) is None for i in ids] == [True, True, True, False, False]
    assert await store.history(ids[0]) == []
    assert await store.history(ids[3]) == []  # its old attempt went, the instance stays
    retried = await store.get(ids[3])
    assert retried is not None
    assert retried.state is State.PENDING
    assert await store.count() == 2
    by_state = await store.count_by_state()
    assert by_state[State.SUCCEEDED] == by_state[State.FAILED] == by_state[State.ABORTED] == 0
    assert by_state[State.PENDING] == 2
    assert [i.id for i in await store.list(limit=100)] == [ids[4], ids[3]]
    assert await store.prune(now + S, 1000) == 0


async def test_prune_takes_the_oldest_first_in_bounded_batches(store: Store, now: int) -> None:
    ids = await store.insert([row(at=now) for _ in range(5)], now)
    claimed = await claim_all(store, "a", now)
    for k, inst in enumerate(claimed):  # ended at now + k s
        assert await store.finish("a", [done(inst)], now + k * S) == [True]
    assert await store.prune(now + 10 * S, 2) == 2
    assert [await store.get(i) is None for i in ids] == [True, True, False, False, False]
    assert await store.prune(now + 10 * S, 2) == 2
    assert await store.prune(now + 10 * S, 2) == 1
    assert await store.prune(now + 10 * S, 2) == 0
    assert await store.count() == 0
    assert await store.list(state=State.SUCCEEDED) == []


async def test_prune_never_touches_live_instances(store: Store, now: int) -> None:
    ids = await store.insert([row(at=now - 100 * S) for _ in range(3)], now - 100 * S)
    [_, c2] = await claim_all(store, "a", now - 100 * S, limit=2)
    assert await store.start("a", [(c2.id, c2.claim_token or 0)], now - 100 * S) == [True]
    assert await store.prune(now + 3600 * S, 1000) == 0
    assert all([await store.get(i) is not None for i in ids])


async def test_a_pruned_dedup_key_can_be_used_again(store: Store, now: int) -> None:
    [first] = await store.insert([row(at=now, dedup_key="k")], now)
    [inst] = await claim_all(store, "a", now)
    assert await store.finish("a", [done(inst)], now) == [True]
    assert await store.prune(now + S, 10) == 1
    [second] = await store.insert([row(at=now, dedup_key="k")], now + 2 * S)
    assert second != first


async def test_a_durable_running_row_that_never_ran_goes_back_to_pending(
    store: Store, now: int
) -> None:
    # at-most-once: RUNNING was written, then the node stopped before the task started
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    assert await store.start("a", [(iid, inst.claim_token or 0)], now) == [True]
    back = done(inst, State.PENDING, attempts=0)
    assert await store.finish("a", [back], now + S) == [True]
    got = await store.get(iid)
    assert got is not None
    assert (got.state, got.attempts, got.owner, got.run_at_us) == (State.PENDING, 0, None, now)
    assert await store.history(iid) == []


# -- params size limit -----------------------------------------------------------------


async def test_params_over_the_store_limit_are_refused_whole(store: Store, now: int) -> None:
    """One row over ``max_params_bytes`` refuses the batch: nothing is stored, and the
    message names the limit. Exactly the limit is accepted."""
    assert store.max_params_bytes == DEFAULT_MAX_PARAMS_BYTES  # type: ignore[attr-defined]
    store.max_params_bytes = 1000  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match=r"1,001 bytes, over the limit of 1,000 bytes"):
        await store.insert([row(at=now), row(at=now, params=b"x" * 1001)], now)
    assert await store.count() == 0
    [iid] = await store.insert([row(at=now, params=b"x" * 1000)], now)
    got = await store.get(iid)
    assert got is not None
    assert len(got.params) == 1000
    big = new_schedule("t", Interval(timedelta(hours=1)), params=b"y" * 1001)
    with pytest.raises(InvalidArgument, match="schedule params are 1,001 bytes"):
        await store.add_schedule(big, now)
    assert await store.list_schedules() == []


async def test_a_listing_never_loads_big_params(store: Store, now: int) -> None:
    """``list`` gives params up to LIST_PARAMS_BYTES; larger ones are left out (``b""``,
    ``params_size`` set) and ``get`` has them whole."""
    edge, over = b"a" * LIST_PARAMS_BYTES, b"b" * (LIST_PARAMS_BYTES + 1)
    small_id, edge_id, over_id = await store.insert(
        [row(at=now, params=b"s"), row(at=now, params=edge), row(at=now, params=over)], now
    )
    listed = {i.id: i for i in await store.list()}
    assert (listed[small_id].params, listed[small_id].params_size) == (b"s", None)
    assert (listed[edge_id].params, listed[edge_id].params_size) == (edge, None)
    assert (listed[over_id].params, listed[over_id].params_size) == (b"", len(over))
    whole = await store.get(over_id)
    assert whole is not None
    assert (whole.params, whole.params_size) == (over, None)
    [pending] = await store.list(state=State.PENDING, limit=1)  # the other paths too
    assert pending.id == over_id
    assert pending.params_size == len(over)


# -- the nodes table ---------------------------------------------------------------------


async def test_a_node_records_its_tasks_and_limit(store: Store) -> None:
    """The node the store is open as is listed alive, with what it recorded."""
    assert protocol_mismatches(store, NodeRegistry) == []
    [before] = [n for n in await store.nodes() if n.node_id == NODE]
    assert before.alive
    assert before.tasks is None  # not recorded yet: nothing can be checked against it
    await store.record_node(NODE, tasks=["greet", "bash", "greet"], max_params_bytes=4096)
    [me] = [n for n in await store.nodes() if n.node_id == NODE]
    assert me.alive
    assert me.tasks == ("bash", "greet")
    assert me.max_params_bytes == 4096
    assert me.stopped_us is None
    assert me.pid == os.getpid()
